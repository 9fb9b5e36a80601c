"""Platform types: the catalogue's data model, its loader and its templates (pure: no store,
no backend). Use cases live in ``ecliptic.services.platforms``, the reconciler in
``ecliptic.reconcile.platforms``."""
