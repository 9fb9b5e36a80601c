"""Use cases: load from the store, call the pure parts, persist, enqueue work."""
