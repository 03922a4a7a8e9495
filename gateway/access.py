"""Who may do what: the roles of API keys, and the one table of what each role is allowed.

- `admin`: everything for its tenant: conversations (list, read, erase, originals), usage, and what `api` may do.
- `api`: server-side calls: create conversations, post turns, read transcripts; the OpenAI-compatible API.
- `agent`: the people answering handed-off conversations: list and read them (the inbox comes with channels).
- `widget`: public by design (it sits in a web page): create conversations and use only the ones it created,
  each with the conversation token returned at creation, and only from the key's origins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    WIDGET = "widget"
    API = "api"


class Permission(StrEnum):
    CREATE_CONVERSATION = "conversations:create"
    POST_TURN = "conversations:turn"
    READ_TRANSCRIPT = "conversations:read"
    LIST_CONVERSATIONS = "conversations:list"
    ERASE_CONVERSATION = "conversations:erase"
    READ_ORIGINALS = "conversations:originals"
    READ_USAGE = "usage:read"
    OPENAI_API = "openai:chat"


_API = frozenset({Permission.CREATE_CONVERSATION, Permission.POST_TURN, Permission.READ_TRANSCRIPT,
                  Permission.OPENAI_API})
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.API: _API,
    Role.AGENT: frozenset({Permission.LIST_CONVERSATIONS, Permission.READ_TRANSCRIPT}),
    # Only its own conversations, each with its token: enforced where the conversation is looked up.
    Role.WIDGET: frozenset({Permission.CREATE_CONVERSATION, Permission.POST_TURN, Permission.READ_TRANSCRIPT}),
}


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid API key."""

    key_id: str
    tenant_id: str
    role: Role
    origins: tuple[str, ...] = ()
    """Where a widget key may be used from (exact `scheme://host[:port]`); empty for other roles."""

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]
