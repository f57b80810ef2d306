"""Adapters to the ledger database: schema and migrations, history cache, backfills, ledger."""
