"""Alembic migrations of the sciatic database, shipped in the wheel as ``sciatic.migrations``."""
