"""Per-tenant monthly budgets (llm).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_budgets",
        sa.Column("tenant_id", sa.String(63), primary_key=True),
        sa.Column("monthly_tokens", sa.BigInteger, nullable=True),
        sa.Column("monthly_usd", sa.Numeric(14, 4), nullable=True),
        sa.Column("soft_pct", sa.Integer, nullable=False, server_default="80"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tenant_budgets")
