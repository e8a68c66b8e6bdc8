"""Real MiniLM + real Milvus Lite: ingest, reopen from a new process, retrieve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from rag_app.errors import DimensionMismatchError, UsageError
from tests.conftest import make_settings, write_files

CORPUS = {
    "indexes/hnsw.md": "# HNSW\n\nHNSW builds a layered proximity graph. The parameter M sets the "
    "maximum number of edges per node, efConstruction sets the candidate list size while "
    "building, and ef sets the candidate list size while searching.\n",
    "ops/backup.txt": "Backups are taken nightly with the backup tool and copied to object "
    "storage. Restores replay the snapshot and then the write-ahead log.\n",
    "web/install.html": "<html><head><title>Install guide</title><style>p{color:red}</style>"
    "<script>var tracking = 'Kubernetes';</script></head><body><nav>Home | Docs</nav>"
    "<h1>Install guide</h1><p>Install the server with Docker Compose: download the compose file "
    "and run docker compose up.</p></body></html>",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_files(tmp_path / "corpus", CORPUS)


def _app(home: Path, embed_model: Any, **overrides: Any) -> RagApp:
    return RagApp(make_settings(home, **overrides), embed_model=embed_model)


def test_ingest_then_retrieve_in_a_new_process(
    corpus: Path, rag_home: Path, embed_model: Any
) -> None:
    with _app(rag_home, embed_model) as app:
        report = app.ingest(corpus)
        assert report.exit_code == 0
        assert sorted(report.new) == sorted(CORPUS)
        assert report.chunks_inserted == 3

    # A new process finds the collection released; rag_app loads it and retrieves.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag_app.cli",
            "retrieve",
            "What does efConstruction control?",
            "--json",
            "--top-k",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**_env(), "RAG_HOME": str(rag_home)},
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    sources = [s["source"] for s in data["sources"]]
    assert sources[0] == "indexes/hnsw.md"
    assert sorted(sources) == sorted(CORPUS)
    top = data["sources"][0]
    assert "efConstruction" in top["text"]
    assert top["score"] > data["sources"][1]["score"]


def test_html_is_read_without_boilerplate(corpus: Path, rag_home: Path, embed_model: Any) -> None:
    with _app(rag_home, embed_model) as app:
        app.ingest(corpus)
        hits = app.retrieve("How do I install it with docker compose?", top_k=1)
    assert hits[0].source == "web/install.html"
    assert "docker compose up" in hits[0].text
    assert "tracking" not in hits[0].text and "color:red" not in hits[0].text
    assert "Home | Docs" not in hits[0].text
    assert hits[0].metadata["title"] == "Install guide"
    assert hits[0].metadata["file_type"] == "html"


def test_dimension_mismatch_is_a_clear_error(
    corpus: Path, rag_home: Path, embed_model: Any
) -> None:
    from rag_app.store import build_vector_store

    with _app(rag_home, embed_model) as app:
        app.ingest(corpus)
    settings = make_settings(rag_home)
    with pytest.raises(DimensionMismatchError) as err:
        build_vector_store(settings, 1024)
    message = str(err.value)
    assert "384-dim" in message and "1024-dim" in message and "--recreate" in message


def test_empty_folder_is_a_usage_error(tmp_path: Path, rag_home: Path, embed_model: Any) -> None:
    (tmp_path / "empty").mkdir()
    with _app(rag_home, embed_model) as app, pytest.raises(UsageError, match="no files"):
        app.ingest(tmp_path / "empty")


def test_missing_folder_is_a_usage_error(tmp_path: Path, rag_home: Path) -> None:
    with RagApp(make_settings(rag_home)) as app, pytest.raises(UsageError, match="does not exist"):
        app.ingest(tmp_path / "missing")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
