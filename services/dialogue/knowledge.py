"""Knowledge base retrieval: Markdown split into sections, ranked with BM25 over nltk tokens.

Latin-script words are Porter-stemmed (nltk, no downloaded data). Japanese has no spaces: runs of kanji or
katakana (content words; hiragana mostly carries grammar) are indexed as character bigrams.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from nltk.stem import PorterStemmer
from nltk.tokenize import wordpunct_tokenize
from rank_bm25 import BM25Okapi

from supportbot.contracts.common import Source

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]+")
_CONTENT_CJK = re.compile(r"[\u30a0-\u30ff\u3400-\u9fff\uff66-\uff9f]+")  # katakana and kanji runs
_STEMMER = PorterStemmer()
# A small English stop list (nltk's own list is downloadable data, which we cannot fetch offline).
STOPWORDS = frozenset("""a an and are as at be but by can could did do does for from had has have how i if in
into is it its me my no not of on or our please so that the their them then there these they this to was we were
what when where which who why will with would you your yours hi hello thanks thank tell know want need like get
give help make let just also any some""".split())
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def tokenize(text: str) -> list[str]:
    """Stemmed lower-case words without stop words, plus bigrams of kanji/katakana runs."""
    tokens: list[str] = []
    for run in _CONTENT_CJK.findall(text):
        tokens.extend(run[i:i + 2] for i in range(max(1, len(run) - 1)))
    latin = _CJK.sub(" ", text.lower())
    tokens.extend(_STEMMER.stem(t) for t in wordpunct_tokenize(latin) if t.isalnum() and t not in STOPWORDS)
    return tokens


@dataclass(frozen=True)
class Passage:
    title: str
    path: str
    text: str


def split_markdown(text: str, path: str) -> list[Passage]:
    """One passage per `##` section, titled "Document title — Section"."""
    doc_title = path
    passages: list[Passage] = []
    section: str | None = None
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            passages.append(Passage(f"{doc_title} — {section}" if section else doc_title, path, body))

    for line in _HTML_COMMENT.sub("", text).splitlines():
        if line.startswith("# ") and doc_title == path:
            doc_title = line[2:].strip()
        elif line.startswith("## "):
            flush()
            section, lines = line[3:].strip(), []
        else:
            lines.append(line)
    flush()
    return passages


class KnowledgeBase:
    """An in-memory BM25 index over passages.

    A passage counts as relevant only if it also covers enough of the query's information: the IDF-weighted
    share of query terms it contains (a term the corpus never uses weighs more than the rarest one it does),
    so one shared word does not make an unrelated passage an "answer".
    """

    def __init__(self, passages: list[Passage], *, min_score: float = 1.0, min_coverage: float = 0.5,
                 min_similarity: float = 0.5) -> None:
        self.passages = passages
        self.min_score = min_score
        self.min_coverage = min_coverage
        self.min_similarity = min_similarity
        self.vectors: np.ndarray | None = None
        """Sentence embeddings of the passages (L2-normalised rows), once `embed_texts` has been used."""
        self._tokens = [set(tokenize(p.title + " " + p.text)) for p in passages]
        self._index = BM25Okapi([tokenize(p.title + " " + p.text) for p in passages]) if passages else None

    def _coverage(self, query: list[str], passage: int) -> float:
        assert self._index is not None
        unknown = 1.5 * max(self._index.idf.values(), default=1.0)
        weights = {t: max(self._index.idf.get(t, unknown), 0.05) for t in set(query)}
        covered = sum(w for t, w in weights.items() if t in self._tokens[passage])
        return covered / sum(weights.values())

    @classmethod
    def from_directory(cls, directory: Path) -> KnowledgeBase:
        passages: list[Passage] = []
        for path in sorted(directory.rglob("*.md")):
            passages.extend(split_markdown(path.read_text(encoding="utf-8"), path.relative_to(directory).as_posix()))
        return cls(passages)

    def embed_texts(self) -> list[str]:
        """What to embed for semantic search, one text per passage."""
        return [f"{p.title}. {p.text}"[:1000] for p in self.passages]

    def search(self, query: str, k: int = 3, query_vector: np.ndarray | None = None) -> list[Source]:
        """The best `k` relevant passages; empty when nothing is relevant.

        Relevant: lexically (BM25 score and query coverage) or, when embeddings are present, semantically
        (cosine similarity of sentence embeddings, which catches paraphrases). Ranked by similarity plus
        the normalised BM25 score.
        """
        if self._index is None:
            return []
        tokens = tokenize(query)
        scores = self._index.get_scores(tokens) if tokens else np.zeros(len(self.passages))
        lexical = [scores[i] >= self.min_score and self._coverage(tokens, i) >= self.min_coverage
                   for i in range(len(self.passages))]
        similarity = (self.vectors @ query_vector if self.vectors is not None and query_vector is not None
                      else None)
        top = float(max(scores.max(), 1e-9))
        combined = scores / top + (similarity if similarity is not None else 0.0)
        relevant = [i for i in range(len(self.passages))
                    if lexical[i] or (similarity is not None and similarity[i] >= self.min_similarity)]
        ranked = sorted(relevant, key=lambda i: combined[i], reverse=True)[:k]
        return [Source(title=self.passages[i].title, path=self.passages[i].path,
                       snippet=self.passages[i].text[:800], score=round(float(combined[i]), 3)) for i in ranked]


class KnowledgeRetriever(BaseRetriever):
    """The knowledge base as a langchain retriever: documents carry title, path and BM25 score."""

    knowledge: KnowledgeBase
    k: int = 3
    query_vector: np.ndarray | None = None

    model_config = {"arbitrary_types_allowed": True}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=s.snippet, metadata={"title": s.title, "path": s.path, "score": s.score})
                for s in self.knowledge.search(query, k=self.k, query_vector=self.query_vector)]


def as_sources(documents: list[Document]) -> list[Source]:
    return [Source(title=d.metadata["title"], path=d.metadata["path"], snippet=d.page_content,
                   score=d.metadata.get("score", 0.0)) for d in documents]
