"""Dialogue: idempotent deliveries, stored replies, per-tenant knowledge base.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("client_message_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("response_json", sa.Text, nullable=True))
        batch.create_unique_constraint("uq_messages_client_message", ["conversation_id", "role", "client_message_id"])
    op.create_table(
        "kb_documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("ingested_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "path", name="uq_kb_documents_tenant_path"),
    )
    op.create_table(
        "kb_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.Integer, sa.ForeignKey("kb_documents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_kb_chunks_tenant", "kb_chunks", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("kb_chunks")
    op.drop_table("kb_documents")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_client_message", type_="unique")
        batch.drop_column("response_json")
        batch.drop_column("client_message_id")
