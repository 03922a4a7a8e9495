"""Encryption at rest for the originals of redacted messages (tenants that opt in to keeping them).

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) through MultiFernet, so keys rotate: the setting
`TRANSCRIPT_KEYS` lists Fernet keys, comma-separated; the first encrypts, every one decrypts. To rotate, put a
new key first and keep the old ones after it until `TranscriptCipher.rotate` has re-encrypted what they wrote
(or those messages are gone).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

NEW_KEY_HINT = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class Undecryptable(Exception):
    """A ciphertext that none of the configured keys opens (its key was dropped, or the text is not ours)."""


def parse_keys(value: str) -> list[str]:
    """The Fernet keys of a comma-separated setting; ValueError naming the bad one's position (never its text)."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ValueError(f"TRANSCRIPT_KEYS holds no key: make one with {NEW_KEY_HINT}")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(f"TRANSCRIPT_KEYS: key {position} of {len(keys)} is not a Fernet key (32 bytes, "
                             f"url-safe base64): make one with {NEW_KEY_HINT}") from None
    return keys


class TranscriptCipher:
    """Encrypts with the first key, decrypts with any."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a TranscriptCipher needs at least one key")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_setting(cls, value: str | None) -> TranscriptCipher | None:
        """The cipher for a `TRANSCRIPT_KEYS` value; None when it is unset."""
        return cls(parse_keys(value)) if value else None

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise Undecryptable("no configured transcript key opens this text") from exc

    def rotate(self, token: str) -> str:
        """The same text encrypted with the first key (a no-op in effect when it already was)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise Undecryptable("no configured transcript key opens this text") from exc
