"""The placement and reservation engine: pure Python over plain data, no store, no backend."""
