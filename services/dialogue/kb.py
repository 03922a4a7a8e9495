"""Per-tenant knowledge bases: ingestion into SQL, and indexes that follow ingestion without a restart."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dialogue import storage
from services.dialogue.ingest import UnsupportedDocument, collect_files, parse_document
from services.dialogue.knowledge import KnowledgeBase, Passage
from supportbot.contracts.nlp import EmbedRequest, EmbedResponse
from supportbot.db import transaction
from supportbot.errors import SupportbotError
from supportbot.http import ServiceClient

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) of each file that could not be read or parsed; the others are ingested."""
    chunks: int = 0


async def ingest(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, paths: list[Path]) -> IngestReport:
    """Parse and store every supported file under `paths` for the tenant (re-ingesting replaces a document).

    A file that cannot be read or parsed is reported in `failed` and the rest are ingested; a path that does
    not exist raises FileNotFoundError before anything is stored.
    """
    report = IngestReport()
    documents = []
    for file, display in collect_files(paths):
        try:
            document = parse_document(file, display)
            if not document.passages:
                raise UnsupportedDocument(f"{display}: no text to ingest")
            documents.append(document)
        except UnsupportedDocument as exc:
            report.failed.append((display, str(exc).removeprefix(f"{display}: ")))
        except OSError as exc:
            report.failed.append((display, exc.strerror or type(exc).__name__))
    async with transaction(sessions) as session:
        for document in documents:
            changed = await storage.replace_document(
                session, tenant_id=tenant_id, path=document.path, title=document.title, sha256=document.sha256,
                chunks=[(p.title, p.text) for p in document.passages])
            (report.added if changed else report.unchanged).append(document.path)
            report.chunks += len(document.passages) if changed else 0
    return report


class Embedder:
    """Sentence embeddings from the nlp service (`POST /v1/embed`); None when it cannot give them."""

    batch = 128

    def __init__(self, nlp: ServiceClient) -> None:
        self.nlp = nlp

    async def __call__(self, texts: list[str]) -> np.ndarray | None:
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(texts), self.batch):
                response = await self.nlp.post("/v1/embed", EmbedRequest(texts=texts[start:start + self.batch]),
                                               EmbedResponse)
                vectors.extend(response.vectors)
        except SupportbotError as exc:
            log.warning("embeddings unavailable, knowledge search is lexical only: %s", exc.message)
            return None
        return np.asarray(vectors, dtype=np.float32)


class KnowledgeLibrary:
    """The index for a tenant: its ingested documents, or the shipped default while it has none.

    Every lookup asks the database for the tenant's knowledge version (one indexed aggregate), so an
    ingestion is picked up by every running replica on the next turn. Passages are embedded (through the
    nlp service) once per index version; if that fails the index stays lexical and embedding is retried.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], default: KnowledgeBase,
                 embedder: Embedder | None = None) -> None:
        self.sessions = sessions
        self.default = default
        self.embedder = embedder
        self._indexes: dict[str, tuple[tuple[int, str | None], KnowledgeBase]] = {}

    async def for_tenant(self, tenant_id: str) -> KnowledgeBase:
        async with self.sessions() as session:
            version = await storage.knowledge_version(session, tenant_id=tenant_id)
            if version[0] == 0:
                return await self._embedded(self.default)
            cached = self._indexes.get(tenant_id)
            if cached is not None and cached[0] == version:
                return await self._embedded(cached[1])
            chunks = await storage.knowledge_chunks(session, tenant_id=tenant_id)
        index = KnowledgeBase([Passage(title, path, text) for title, path, text in chunks])
        self._indexes[tenant_id] = (version, await self._embedded(index))
        log.info("knowledge base loaded", extra={"supportbot.tenant_id": tenant_id,
                                                 "supportbot.passages": len(index.passages)})
        return index

    async def _embedded(self, index: KnowledgeBase) -> KnowledgeBase:
        if index.vectors is None and self.embedder is not None and index.passages:
            index.vectors = await self.embedder(index.embed_texts())
        return index
