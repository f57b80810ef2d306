"""ledger_meta: the ledger's origin (a random identity named in signed checkpoints) and, once
``backfill ledger init`` ran, its mode. Insert-only, like the ledger.

Revision ID: 0002_ledger_meta
Revises: 0001_baseline
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002_ledger_meta"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

INSERT_ONLY = "ledger_meta is insert-only"
TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS ledger_meta_no_{op_.lower()} BEFORE {op_} ON ledger_meta "
        f"BEGIN SELECT RAISE(ABORT, '{INSERT_ONLY}'); END"
        for op_ in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION ledger_meta_insert_only() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{INSERT_ONLY}' USING ERRCODE = 'insufficient_privilege'; END $$",
        "CREATE TRIGGER ledger_meta_no_update_delete BEFORE UPDATE OR DELETE ON ledger_meta "
        "FOR EACH ROW EXECUTE FUNCTION ledger_meta_insert_only()",
    ],
    "mssql": [
        "CREATE TRIGGER ledger_meta_insert_only ON ledger_meta INSTEAD OF UPDATE, DELETE AS "
        f"BEGIN THROW 51002, '{INSERT_ONLY}', 1; END",
    ],
}


def upgrade() -> None:
    table = op.create_table(
        "ledger_meta",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.bulk_insert(table, [{"name": "origin", "value": f"backfill-ledger-{uuid.uuid4()}"}])
    conn = op.get_bind()
    for statement in TRIGGERS[conn.dialect.name]:
        conn.exec_driver_sql(statement)


def downgrade() -> None:
    raise NotImplementedError("backfill migrations go forward only")
