"""Encrypted originals: Fernet keys from TRANSCRIPT_KEYS, the first encrypts, every one decrypts (rotation)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from supportbot.crypto import TranscriptCipher, Undecryptable, parse_keys
from supportbot.settings import DialogueSettings


def test_rotation_keeps_old_texts_readable_until_they_are_re_encrypted() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    text = "my IBAN is DE89 3704 0044 0532 0130 00"
    written_before = TranscriptCipher([old]).encrypt(text)
    assert "DE89" not in written_before
    rotated = TranscriptCipher([new, old])
    assert rotated.decrypt(written_before) == text
    written_after = rotated.encrypt(text)
    with pytest.raises(Undecryptable):
        TranscriptCipher([old]).decrypt(written_after)  # the first key encrypts
    assert TranscriptCipher([new]).decrypt(rotated.rotate(written_before)) == text
    with pytest.raises(Undecryptable):
        TranscriptCipher([new]).decrypt(written_before)
    with pytest.raises(Undecryptable):
        rotated.decrypt("not a token")


def test_the_setting_takes_fernet_keys_only_and_never_echoes_them() -> None:
    key = Fernet.generate_key().decode()
    assert parse_keys(f" {key} , {key}") == [key, key]
    assert DialogueSettings(TRANSCRIPT_KEYS=key).transcript_keys is not None
    for bad in ("CHANGE-ME-to-a-real-key", f"{key},short"):
        with pytest.raises(ValidationError) as refused:
            DialogueSettings(TRANSCRIPT_KEYS=bad)
        message = str(refused.value)
        assert "not a Fernet key" in message and "Fernet.generate_key()" in message
        assert "CHANGE-ME" not in message and key not in message
    assert DialogueSettings().transcript_keys is None
    assert TranscriptCipher.from_setting(None) is None
