"""Persistence: SQLAlchemy tables, repositories, Alembic migrations, config-file sync, snapshots.

This package never imports protocol, provider or relay code.
"""
