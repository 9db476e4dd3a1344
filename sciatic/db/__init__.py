"""The database: typed ORM, sessions, migrations, shared read queries, the model registry and the audit trail."""

__all__ = ["audit", "cards", "enums", "migrate", "models", "pseudonym", "queries", "registry", "session", "types"]
