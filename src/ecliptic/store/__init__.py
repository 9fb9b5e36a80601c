"""The store: SQLAlchemy models, migrations, the work queue. The single source of truth."""
