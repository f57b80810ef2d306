"""history_secrets: the parameters of a pipeline that a plan marked secret, so that every cached
run of that pipeline is stored and shown masked (issue 9). A cache table, like history_runs.

Revision ID: 0003_history_secrets
Revises: 0002_ledger_meta
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_history_secrets"
down_revision = "0002_ledger_meta"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history_secrets",
        sa.Column("factory_key", sa.String(length=255), nullable=False),
        sa.Column("pipeline", sa.String(length=260), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("factory_key", "pipeline", "name"),
    )


def downgrade() -> None:
    raise NotImplementedError("backfill migrations go forward only")
