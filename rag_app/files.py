"""Finding files and extracting their text: plain Python, no LlamaIndex.

Shared by the LlamaIndex readers (rag_app.readers) and the hand-rolled baseline
(rag_app.baseline), so both pipelines start from byte-for-byte the same text.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rag_app.errors import IngestError
from rag_app.settings import IngestSettings

BINARY_SNIFF = 8192


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 text (a BOM is dropped), or IngestError saying how to fix the file."""
    if b"\x00" in data[:BINARY_SNIFF]:
        raise IngestError(
            "binary content (NUL bytes) in a text file; remove it or fix its extension"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            f"convert it, e.g. iconv -f latin1 -t utf-8 {path.name}"
        ) from exc


# Elements whose text is page furniture, not content.
_HTML_DROP = ["script", "style", "noscript", "template", "svg", "iframe", "nav", "footer", "head"]
_BLANKS = re.compile(r"\n\s*\n+")
_SPACES = re.compile(r"[ \t\r\f\v]+")


def html_to_text(html: str | bytes) -> tuple[str, str]:
    """Visible text of an HTML page (paragraph breaks kept) and its title."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup(_HTML_DROP):
        tag.decompose()
    if not title:
        h1 = soup.find("h1")
        title = h1.get_text(" ", strip=True) if h1 else ""
    text = soup.get_text("\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    text = _BLANKS.sub("\n\n", "\n".join(lines)).strip()
    return text, title


def iter_files(root: Path, settings: IngestSettings | None = None) -> Iterator[Path]:
    """Files under root in a stable order, minus hidden ones and ``exclude`` globs."""
    settings = settings or IngestSettings()
    for dirpath, dirnames, filenames in os.walk(root):
        if not settings.hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith(".") and not settings.hidden:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if any(
                fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat) for pat in settings.exclude
            ):
                continue
            yield path


def relative_source(path: Path, root: Path) -> str:
    """A document's ``source``: its path under the ingested root, ``/``-separated."""
    # Lexical first: a symlink inside root may point outside it (or nowhere); its source is
    # still where it sits under root.
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.resolve().relative_to(root.resolve()).as_posix()
