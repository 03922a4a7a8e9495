"""Turning documents into knowledge-base chunks: Markdown, HTML, plain text and Q&A CSV."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from services.dialogue.knowledge import Passage, split_markdown

SUPPORTED = {".md", ".markdown", ".html", ".htm", ".txt", ".csv"}
MAX_CHUNK_CHARS = 1200


@dataclass(frozen=True)
class Document:
    path: str
    title: str
    sha256: str
    passages: list[Passage]


class UnsupportedDocument(ValueError):
    pass


def _split_long(passages: list[Passage]) -> list[Passage]:
    """Sections longer than MAX_CHUNK_CHARS are cut at paragraph boundaries."""
    out: list[Passage] = []
    for passage in passages:
        if len(passage.text) <= MAX_CHUNK_CHARS:
            out.append(passage)
            continue
        current = ""
        for paragraph in passage.text.split("\n\n"):
            if current and len(current) + len(paragraph) > MAX_CHUNK_CHARS:
                out.append(Passage(passage.title, passage.path, current.strip()))
                current = ""
            current += paragraph + "\n\n"
        if current.strip():
            out.append(Passage(passage.title, passage.path, current.strip()))
    return out


class _HtmlSections(HTMLParser):
    """Collects text under headings; scripts, styles and navigation are skipped."""

    _SKIP = {"script", "style", "nav", "footer", "head"}

    def __init__(self) -> None:
        super().__init__()
        self.title: str | None = None
        self.sections: list[tuple[str | None, list[str]]] = [(None, [])]
        self._heading: str | None = None
        self._heading_text: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag in ("h1", "h2", "h3"):
            self._heading, self._heading_text = tag, []
        elif tag in ("p", "li", "br", "tr", "div"):
            self.sections[-1][1].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == self._heading:
            text = " ".join("".join(self._heading_text).split())
            if tag == "h1" and self.title is None:
                self.title = text
            else:
                self.sections.append((text, []))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        (self._heading_text if self._heading else self.sections[-1][1]).append(data)


def parse_html(text: str, path: str) -> tuple[str, list[Passage]]:
    parser = _HtmlSections()
    parser.feed(text)
    title = parser.title or Path(path).stem
    passages = []
    for heading, parts in parser.sections:
        body = "\n".join(" ".join(line.split()) for line in "".join(parts).splitlines() if line.strip())
        if body:
            passages.append(Passage(f"{title} — {heading}" if heading else title, path, body))
    return title, passages


def parse_qa_csv(text: str, path: str) -> tuple[str, list[Passage]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = {name.lower(): name for name in reader.fieldnames or []}
    except csv.Error as exc:
        raise UnsupportedDocument(f"{path}: not a readable CSV ({exc})") from exc
    question = fields.get("question") or fields.get("instruction")
    answer = fields.get("answer") or fields.get("response")
    if not question or not answer:
        raise UnsupportedDocument(f"{path}: a Q&A CSV needs 'question' and 'answer' columns")
    try:
        passages = [Passage(row[question].strip(), path, row[answer].strip())
                    for row in reader if (row.get(question) or "").strip() and (row.get(answer) or "").strip()]
    except csv.Error as exc:
        raise UnsupportedDocument(f"{path}: not a readable CSV (line {reader.line_num}: {exc})") from exc
    return Path(path).stem, passages


def parse_text(text: str, path: str) -> tuple[str, list[Passage]]:
    title = Path(path).stem.replace("-", " ").replace("_", " ").capitalize()
    return title, [Passage(title, path, text.strip())] if text.strip() else []


def parse_document(file: Path, display_path: str) -> Document:
    """Parse one file into passages; raises UnsupportedDocument for other formats."""
    suffix = file.suffix.lower()
    if suffix not in SUPPORTED:
        raise UnsupportedDocument(f"{display_path}: unsupported format {suffix or '(none)'}; use "
                                  + ", ".join(sorted(SUPPORTED)))
    raw = file.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    if suffix in (".md", ".markdown"):
        passages = split_markdown(text, display_path)
        title = passages[0].title.split(" — ")[0] if passages else file.stem
    elif suffix in (".html", ".htm"):
        title, passages = parse_html(text, display_path)
    elif suffix == ".csv":
        title, passages = parse_qa_csv(text, display_path)
    else:
        title, passages = parse_text(text, display_path)
    return Document(display_path, title, hashlib.sha256(raw).hexdigest(), _split_long(passages))


def collect_files(paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, display path) for every supported file under the given files and folders."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED):
                found.append((file, file.relative_to(path).as_posix()))
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found
