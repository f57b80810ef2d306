"""Alembic migrations of the ledger database (``backfill/migrations/versions``).

``HEAD`` names the newest revision: ``Database`` compares it with ``alembic_version`` so that
opening an up-to-date ledger costs one query and never imports Alembic. A test checks that it
matches the script directory's head. Revision 0001 is the schema that the hand-rolled
``schema_version`` steps 1 and 30 produced; a database made by them is stamped with it.
"""

HEAD = "0003_history_secrets"
BASELINE = "0001_baseline"
REVISIONS = (BASELINE, "0002_ledger_meta", HEAD)
SCRIPT_LOCATION = "backfill:migrations"
