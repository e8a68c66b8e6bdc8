"""`rag-app eval` end to end on a tiny corpus (real MiniLM, real Milvus Lite), and the answer
path with the session's real vLLM engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag_app.cli import main
from tests.conftest import make_settings, write_files
from tests.integration.test_bm25_hybrid import (
    CORPUS,
    KEYWORD_GOLD,
    KEYWORD_Q,
    PARAPHRASE_GOLD,
    PARAPHRASE_Q,
)

QA = [
    {"question": KEYWORD_Q, "gold_sources": [KEYWORD_GOLD], "answer_keywords": ["storage"]},
    {
        "question": PARAPHRASE_Q,
        "gold_sources": [PARAPHRASE_GOLD],
        "answer": "Tune the engine and reduce the weight.",
        "answer_keywords": ["engine", "weight", "rocket"],
    },
]


def _write_qa(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_eval_json_plot_and_per_question(tmp_path: Path, rag_home: Path) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    qa = _write_qa(tmp_path / "qa.jsonl", QA)
    plot, per_q = tmp_path / "eval.png", tmp_path / "per-question.jsonl"
    args = ["eval", "--qa", str(qa), "--corpus", str(corpus), "--top-k", "5", "--json"]
    runner = CliRunner()
    res = runner.invoke(main, [*args, "--plot", str(plot), "--per-question", str(per_q)])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["n"] == 2 and set(data["modes"]) == {"dense", "bm25", "hybrid"}
    dense, bm25, hybrid = (data["modes"][m] for m in ("dense", "bm25", "hybrid"))
    # dense misses the exact code and finds the paraphrase; BM25 the reverse (see
    # test_bm25_hybrid); RRF puts the code's file first and the paraphrase's second.
    assert dense["hit@1"] == 0.5
    assert bm25["hit@1"] == 0.5
    assert bm25["hit@5"] == 0.5  # BM25 never retrieves the paraphrase's answer
    assert hybrid["hit@1"] == 0.5
    assert hybrid["hit@2"] == 1.0
    assert hybrid["mrr@10"] == 0.75
    # the paraphrase's context holds 'engine' and 'weight' but not 'rocket'
    assert bm25["ctx_kw_recall@5"] == pytest.approx((1.0 + 0.0) / 2)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in per_q.read_text().splitlines()]
    assert len(rows) == 6
    first = next(r for r in rows if r["mode"] == "bm25" and r["question"] == KEYWORD_Q)
    assert first["sources"][0] == KEYWORD_GOLD and first["metrics"]["hit@1"] == 1.0

    # A second run reuses the collection: nothing re-embedded.
    again = runner.invoke(main, [*args, "--modes", "dense"])
    assert again.exit_code == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert json.loads(again.stdout)["modes"]["dense"] == dense


def test_eval_bad_line_is_a_usage_error(tmp_path: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "ok"}) + "\n" + '{"question": ""}\n')
    res = CliRunner().invoke(main, ["eval", "--qa", str(qa), "--corpus", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{qa}:2" in res.stderr and "'question'" in res.stderr
    res = CliRunner().invoke(
        main, ["eval", "--qa", str(qa), "--corpus", str(tmp_path), "--modes", "dense,sparse"]
    )
    assert res.exit_code == 2 and "sparse" in res.stderr


@pytest.mark.slow
@pytest.mark.vllm
def test_generate_scores_answers(
    tmp_path: Path, rag_home: Path, embed_model: Any, vllm_llm: Any
) -> None:
    """The --generate path: batched answers from the real vLLM engine, scored."""
    from rag_app.app import RagApp
    from rag_app.engine import SourceChunk
    from rag_app.evaluate import evaluate_mode, load_qa

    corpus = write_files(tmp_path / "corpus", CORPUS)
    items = load_qa(_write_qa(tmp_path / "qa.jsonl", QA))
    with RagApp(make_settings(rag_home), embed_model=embed_model, llm=vllm_llm) as app:
        app.ingest(corpus)
        retriever = app.retriever(top_k=3, mode="hybrid")
        res = evaluate_mode(
            items,
            lambda q: [SourceChunk.from_node(h) for h in retriever.retrieve(q)],
            "hybrid",
            3,
            answer=lambda qs: app.query_batch(qs, mode="hybrid"),
        )
    rows = res.per_question
    assert all(isinstance(r["answer"], str) and r["answer"] for r in rows)
    top_k = make_settings(rag_home).retrieval.top_k
    assert top_k != 3
    assert all(len(r["answer_sources"]) == top_k for r in rows)  # the profile's, not eval's 3
    assert 0.0 <= res.metrics["answer_f1"] <= 1.0
    assert "answer_f1" not in rows[0]["metrics"]  # no reference answer for the first
    assert res.metrics["s_per_question"] > 0
    from rag_app.evaluate import token_f1

    assert rows[1]["metrics"]["answer_f1"] == token_f1(rows[1]["answer"], QA[1]["answer"])
