"""Baseline: the schema the hand-rolled ``schema_version`` steps 1 and 30 built.

Tables as of main 9984a76, the ledger's append-only triggers (old step 1) and the backfills'
insert-only triggers (old step 30). A database made by those steps is stamped with this revision
instead of running it (``backfill.store.database``). Frozen: later changes are new revisions.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = "ledger is append-only"
INSERT_ONLY = "backfills are insert-only"

# By the old step that made them: 1 (ledger append-only), 30 (backfills insert-only).
TRIGGERS: dict[int, dict[str, list[str]]] = {
    1: {
        "sqlite": [
            f"CREATE TRIGGER IF NOT EXISTS ledger_events_no_{op_.lower()} BEFORE {op_} ON ledger_events "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            for op_ in ("UPDATE", "DELETE")
        ],
        "postgresql": [
            "CREATE OR REPLACE FUNCTION ledger_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}' USING ERRCODE = 'insufficient_privilege'; END $$",
            "CREATE TRIGGER ledger_events_no_update_delete BEFORE UPDATE OR DELETE ON ledger_events "
            "FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only()",
            "CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON ledger_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only()",
        ],
        # Azure SQL: untested here (no server in CI); INSTEAD OF swallows the statement, THROW aborts.
        "mssql": [
            "CREATE TRIGGER ledger_events_append_only ON ledger_events INSTEAD OF UPDATE, DELETE AS "
            f"BEGIN THROW 51000, '{APPEND_ONLY}', 1; END",
        ],
    },
    30: {
        "sqlite": [
            f"CREATE TRIGGER IF NOT EXISTS backfills_no_{op_.lower()} BEFORE {op_} ON backfills "
            f"BEGIN SELECT RAISE(ABORT, '{INSERT_ONLY}'); END"
            for op_ in ("UPDATE", "DELETE")
        ],
        "postgresql": [
            "CREATE OR REPLACE FUNCTION backfills_insert_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{INSERT_ONLY}' USING ERRCODE = 'insufficient_privilege'; END $$",
            "CREATE TRIGGER backfills_no_update_delete BEFORE UPDATE OR DELETE ON backfills "
            "FOR EACH ROW EXECUTE FUNCTION backfills_insert_only()",
        ],
        "mssql": [
            "CREATE TRIGGER backfills_insert_only ON backfills INSTEAD OF UPDATE, DELETE AS "
            f"BEGIN THROW 51001, '{INSERT_ONLY}', 1; END",
        ],
    },
}


def create_triggers(conn: sa.Connection, steps: tuple[int, ...] = (1, 30)) -> None:
    # exec_driver_sql: trigger bodies must reach the server verbatim, no bind-parameter parsing.
    for step in steps:
        for statement in TRIGGERS[step][conn.dialect.name]:
            conn.exec_driver_sql(statement)


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(length=64), autoincrement=False, nullable=False),
        sa.Column("plan_path", sa.Text(), nullable=False),
        sa.Column("plan_hash", sa.String(length=64), nullable=False),
        sa.Column("pipeline", sa.String(length=260), nullable=False),
        sa.Column("factory_key", sa.String(length=400), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(length=200), nullable=False),
        sa.Column("requester", sa.String(length=320), nullable=False),
        sa.Column("requester_source", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("approval", sa.Text(), nullable=False),
        sa.Column("decisions", sa.Text(), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_backfills_requested_at"), "backfills", ["requested_at"], unique=False)
    op.create_table(
        "history_key_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("factory_key", sa.String(length=255), nullable=False),
        sa.Column("pipeline", sa.String(length=260), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("factory_key", "pipeline", "signature", name="uq_history_key_sets"),
    )
    op.create_table(
        "history_keys",
        sa.Column("set_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("set_id", "run_id"),
    )
    op.create_index("ix_history_keys_hash", "history_keys", ["set_id", "key_hash"], unique=False)
    op.create_table(
        "history_runs",
        sa.Column("factory_key", sa.String(length=255), nullable=False),
        sa.Column("pipeline", sa.String(length=260), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("run_start_us", sa.BigInteger(), nullable=True),
        sa.Column("last_updated_us", sa.BigInteger(), nullable=True),
        sa.Column("run_group_id", sa.String(length=64), nullable=True),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("factory_key", "pipeline", "run_id"),
    )
    op.create_index("ix_history_runs_start", "history_runs", ["factory_key", "pipeline", "run_start_us"], unique=False)
    op.create_table(
        "history_sync",
        sa.Column("factory_key", sa.String(length=255), nullable=False),
        sa.Column("pipeline", sa.String(length=260), nullable=False),
        sa.Column("watermark_us", sa.BigInteger(), nullable=True),
        sa.Column("horizon_us", sa.BigInteger(), nullable=False),
        sa.Column("synced_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("factory_key", "pipeline"),
    )
    op.create_table(
        "ledger_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("identity_source", sa.String(length=16), nullable=False),
        sa.Column("backfill_id", sa.String(length=128), nullable=True),
        sa.Column("window_key", sa.String(length=128), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(op.f("ix_ledger_events_at"), "ledger_events", ["at"], unique=False)
    op.create_index(op.f("ix_ledger_events_backfill_id"), "ledger_events", ["backfill_id"], unique=False)
    op.create_index(op.f("ix_ledger_events_kind"), "ledger_events", ["kind"], unique=False)
    op.create_table(
        "window_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("backfill_id", sa.String(length=64), nullable=False),
        sa.Column("window_key", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("backfill_id", "window_key", "attempt", name="uq_window_claims_attempt"),
    )
    op.create_index(op.f("ix_window_claims_backfill_id"), "window_claims", ["backfill_id"], unique=False)
    create_triggers(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("backfill migrations go forward only")
