"""Chunk parity with LangChain's RecursiveCharacterTextSplitter(512, 51) on the real Milvus docs."""

from __future__ import annotations

from pathlib import Path

import pytest
from llama_index.core.schema import Document

from rag_app.chunking import RecursiveCharacterNodeParser, recursive_split
from rag_app.readers import read_file
from rag_app.settings import ChunkingSettings
from tests.conftest import MILVUS_DOCS

splitters = pytest.importorskip("langchain_text_splitters")

pytestmark = pytest.mark.skipif(not MILVUS_DOCS.is_dir(), reason="needs ../shared/data/milvus-docs")


def _docs() -> list[Path]:
    return sorted(MILVUS_DOCS.rglob("*.md"))


def test_every_milvus_doc_chunks_exactly_like_langchain() -> None:
    files = _docs()
    assert len(files) >= 20
    lc = splitters.RecursiveCharacterTextSplitter(chunk_size=512, chunk_overlap=51)
    parser = RecursiveCharacterNodeParser.from_settings(ChunkingSettings())
    total = 0
    for path in files:
        doc = read_file(path, MILVUS_DOCS)
        expected = lc.split_text(doc.text)
        nodes = parser.get_nodes_from_documents([doc])
        assert [n.get_content() for n in nodes] == expected, path
        # What gets embedded is the chunk alone: no metadata prefix.
        assert all(n.get_content(metadata_mode="embed") == n.get_content() for n in nodes), path
        assert {n.metadata["source"] for n in nodes} <= {path.relative_to(MILVUS_DOCS).as_posix()}
        total += len(expected)
    assert total > 1000


@pytest.mark.parametrize(("size", "overlap"), [(100, 0), (256, 30), (1000, 200), (40, 39)])
def test_other_sizes_match_too(size: int, overlap: int) -> None:
    lc = splitters.RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap)
    for path in _docs()[:25]:
        text = path.read_text(encoding="utf-8")
        assert recursive_split(text, size, overlap) == lc.split_text(text), path


def test_edge_cases_match() -> None:
    lc = splitters.RecursiveCharacterTextSplitter(chunk_size=20, chunk_overlap=5)
    for text in ["", "   ", "a" * 75, "word " * 30, "x\n\ny\n\n\n\nz", "  lead\n\ntrail  "]:
        assert recursive_split(text, 20, 5) == lc.split_text(text), repr(text)


def test_node_parser_keeps_document_metadata() -> None:
    parser = RecursiveCharacterNodeParser(chunk_size=30, chunk_overlap=5)
    doc = Document(
        text="alpha beta gamma delta epsilon zeta eta theta", metadata={"source": "a.md"}
    )
    nodes = parser.get_nodes_from_documents([doc])
    assert len(nodes) == 2
    assert all(n.metadata["source"] == "a.md" for n in nodes)
