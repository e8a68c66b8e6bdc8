"""The comparison's pure metrics and question loading, on hand-made inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.compare import (
    BASE,
    RAG,
    chunk_parity,
    goal_checks,
    latency_stats,
    load_questions,
    percentile,
    rank1_agreement,
    ratio,
    table_rows,
    topk_overlap,
)
from rag_app.errors import UsageError
from rag_app.prompts import fill_template


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_in_milliseconds() -> None:
    stats = latency_stats([0.010, 0.020, 0.030])
    assert stats["p50_ms"] == pytest.approx(20.0)
    assert stats["p95_ms"] == pytest.approx(29.0)
    assert stats["mean_ms"] == pytest.approx(20.0)
    assert stats["samples"] == 3


def test_topk_overlap_and_rank1() -> None:
    a = [["a", "b"], ["c", "d"], ["e", "f"]]
    b = [["b", "a"], ["c", "x"], ["y", "z"]]
    assert topk_overlap(a, b) == pytest.approx((1 + 0.5 + 0) / 3)
    assert rank1_agreement(a, b) == pytest.approx(1 / 3)
    assert topk_overlap(a, a) == 1.0
    assert rank1_agreement(a, a) == 1.0
    # A shorter list counts against the longer one's k.
    assert topk_overlap([["a"]], [["a", "b"]]) == 0.5
    assert rank1_agreement([[]], [[]]) == 1.0
    assert topk_overlap([], []) == 0.0
    with pytest.raises(ValueError):
        topk_overlap([["a"]], [])
    with pytest.raises(ValueError):
        rank1_agreement([["a"]], [])


def test_chunk_parity_counts_multisets_per_source() -> None:
    a = {"x.md": ["p", "q", "q"], "y.md": ["r"]}
    b = {"x.md": ["q", "p"], "y.md": ["r"], "z.md": ["s"]}
    out = chunk_parity(a, b)
    assert out == {"identical": 3, "total": 4, RAG: 4, BASE: 4, "ratio": 0.75}
    # The same text under another source is not a match.
    assert chunk_parity({"a.md": ["t"]}, {"b.md": ["t"]})["identical"] == 0
    assert chunk_parity({"a.md": ["t", "u"]}, {"a.md": ["u", "t"]})["ratio"] == 1.0
    assert chunk_parity({}, {})["ratio"] == 1.0


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None


def test_load_questions_ignores_extra_keys_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"question": " What is HNSW? ", "gold_sources": ["a.md"]}\n\n'
        '{"question": "What is IVF?", "answer": "x"}\n{"question": "Third?"}\n',
        encoding="utf-8",
    )
    assert load_questions(path) == ["What is HNSW?", "What is IVF?", "Third?"]
    assert load_questions(path, limit=2) == ["What is HNSW?", "What is IVF?"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"question": "ok"}\n{"question": \n', "q.jsonl:2: not valid JSON"),
        ('["a list"]\n', "q.jsonl:1: expected a JSON object, got list"),
        ('{"question": "ok"}\n{"text": "no question"}\n', 'q.jsonl:2: missing or empty "question"'),
        ('{"question": ""}\n', 'q.jsonl:1: missing or empty "question"'),
        ('{"question": 3}\n', 'q.jsonl:1: missing or empty "question"'),
        ("\n\n", "no questions in the file"),
    ],
)
def test_load_questions_names_the_bad_line(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=expected):
        load_questions(path)


def test_load_questions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the questions file"):
        load_questions(tmp_path / "nope.jsonl")


def test_fill_template_is_one_pass_and_keeps_unknown_slots() -> None:
    out = fill_template("{a} and {b} and {unknown} {}", a="{b}", b="x")
    # A value that looks like a slot is not filled again; unknown slots stay as written.
    assert out == "{b} and x and {unknown} {}"


def _report(generation: bool) -> dict:
    report = {
        "corpus": "/data/docs",
        "questions": 2,
        "top_k": 2,
        "chunks": {"identical": 9, "total": 10, RAG: 10, BASE: 9, "ratio": 0.9},
        "chunk_parity": 0.9,
        "rank1_agreement": 0.5,
        "topk_overlap": 0.75,
        "ingest": {
            RAG: {"seconds": 2.0, "chunks_per_s": 5.0},
            BASE: {"seconds": 1.8, "chunks_per_s": 5.0},
        },
        "ingest_ratio": 1.0,
        "retrieval": {
            RAG: {"p50_ms": 12.0, "p95_ms": 20.0},
            BASE: {"p50_ms": 10.0, "p95_ms": 16.0},
        },
        "latency_ratio": 1.2,
        "generation": None,
    }
    if generation:
        run = {
            "batched_s": 2.0,
            "sequential_s": 8.0,
            "batched_qps": 1.0,
            "sequential_qps": 0.25,
            "batched_tokens_per_s": 100.0,
            "sequential_tokens_per_s": 25.0,
            "speedup": 4.0,
        }
        report["generation"] = {
            "questions": 2,
            "identical_prompts": 2,
            "identical_answers_batched": 1,
            "identical_answers_sequential": 2,
            RAG: run,
            BASE: run,
        }
    return report


def test_table_rows_carry_the_ratios() -> None:
    rows = {r[0]: r[1:] for r in table_rows(_report(generation=False))}
    assert rows["chunks"] == ("10", "9", "9/10 identical")
    assert rows["chunk parity"][2] == "90.0%"
    assert rows["rank-1 agreement (top-2)"][2] == "50.0%"
    assert rows["retrieval p50 (ms)"] == ("12.0", "10.0", "1.20x")
    assert rows["retrieval p95 (ms)"][2] == "1.25x"
    assert not any(name.startswith("generation") for name in rows)
    rows = {r[0]: r[1:] for r in table_rows(_report(generation=True))}
    assert rows["generation all at once, 2 q (s)"][2] == "1/2 identical answers (2/2 prompts)"
    assert rows["batched ÷ one-by-one throughput"][:2] == ("4.00x", "4.00x")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rag_app.compare import plot

    out = plot(_report(generation=True), tmp_path / "img" / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_goal_checks() -> None:
    checks = {c["goal"]: (c["value"], c["met"]) for c in goal_checks(_report(generation=True))}
    assert checks["chunk parity = 100%"] == (0.9, False)
    assert checks["rank-1 agreement = 100%"] == (0.5, False)
    assert checks["rag_app ingestion >= 0.9x hand-rolled"] == (1.0, True)
    assert checks["rag_app retrieval p50 <= 1.2x hand-rolled"] == (1.2, True)
    assert checks["batched generation >= 3x one-by-one (2 q)"] == (4.0, True)
    assert len(goal_checks(_report(generation=False))) == 4
