"""Migration 0005 redacts transcripts written before redaction existed, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from supportbot.db import alembic_config, make_sync_engine, upgrade_database


def test_messages_stored_in_clear_are_redacted_by_the_upgrade(database_url: str) -> None:
    engine = make_sync_engine(database_url)
    try:
        with engine.begin() as conn:
            config = alembic_config(database_url)
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")
        typed = "hi, card 4111 1111 1111 1111 was charged twice, mail me at sam.lee@example.net"
        said = "We'll write to sam.lee@example.net today."
        replay = {"conversation_id": "c1", "message_id": 2, "reply": {"text": said, "language": "en"},
                  "intent": None, "handoff": False}
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 't1', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO conversations (id, tenant_id, channel, handoff, created_at) "
                              "VALUES ('c1', 't1', 'api', false, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO messages (conversation_id, role, text, created_at) "
                              "VALUES ('c1', 'customer', :t, CURRENT_TIMESTAMP)"), {"t": typed})
            conn.execute(text("INSERT INTO messages (conversation_id, role, text, response_json, created_at) "
                              "VALUES ('c1', 'bot', :t, :j, CURRENT_TIMESTAMP)"), {"t": said, "j": json.dumps(replay)})
            conn.execute(text("INSERT INTO messages (conversation_id, role, text, created_at) "
                              "VALUES ('c1', 'customer', 'thanks!', CURRENT_TIMESTAMP)"))
        upgrade_database(database_url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT text, response_json FROM messages ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [row[0] for row in rows] == ["hi, card [CARD] was charged twice, mail me at [EMAIL]",
                                        "We'll write to [EMAIL] today.", "thanks!"]
    stored = json.loads(rows[1][1])
    assert stored["reply"] == {"text": "We'll write to [EMAIL] today.", "language": "en"}
    assert stored["message_id"] == 2 and rows[0][1] is None
