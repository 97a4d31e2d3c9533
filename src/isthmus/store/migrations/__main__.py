"""``python -m isthmus.store.migrations``: bring the database named by ``ISTHMUS_MIGRATE_URL`` up to date.

``isthmus serve`` runs this in a short-lived child process when the schema is behind, so the server
itself never imports Alembic (it would stay resident in every worker). The URL travels in the
environment, not the command line, where any local user could read its password.
"""

from __future__ import annotations

import asyncio
import os

from isthmus.store.migrations import upgrade_database

if __name__ == "__main__":
    asyncio.run(upgrade_database(os.environ["ISTHMUS_MIGRATE_URL"]))
