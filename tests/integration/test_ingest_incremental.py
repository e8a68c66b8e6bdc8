"""Incremental ingestion against real Milvus Lite + real MiniLM: unchanged, changed, deleted,
state across processes, the CLI's summary, --quiet and --no-prune."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from rag_app.store import TEXT_FIELD, iter_rows
from tests.conftest import ROOT, make_settings, write_files

pytestmark = pytest.mark.slow

CORPUS = {
    "guide/hnsw.md": "# HNSW\n\nHNSW builds a layered proximity graph. M sets the number of "
    "edges per node and efConstruction the candidate list while building.\n",
    "guide/ivf.md": "# IVF\n\nIVF_FLAT clusters vectors into nlist buckets and searches nprobe "
    "of them at query time.\n",
    "ops/backup.txt": "Backups run nightly and are copied to object storage.\n",
}


def rows(app: RagApp) -> dict[str, tuple[str, str]]:
    """id -> (source, text) for every row in the app's collection."""
    client = app.vector_store.client
    out = {}
    for r in iter_rows(client, app.settings.milvus.collection, ["doc_id", TEXT_FIELD]):
        assert r["id"] not in out, f"duplicate id {r['id']}"
        out[r["id"]] = (r["doc_id"], r[TEXT_FIELD])
    return out


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return subprocess.run(
        [sys.executable, "-m", "rag_app.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**env, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )


def test_rerun_in_a_new_process_embeds_nothing(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        first = app.ingest(corpus)
        before = rows(app)
    assert sorted(first.new) == sorted(CORPUS) and first.chunks_inserted == len(before) == 3

    # A second process sees the collection as its own ledger: nothing to read, embed or write.
    out = cli(rag_home, "ingest", str(corpus))
    assert out.returncode == 0, out.stderr
    summary = [line for line in out.stderr.splitlines() if "files:" in line]
    assert len(summary) == 1, out.stderr  # one plain line when stderr is not a TTY
    assert summary[0].startswith("nothing to do: collection is up to date; files: 3 seen, 0 new")
    assert "3 unchanged" in summary[0] and "chunks: 0 inserted, 0 deleted" in summary[0]
    for stage in ("read=", "chunk=", "embed=", "write="):
        assert stage in summary[0]
    assert "\x1b[" not in out.stderr  # no progress bar escapes off a TTY

    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        assert rows(app) == before


def test_changed_new_and_deleted_files(tmp_path: Path, rag_home: Path, embed_model: Any) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        app.ingest(corpus)
        before = rows(app)

        (corpus / "guide/ivf.md").write_text(
            "# IVF\n\nIVF_PQ compresses vectors with product "
            "quantization; m sets the number of subvectors.\n"
        )
        (corpus / "ops/backup.txt").unlink()
        write_files(corpus, {"faq/limits.md": "Collections hold at most 65,536 partitions.\n"})
        report = app.ingest(corpus)
        after = rows(app)

        assert report.changed == ["guide/ivf.md"] and report.new == ["faq/limits.md"]
        assert report.deleted == ["ops/backup.txt"] and report.unchanged == 1
        assert report.chunks_embedded == report.chunks_inserted == 2
        assert report.chunks_deleted == 2  # the old ivf.md chunk and backup.txt's
        texts = {text for _, text in after.values()}
        assert not any("IVF_FLAT" in t for t in texts) and any("IVF_PQ" in t for t in texts)
        assert {src for src, _ in after.values()} == {
            "guide/hnsw.md",
            "guide/ivf.md",
            "faq/limits.md",
        }
        hnsw_ids = {i for i, (src, _) in before.items() if src == "guide/hnsw.md"}
        assert hnsw_ids <= set(after)  # an unchanged file keeps its rows

        # --no-prune keeps the chunks of files gone from the folder.
        (corpus / "faq/limits.md").unlink()
        kept = app.ingest(corpus, prune=False)
        assert kept.deleted == [] and kept.chunks_deleted == 0 and kept.nothing_to_do
        assert rows(app) == after
        pruned = app.ingest(corpus)
        assert pruned.deleted == ["faq/limits.md"] and pruned.chunks_deleted == 1


def test_quiet_prints_nothing_and_json_is_one_object(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    import json

    from click.testing import CliRunner

    from rag_app.cli import main

    corpus = write_files(tmp_path / "corpus", CORPUS)
    runner = CliRunner()
    res = runner.invoke(main, ["--home", str(rag_home), "-q", "ingest", str(corpus)])
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and res.stderr == ""
    res = runner.invoke(main, ["--home", str(rag_home), "ingest", str(corpus), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["files"]["unchanged"] == 3 and data["up_to_date"] is True
    assert data["chunks"] == {"inserted": 0, "deleted": 0, "embedded": 0}


def test_progress_bar_on_a_tty(tmp_path: Path, rag_home: Path) -> None:
    """On a terminal the rich bar shows files, chunks and chunks/s (stderr is a pty here)."""
    import pty

    corpus = write_files(tmp_path / "corpus", CORPUS)
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag_app.cli", "ingest", str(corpus)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=ROOT,
        env={**env, "RAG_HOME": str(rag_home), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert "ingest" in text and "3/3 chunks" in text, text
    assert "3/3 files" in text and "chunks/s" in text
    assert "files: 3 seen, 3 new" in text
