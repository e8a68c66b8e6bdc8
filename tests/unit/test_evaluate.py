"""Pure evaluation logic: metrics on hand-made rankings, question-set parsing, the ARAGOG
converter, and the per-mode aggregation with a stand-in retriever."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag_app.embeddings import BGE_QUERY_INSTRUCTION, query_prefix
from rag_app.errors import UsageError
from rag_app.evaluate import (
    check_gold_sources,
    collection_name_for,
    context_keyword_cuts,
    distinct,
    evaluate_mode,
    hit_at,
    keyword_recall,
    load_qa,
    mrr_at,
    ndcg_at,
    recall_at,
    retrieval_metrics,
    token_f1,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import aragog_to_jsonl  # noqa: E402

# chunk sources, best first: b a b c a d ; gold {a, c}
RANKED = ["b", "a", "b", "c", "a", "d"]
GOLD = {"a", "c"}


def test_hit_at() -> None:
    assert hit_at(RANKED, GOLD, 1) == 0.0
    assert hit_at(RANKED, GOLD, 2) == 1.0
    assert hit_at(RANKED, GOLD, 5) == 1.0
    assert hit_at(RANKED, {"z"}, 5) == 0.0
    assert hit_at([], GOLD, 5) == 0.0


def test_recall_at_counts_gold_sources_not_chunks() -> None:
    assert recall_at(RANKED, GOLD, 2) == 0.5  # a only
    assert recall_at(RANKED, GOLD, 5) == 1.0  # a and c
    assert recall_at(["a", "a", "a"], {"a", "c", "e", "f"}, 5) == 0.25
    assert recall_at(RANKED, set(), 5) == 0.0


def test_mrr_at() -> None:
    assert mrr_at(RANKED, GOLD, 10) == 0.5
    assert mrr_at(RANKED, {"d"}, 10) == pytest.approx(1 / 6)
    assert mrr_at(RANKED, {"d"}, 5) == 0.0  # beyond the cut
    assert mrr_at(RANKED, {"b"}, 10) == 1.0


def test_ndcg_over_distinct_sources() -> None:
    assert distinct(RANKED) == ["b", "a", "c", "d"]
    # a and c at distinct ranks 2 and 3; the ideal puts two gold sources at ranks 1 and 2
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(RANKED, GOLD, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at(RANKED, GOLD, 10) == pytest.approx(0.6934264036172708)
    # duplicates of a relevant source neither add gain nor demote others
    assert ndcg_at(["a", "a", "a", "c"], GOLD, 10) == pytest.approx(1.0)
    assert ndcg_at(["a", "b"], {"a"}, 10) == 1.0
    assert ndcg_at(["b", "a"], {"a"}, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at(["b", "d"], GOLD, 10) == 0.0
    # a cut of 1 distinct source: only the first counts, the ideal is one gold source
    assert ndcg_at(["b", "a"], GOLD, 1) == 0.0


def test_retrieval_metrics_bundle() -> None:
    m = retrieval_metrics(RANKED, ["a", "c"])
    assert m == {
        "hit@1": 0.0,
        "hit@2": 1.0,
        "hit@5": 1.0,
        "recall@5": 1.0,
        "mrr@10": 0.5,
        "ndcg@10": pytest.approx(0.6934264036172708),
    }


def test_keyword_recall_is_case_insensitive_whole_words() -> None:
    text = "EfConstruction sets the Search range while building."
    assert keyword_recall(text, ["efconstruction", "search range", "ef"]) == pytest.approx(2 / 3)
    assert keyword_recall(text, ["M"]) == 0.0
    assert keyword_recall("M is 16", ["m", "16"]) == 1.0
    assert keyword_recall(text, []) == 0.0
    assert keyword_recall("uses C++ and .NET", ["c++", ".net"]) == 1.0


def test_token_f1_squad_style() -> None:
    # normalized: [cat, sat, on, mat] vs [cat, sat]: P = 1/2, R = 1
    assert token_f1("The cat sat on the mat.", "a cat sat") == pytest.approx(2 / 3)
    assert token_f1("Paris", "paris!") == 1.0
    assert token_f1("blue", "red") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "red") == 0.0


def test_context_keyword_cuts() -> None:
    assert context_keyword_cuts(10) == [2, 5, 10]
    assert context_keyword_cuts(5) == [2, 5]
    assert context_keyword_cuts(3) == [2, 3]
    assert context_keyword_cuts(1) == [1]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_qa_reads_optional_fields(tmp_path: Path) -> None:
    qa = _write(
        tmp_path / "qa.jsonl",
        [
            json.dumps({"question": "q1", "gold_sources": ["a.md"], "extra": 1}),
            "",
            json.dumps({"question": "q2", "answer": "x", "answer_keywords": ["k"]}),
        ],
    )
    items = load_qa(qa)
    assert [i.question for i in items] == ["q1", "q2"]
    assert items[0].gold_sources == ["a.md"] and items[0].answer is None
    assert items[1].gold_sources == [] and items[1].answer_keywords == ["k"]
    assert items[1].where == f"{qa}:3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["q"]', "expected a JSON object"),
        ('{"gold_sources": ["a.md"]}', "'question' must be a non-empty string"),
        ('{"question": "q", "gold_sources": "a.md"}', "'gold_sources' must be a list"),
        ('{"question": "q", "answer": 3}', "'answer' must be a string"),
    ],
)
def test_load_qa_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    qa = _write(tmp_path / "qa.jsonl", [json.dumps({"question": "ok"}), line])
    with pytest.raises(UsageError) as err:
        load_qa(qa)
    assert f"{qa}:2" in str(err.value)
    assert message in str(err.value)


def test_load_qa_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_qa(tmp_path / "nope.jsonl")
    with pytest.raises(UsageError, match="no questions"):
        load_qa(_write(tmp_path / "empty.jsonl", [""]))


def test_check_gold_sources(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("x")
    qa = _write(
        tmp_path / "qa.jsonl",
        [json.dumps({"question": "q", "gold_sources": ["a.md", "missing.md"]})],
    )
    with pytest.raises(UsageError, match=r"qa.jsonl:1: missing.md"):
        check_gold_sources(load_qa(qa), tmp_path)


def test_collection_name_is_milvus_safe(tmp_path: Path) -> None:
    name = collection_name_for(tmp_path / "milvus-docs")
    assert name.startswith("eval_milvus_docs_") and len(name) == len("eval_milvus_docs_") + 8
    assert name == collection_name_for(tmp_path / "milvus-docs")
    assert name != collection_name_for(tmp_path / "other" / "milvus-docs")


def test_evaluate_mode_averages_per_question() -> None:
    from rag_app.evaluate import QAItem

    chunks = {
        "q1": [("b", "nothing"), ("a", "HNSW uses efConstruction")],
        "q2": [("c", "BM25 ranks by terms"), ("a", "x")],
    }
    items = [
        QAItem("q1", ["a"], answer="ef", answer_keywords=["efConstruction", "M"]),
        QAItem("q2", ["c"], answer_keywords=["bm25"]),
    ]

    def retrieve(q: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(source=s, text=t) for s, t in chunks[q]]

    def answer(qs: list[str]) -> list[SimpleNamespace]:
        return [SimpleNamespace(answer="the ef value", sources=[]) for _ in qs]

    done: list[int] = []
    res = evaluate_mode(items, retrieve, "dense", 2, answer=answer, advance=done.append)
    assert res.metrics["hit@1"] == 0.5
    assert res.metrics["mrr@10"] == 0.75
    assert res.metrics["ctx_kw_recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert res.metrics["answer_kw_recall"] == 0.0
    assert res.metrics["answer_f1"] == pytest.approx(2 / 3)  # only q1 has an answer
    assert res.metrics["s_per_question"] >= 0
    assert sum(done) == 4
    assert res.per_question[0]["sources"] == ["b", "a"]
    assert res.per_question[0]["answer"] == "the ef value"


def test_query_prefix() -> None:
    assert query_prefix("BAAI/bge-small-en-v1.5", "auto") == BGE_QUERY_INSTRUCTION
    assert query_prefix("/models/bge-base-zh-v1.5", "auto").startswith("为这个句子")
    assert query_prefix("BAAI/bge-m3", "auto") == ""
    assert query_prefix("packaged:all-MiniLM-L6-v2", "auto") == ""
    assert query_prefix("BAAI/bge-small-en-v1.5", None) == ""
    assert query_prefix("any", "query: ") == "query: "


def test_aragog_keywords() -> None:
    kws = aragog_to_jsonl.keywords("Masked LM (MLM) and Next Sentence Prediction (NSP).")
    assert kws == ["Masked", "LM", "MLM", "Sentence", "Prediction", "NSP"]
    kws = aragog_to_jsonl.keywords("It reaches 8.3 billion parameters and 15.1 PetaFLOPs.", 3)
    assert kws == ["reaches", "8.3", "billion"]


def test_aragog_convert_skips_glm(tmp_path: Path) -> None:
    bench = tmp_path / "benchmark.json"
    bench.write_text(
        json.dumps(
            {
                "questions": ["What is BERT?", "How does GLM-130B work?", "What is PAL?"],
                "ground_truths": ["A bidirectional encoder.", "It is GLM.", "Program-aided LMs."],
            }
        )
    )
    rows, skipped = aragog_to_jsonl.convert(bench)
    assert skipped == 1
    assert [r["question"] for r in rows] == ["What is BERT?", "What is PAL?"]
    assert rows[0] == {
        "question": "What is BERT?",
        "answer": "A bidirectional encoder.",
        "answer_keywords": ["bidirectional", "encoder"],
    }
    out = tmp_path / "qa.jsonl"
    assert aragog_to_jsonl.main([str(bench), "-o", str(out)]) == 0
    assert [i.question for i in load_qa(out)] == ["What is BERT?", "What is PAL?"]
