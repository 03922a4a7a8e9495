"""Transcripts stored before redaction get it: messages' text and the replies kept for replays.

Messages written before 0005 hold what the customer typed, card numbers included. They are redacted in place
(`supportbot.pii.redact`, as new messages are); nobody could opt in to encrypted originals before 0004, so
there is nothing to keep. One pass in batches by id; a row already redacted is left as it is. Not undone by a
downgrade: what was removed is gone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import json

import sqlalchemy as sa
from alembic import op

from supportbot.pii import redact

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 500


def _redacted_reply(response_json: str | None) -> str | None:
    if not response_json:
        return response_json
    try:
        stored = json.loads(response_json)
    except ValueError:
        return None  # unreadable: a replay could not use it anyway
    reply = stored.get("reply") if isinstance(stored, dict) else None
    if isinstance(reply, dict) and isinstance(reply.get("text"), str):
        text = redact(reply["text"])[0]
        if text == reply["text"]:
            return response_json
        reply["text"] = text
        return json.dumps(stored, ensure_ascii=False)
    return response_json


def upgrade() -> None:
    messages = sa.table("messages", sa.column("id", sa.Integer), sa.column("text", sa.Text),
                        sa.column("response_json", sa.Text))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(sa.select(messages.c.id, messages.c.text, messages.c.response_json)
                                  .where(messages.c.id > last).order_by(messages.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row_id, text, response_json in rows:
            new_text = redact(text)[0]
            new_json = _redacted_reply(response_json)
            if new_text != text or new_json != response_json:
                connection.execute(messages.update().where(messages.c.id == row_id)
                                   .values(text=new_text, response_json=new_json))
        last = rows[-1][0]


def downgrade() -> None:
    """Nothing to undo: the clear text is not kept anywhere."""
