"""SIGKILL an ingest mid-way, run it again, and compare with a clean one-shot ingest.

The victim is a real `rag-app ingest` subprocess with 8-chunk batches, killed after a random
number of written batches (seeded: the seed is in the failure message). The re-run must leave
exactly the rows a clean run writes: same ids, same texts, no duplicates, nothing missing.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from rag_app.readers import iter_files
from tests.conftest import MILVUS_DOCS, ROOT, make_settings
from tests.integration.test_ingest_incremental import rows

pytestmark = pytest.mark.slow

BATCH = {"embedding__batch_size": 8, "milvus__insert_batch_size": 8}


def small_docs(dest: Path, n: int = 16) -> Path:
    """The first ``n`` milvus-docs markdown files of 1-3 KB (a few chunks each)."""
    if not MILVUS_DOCS.is_dir():
        pytest.skip(f"{MILVUS_DOCS} is not there")
    picked = [
        p for p in iter_files(MILVUS_DOCS) if p.suffix == ".md" and 1000 <= p.stat().st_size <= 3000
    ][:n]
    for path in picked:
        target = dest / path.relative_to(MILVUS_DOCS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


def count_rows(app: RagApp) -> int:
    client = app.vector_store.client
    res = client.query(app.settings.milvus.collection, filter="", output_fields=["count(*)"])
    return int(res[0]["count(*)"])


def test_sigkill_then_rerun_equals_a_clean_ingest(tmp_path: Path, embed_model: Any) -> None:
    corpus = small_docs(tmp_path / "corpus")
    with RagApp(make_settings(tmp_path / "clean", **BATCH), embed_model=embed_model) as app:
        clean_report = app.ingest(corpus)
        clean = rows(app)
        assert count_rows(app) == len(clean)
    batches = -(-len(clean) // 8)
    assert batches >= 5, f"corpus too small for the test ({len(clean)} chunks)"

    seed = int(os.environ.get("INGEST_CRASH_SEED", random.randrange(1 << 30)))
    kill_after = random.Random(seed).randint(1, batches - 3)
    crash_home = tmp_path / "crash"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rag_app.cli",
            "-vv",
            "--set",
            "embedding.batch_size=8",
            "--set",
            "milvus.insert_batch_size=8",
            "ingest",
            str(corpus),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**env, "RAG_HOME": str(crash_home), "HF_HUB_OFFLINE": "1"},
    )
    written = 0
    assert victim.stderr is not None
    for line in victim.stderr:
        if "rag_app.ingest: wrote " in line:
            written += 1
            if written == kill_after:
                # The next batch is being embedded and its predecessor may be mid-insert.
                victim.send_signal(signal.SIGKILL)
                break
    victim.wait(timeout=60)
    why = f"seed={seed} kill_after={kill_after} of {batches} batches"
    assert victim.returncode == -signal.SIGKILL, why

    with RagApp(make_settings(crash_home, **BATCH), embed_model=embed_model) as app:
        survived = rows(app)
        report = app.ingest(corpus)
        resumed = rows(app)
        total = count_rows(app)
        again = app.ingest(corpus)

    assert 8 * kill_after <= len(survived) < len(clean), why  # the kill did cut the run short
    assert set(survived) <= set(clean), why
    assert resumed == clean, why  # same ids -> same (source, text); rows() rejects duplicates
    assert total == len(clean), why
    assert report.chunks_inserted == len(clean) - len(survived) + _upserted(report, survived)
    assert report.exit_code == 0 and clean_report.exit_code == 0
    assert again.nothing_to_do and again.chunks_embedded == 0, why


def _upserted(report: Any, survived: dict[str, tuple[str, str]]) -> int:
    """Rows rewritten in place: the surviving rows of files that were cut mid-way."""
    partial = set(report.changed)
    return sum(1 for src, _ in survived.values() if src in partial)
