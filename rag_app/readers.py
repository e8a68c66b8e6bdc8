"""Folder -> LlamaIndex Documents, one reader per format, one error per bad file.

A bad file never costs the rest of the batch: :func:`read_folder` returns the documents it could
read plus a list of ``Skipped(path, reason)``. Every document carries ``source`` (path relative to
the ingested root, ``/``-separated), ``file_type``, ``title`` and ``mtime`` as metadata. None of the
metadata is embedded or shown to the LLM: the embedded text is the chunk alone, as in the tutorial.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import Document

from rag_app.errors import IngestError, UsageError
from rag_app.files import BINARY_SNIFF as _BINARY_SNIFF
from rag_app.files import decode_text as _decode_text
from rag_app.files import html_to_text, iter_files, relative_source
from rag_app.settings import IngestSettings

log = logging.getLogger(__name__)

METADATA_KEYS = ["source", "file_type", "title", "mtime"]


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str


@dataclass
class ReadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


_FRONT_TITLE = re.compile(r"^---\s*\n(?:.*\n)*?title:\s*(.+?)\s*\n(?:.*\n)*?---", re.MULTILINE)
_MD_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_title(text: str) -> str:
    match = _FRONT_TITLE.match(text)
    if match:
        return match.group(1).strip().strip("'\"")
    match = _MD_H1.search(text)
    return match.group(1).strip() if match else ""


class TextFileReader(BaseReader):
    """Markdown and plain text, read verbatim (chunk parity needs the exact text)."""

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        text = _decode_text(Path(file).read_bytes(), Path(file))
        meta = dict(extra_info or {})
        if Path(file).suffix.lower() in {".md", ".markdown"}:
            meta.setdefault("title", markdown_title(text))
        return [Document(text=text, metadata=meta)]


class HtmlReader(BaseReader):
    """HTML pages: scripts, styles and navigation dropped, block structure kept as newlines."""

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        data = Path(file).read_bytes()
        if b"\x00" in data[:_BINARY_SNIFF]:
            raise IngestError("binary content (NUL bytes) in an HTML file")
        text, title = html_to_text(data)  # bs4 honours the page's declared charset
        meta = dict(extra_info or {})
        meta.setdefault("title", title)
        return [Document(text=text, metadata=meta)]


class PdfReader(BaseReader):
    """PDFs through llama-index-readers-file's pypdf reader, pages joined into one document."""

    def load_data(self, file: Path, extra_info: dict | None = None) -> list[Document]:
        from llama_index.readers.file import PDFReader

        path = Path(file)
        with path.open("rb") as fh:
            if not fh.read(1024).lstrip().startswith(b"%PDF"):
                raise IngestError("not a PDF (no %PDF header); the file is corrupt or misnamed")
        try:
            docs = PDFReader(return_full_document=True).load_data(path)
        except Exception as exc:
            raise IngestError(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc
        text = "\n".join(d.text for d in docs)
        meta = dict(extra_info or {})
        meta.setdefault("title", _pdf_title(path))
        return [Document(text=text, metadata=meta)]


def _pdf_title(path: Path) -> str:
    try:
        from pypdf import PdfReader as _Pdf

        info = _Pdf(str(path)).metadata
        return str(info.title).strip() if info and info.title else ""
    except Exception:
        return ""


READERS: dict[str, Callable[[], BaseReader]] = {
    ".md": TextFileReader,
    ".markdown": TextFileReader,
    ".txt": TextFileReader,
    ".html": HtmlReader,
    ".htm": HtmlReader,
    ".pdf": PdfReader,
}
SUPPORTED = sorted(READERS)


def read_file(path: Path, root: Path, settings: IngestSettings | None = None) -> Document:
    """Read one file into one Document, or raise IngestError with a reason a person can act on."""
    settings = settings or IngestSettings()
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise IngestError(
            f"unsupported file type {suffix or '(no extension)'!r}; supported: "
            f"{', '.join(SUPPORTED)} (leave it out with --exclude)"
        )
    try:
        stat = path.stat()
    except OSError as exc:
        raise IngestError(f"cannot stat: {exc.strerror}") from exc
    if stat.st_size == 0:
        raise IngestError("empty file (0 bytes)")
    if stat.st_size > settings.max_file_mb * 1024 * 1024:
        raise IngestError(
            f"file is {stat.st_size / 1e6:.1f} MB, above ingest.max_file_mb="
            f"{settings.max_file_mb}; raise the limit to include it"
        )
    source = relative_source(path, root)
    meta = {"source": source, "file_type": suffix.lstrip("."), "mtime": int(stat.st_mtime)}
    try:
        docs = READERS[suffix]().load_data(path, extra_info=meta)
    except IngestError:
        raise
    except PermissionError as exc:
        raise IngestError(f"unreadable: permission denied ({exc.strerror})") from exc
    except OSError as exc:
        raise IngestError(f"unreadable: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise IngestError(f"{type(exc).__name__}: {exc}") from exc
    text = "\n".join(d.text for d in docs)
    if not text.strip():
        raise IngestError("no text could be extracted (empty or scanned-only content)")
    metadata = {**meta, "title": str(docs[0].metadata.get("title") or "")}
    return Document(
        id_=source,
        text=text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(METADATA_KEYS),
        excluded_llm_metadata_keys=list(METADATA_KEYS),
    )


def check_root(root: Path | str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise UsageError(f"{root} does not exist; pass a folder (or a file) to ingest")
    return root.resolve()


def read_folder(root: Path | str, settings: IngestSettings | None = None) -> ReadResult:
    """Read every file under ``root`` (or the single file ``root``)."""
    root = check_root(root)
    files = [root] if root.is_file() else list(iter_files(root, settings))
    base = root.parent if root.is_file() else root
    result = ReadResult()
    for path in files:
        try:
            result.documents.append(read_file(path, base, settings))
        except IngestError as exc:
            source = relative_source(path, base)
            log.warning("skipped %s: %s", source, exc)
            result.skipped.append(Skipped(source, str(exc)))
    return result
