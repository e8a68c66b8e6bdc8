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


def ingest_on_a_tty(home: Path, corpus: Path) -> str:
    """`rag-app ingest` in a subprocess whose stderr is a pty; returns what it drew."""
    import pty

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag_app.cli", "ingest", str(corpus)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=ROOT,
        env={**env, "RAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
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
    assert proc.wait(timeout=300) == 0
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))


def test_tty_bar_then_rerun_in_another_process_embeds_nothing(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    from click.testing import CliRunner

    from rag_app.cli import main

    corpus = write_files(tmp_path / "corpus", CORPUS)
    # Process 1, on a terminal: the rich bar shows chunks, files and chunks/s.
    drawn = ingest_on_a_tty(rag_home, corpus)
    assert "ingest" in drawn and "3/3 chunks" in drawn, drawn
    assert "3/3 files" in drawn and "chunks/s" in drawn
    assert "files: 3 seen, 3 new" in drawn

    # Process 2 (this one) sees the collection as its own ledger: nothing to read, embed or
    # write. CliRunner's stderr is not a TTY: no bar, exactly one plain summary line.
    res = CliRunner().invoke(main, ["--home", str(rag_home), "ingest", str(corpus)])
    assert res.exit_code == 0, res.output
    summary = [line for line in res.stderr.splitlines() if "files:" in line]
    assert len(summary) == 1, res.stderr
    assert summary[0].startswith("nothing to do: collection is up to date; files: 3 seen, 0 new")
    assert "3 unchanged" in summary[0] and "chunks: 0 inserted, 0 deleted" in summary[0]
    for stage in ("read=", "chunk=", "embed=", "write="):
        assert stage in summary[0]
    assert "\x1b[" not in res.stderr and "chunks/s ·" not in res.stderr
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        assert sorted(src for src, _ in rows(app).values()) == sorted(CORPUS)


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
