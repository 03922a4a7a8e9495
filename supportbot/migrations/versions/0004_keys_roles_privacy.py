"""Keys with roles and origins, widget conversation tokens, personal data kept out of transcripts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32), nullable=True))
        # Keys made before roles existed keep what they could do: the server-side API.
        batch.add_column(sa.Column("role", sa.String(16), nullable=False, server_default="api"))
        batch.add_column(sa.Column("origins", sa.Text, nullable=True))
        batch.add_column(sa.Column("last_used_at", TS, nullable=True))
    keys = sa.table("api_keys", sa.column("id", sa.Integer), sa.column("key_id", sa.String))
    connection = op.get_bind()
    for (row_id,) in connection.execute(sa.select(keys.c.id)).all():
        connection.execute(keys.update().where(keys.c.id == row_id).values(key_id="key_" + secrets.token_hex(8)))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("key_id", existing_type=sa.String(32), nullable=False)
        batch.create_unique_constraint("uq_api_keys_key_id", ["key_id"])

    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("keep_originals", sa.Boolean, nullable=False, server_default=sa.false()))

    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("created_by_key", sa.String(32), nullable=True))
    op.create_index("ix_conversations_tenant_created", "conversations", ["tenant_id", "created_at"])

    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("original_encrypted", sa.Text, nullable=True))
        batch.add_column(sa.Column("caller_gone", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("caller_gone")
        batch.drop_column("original_encrypted")
    op.drop_index("ix_conversations_tenant_created", "conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("created_by_key")
        batch.drop_column("token_hash")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("keep_originals")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("uq_api_keys_key_id", type_="unique")
        batch.drop_column("last_used_at")
        batch.drop_column("origins")
        batch.drop_column("role")
        batch.drop_column("key_id")
