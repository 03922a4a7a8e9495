"""`supportbot kb ingest` and answers from the ingested documents, picked up without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.dialogue.ingest import UnsupportedDocument, parse_document
from tests.helpers import REPO, create_tenants
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pets.md").write_text("# Pet policy\n\n## Dogs in store\n\nWell-behaved dogs on a leash are "
                                    "welcome in all Zephyr Outfitters stores.\n")
    (folder / "gift.html").write_text("<html><body><nav>Menu</nav><h1>Gift cards</h1><h2>Expiry</h2>"
                                      "<p>Zephyr gift cards never expire and can be topped up online.</p>"
                                      "<script>track()</script></body></html>")
    (folder / "faq.csv").write_text("question,answer\nDo you offer engraving?,"
                                    "Yes, engraving costs 7 euros per item and adds two days.\n")
    (folder / "notes.txt").write_text("Our warehouse in Lyon ships every weekday at 4 pm.")
    return folder


def test_parsers_keep_the_text_and_drop_the_noise(tmp_path: Path) -> None:
    folder = write_docs(tmp_path / "docs")
    html = parse_document(folder / "gift.html", "gift.html")
    assert html.title == "Gift cards"
    assert [p.title for p in html.passages] == ["Gift cards — Expiry"]
    assert "Menu" not in html.passages[0].text and "track()" not in html.passages[0].text
    csv_doc = parse_document(folder / "faq.csv", "faq.csv")
    assert csv_doc.passages[0].title == "Do you offer engraving?"
    with pytest.raises(UnsupportedDocument):
        (tmp_path / "x.pdf").write_bytes(b"%PDF")
        parse_document(tmp_path / "x.pdf", "x.pdf")


async def test_ingested_documents_answer_without_restart(sqlite_url: str, data_dir: Path,
                                                         model_cache_dir: Path, tmp_path: Path) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = (await stack.client.post("/v1/conversations", headers=stack.auth)).json()["id"]

        async def ask(text: str) -> dict[str, object]:
            return (await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                            json={"text": text})).json()

        before = await ask("Do you offer engraving?")
        env = {**os.environ, "DATABASE_URL": sqlite_url, "SUPPORTBOT_DATA_DIR": str(data_dir)}
        result = subprocess.run([sys.executable, "-m", "supportbot.cli", "kb", "ingest", "--tenant", "demo",
                                 str(write_docs(tmp_path / "docs"))], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "4 documents ingested" in result.stdout
        after = await ask("Do your gift cards expire?")
        engraving = await ask("Do you offer engraving?")
        again = subprocess.run([sys.executable, "-m", "supportbot.cli", "kb", "ingest", "--tenant", "demo",
                                str(tmp_path / "docs")], env=env, cwd=REPO, capture_output=True, text=True,
                               timeout=120)
    assert before["sources"] == []  # the shipped demo knowledge base says nothing about engraving
    assert after["sources"][0]["path"] == "gift.html"  # type: ignore[index]
    assert "never expire" in after["reply"]["text"]  # type: ignore[index]
    assert engraving["sources"][0]["path"] == "faq.csv"  # type: ignore[index]
    assert "0 documents ingested" in again.stdout and "4 unchanged" in again.stdout


def test_ingest_reports_bad_input(tmp_path: Path) -> None:
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    asyncio.run(create_tenants(database_url, "demo"))
    env = {**os.environ, "DATABASE_URL": database_url}
    missing = subprocess.run([sys.executable, "-m", "supportbot.cli", "kb", "ingest", "--tenant", "demo",
                              str(tmp_path / "nope")], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nope" in missing.stderr
    pdf = subprocess.run([sys.executable, "-m", "supportbot.cli", "kb", "ingest", "--tenant", "demo",
                          str(tmp_path / "x.pdf")], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert pdf.returncode == 2 and "unsupported" in pdf.stderr


async def test_paraphrases_are_found_by_embeddings(sqlite_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    """Questions that share no useful word with their help-center passage are still answered from it."""
    from services.dialogue.knowledge import KnowledgeBase, tokenize
    from supportbot.resources import DEFAULT_KNOWLEDGE_DIR

    lexical_only = KnowledgeBase.from_directory(DEFAULT_KNOWLEDGE_DIR)
    question = "My discount code does not work"
    assert not any(s.path == "payments-and-invoices.md" for s in lexical_only.search(question)), tokenize(question)
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = await stack.new_conversation()
        found = await stack.say(conversation_id, question)
        unknown = await stack.say(conversation_id, "What is the capital of Mongolia?")
    assert found["sources"][0]["path"] == "payments-and-invoices.md"
    assert unknown["sources"] == []
