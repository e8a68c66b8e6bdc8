"""Retrieval and answer evaluation: question sets, pure metrics, and the run over modes.

Relevance is source-level: a retrieved chunk is relevant when its ``source`` (path relative to the
corpus root) is one of the question's ``gold_sources``. The metric functions are pure (lists in,
float out) so they are unit-tested on hand-made rankings.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.errors import UsageError

# ---------------------------------------------------------------- question sets


@dataclass
class QAItem:
    question: str
    gold_sources: list[str] = field(default_factory=list)
    answer: str | None = None
    answer_keywords: list[str] = field(default_factory=list)
    where: str = ""  # file:line, for messages


def _str_list(value: Any, key: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where}: {key!r} must be a list of non-empty strings, got {value!r}")
    return list(value)


def load_qa(path: str | Path) -> list[QAItem]:
    """Read a JSONL question set; a bad line is an error naming ``file:line``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"question set {p} does not exist (expected a .jsonl file)")
    items: list[QAItem] = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        question = obj.get("question")
        if not isinstance(question, str) or not question.strip():
            raise UsageError(f"{where}: 'question' must be a non-empty string")
        answer = obj.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise UsageError(f"{where}: 'answer' must be a string, got {answer!r}")
        items.append(
            QAItem(
                question=question,
                gold_sources=_str_list(obj.get("gold_sources"), "gold_sources", where),
                answer=answer,
                answer_keywords=_str_list(obj.get("answer_keywords"), "answer_keywords", where),
                where=where,
            )
        )
    if not items:
        raise UsageError(f"question set {p} holds no questions")
    return items


def check_gold_sources(items: Sequence[QAItem], corpus: str | Path) -> None:
    """Gold sources must name files under the corpus, or every metric silently reads 0."""
    root = Path(corpus)
    missing = [(it.where, g) for it in items for g in it.gold_sources if not (root / g).is_file()]
    if missing:
        shown = "; ".join(f"{w}: {g}" for w, g in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise UsageError(
            f"gold_sources not found under {root}: {shown}{more}; paths are relative to --corpus"
        )


# ---------------------------------------------------------------- pure metrics


def hit_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    """1.0 when any of the first ``k`` chunks comes from a gold source."""
    return 1.0 if any(s in gold for s in ranked[:k]) else 0.0


def recall_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    """Fraction of the gold sources among the sources of the first ``k`` chunks."""
    if not gold:
        return 0.0
    return len(gold & set(ranked[:k])) / len(gold)


def mrr_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    """1 / rank of the first relevant chunk within the first ``k`` (0 when none)."""
    for rank, s in enumerate(ranked[:k], 1):
        if s in gold:
            return 1.0 / rank
    return 0.0


def distinct(ranked: Sequence[str]) -> list[str]:
    """Sources in order of first appearance."""
    return list(dict.fromkeys(ranked))


def ndcg_at(ranked: Sequence[str], gold: set[str], k: int) -> float:
    """Binary-gain nDCG@k over the ranked list of DISTINCT sources (a source's later chunks
    neither add gain nor push others down)."""
    if not gold:
        return 0.0
    docs = distinct(ranked)[:k]
    dcg = sum(1.0 / math.log2(i + 2) for i, s in enumerate(docs) if s in gold)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(gold), k)))
    return dcg / ideal


def keyword_recall(text: str, keywords: Sequence[str]) -> float:
    """Fraction of ``keywords`` found in ``text``, case-insensitive, as whole words/phrases
    (so 'ef' does not count inside 'efConstruction')."""
    if not keywords:
        return 0.0
    low = text.lower()
    found = sum(
        1 for kw in keywords if re.search(r"(?<!\w)" + re.escape(kw.lower()) + r"(?!\w)", low)
    )
    return found / len(keywords)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalization: lower case, no punctuation or articles, split on whitespace."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two answers (bag of normalized tokens)."""
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


RETRIEVAL_METRICS = ("hit@1", "hit@2", "hit@5", "recall@5", "mrr@10", "ndcg@10")


def retrieval_metrics(ranked: Sequence[str], gold: Sequence[str]) -> dict[str, float]:
    g = set(gold)
    return {
        "hit@1": hit_at(ranked, g, 1),
        "hit@2": hit_at(ranked, g, 2),
        "hit@5": hit_at(ranked, g, 5),
        "recall@5": recall_at(ranked, g, 5),
        "mrr@10": mrr_at(ranked, g, 10),
        "ndcg@10": ndcg_at(ranked, g, 10),
    }


def context_keyword_cuts(top_k: int) -> list[int]:
    """The context depths at which keyword recall is reported: 2 (the cpu profile's top_k),
    5 and the run's top_k."""
    return sorted({k for k in (2, 5, top_k) if k <= top_k})


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------- the run


@dataclass
class ModeResult:
    mode: str
    metrics: dict[str, float]
    per_question: list[dict[str, Any]]


@dataclass
class EvalReport:
    n: int
    n_with_gold: int
    top_k: int
    collection: str
    modes: list[ModeResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "n_with_gold": self.n_with_gold,
            "top_k": self.top_k,
            "collection": self.collection,
            "modes": {m.mode: m.metrics for m in self.modes},
        }


def evaluate_mode(
    items: Sequence[QAItem],
    retrieve: Callable[[str], list[Any]],
    mode: str,
    top_k: int,
    *,
    answer: Callable[[list[str]], list[Any]] | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> ModeResult:
    """Retrieve for every question (``retrieve`` returns SourceChunk-like objects with
    ``source`` and ``text``), score, and optionally generate answers in one batch."""
    cuts = context_keyword_cuts(top_k)
    rows: list[dict[str, Any]] = []
    for it in items:
        hits = retrieve(it.question)
        ranked = [h.source for h in hits]
        row: dict[str, Any] = {
            "question": it.question,
            "mode": mode,
            "gold_sources": it.gold_sources,
            "sources": ranked,
            "metrics": {},
        }
        if it.gold_sources:
            row["metrics"].update(retrieval_metrics(ranked, it.gold_sources))
        if it.answer_keywords:
            for k in cuts:
                context = "\n".join(h.text for h in hits[:k])
                row["metrics"][f"ctx_kw_recall@{k}"] = keyword_recall(context, it.answer_keywords)
        rows.append(row)
        advance(1)
    if answer is not None:
        t0 = time.perf_counter()
        answers = answer([it.question for it in items])
        per_q = (time.perf_counter() - t0) / max(len(items), 1)
        for it, row, ans in zip(items, rows, answers, strict=True):
            row["answer"] = ans.answer
            row["answer_sources"] = [s.source for s in ans.sources]
            if it.answer_keywords:
                row["metrics"]["answer_kw_recall"] = keyword_recall(ans.answer, it.answer_keywords)
            if it.answer:
                row["metrics"]["answer_f1"] = token_f1(ans.answer, it.answer)
            row["metrics"]["s_per_question"] = per_q
        advance(len(items))
    keys = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    metrics = {k: mean([r["metrics"][k] for r in rows if k in r["metrics"]]) for k in keys}
    return ModeResult(mode=mode, metrics=metrics, per_question=rows)


def write_per_question(path: str | Path, report: EvalReport) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for m in report.modes:
            for row in m.per_question:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def plot_report(report: EvalReport, path: str | Path, title: str = "") -> None:
    """Grouped bars: one group per metric (0..1 scale), one bar per mode."""
    from rag_app.errors import require

    require("matplotlib", "plot", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in report.modes[0].metrics if k != "s_per_question"]
    width = 0.8 / len(report.modes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(keys) + 2), 4.2))
    for i, m in enumerate(report.modes):
        xs = [j + (i - (len(report.modes) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, [m.metrics.get(k, 0.0) for k in keys], width, label=m.mode)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score (mean over questions)")
    ax.set_title(title or f"retrieval quality (n={report.n}, top_k={report.top_k})")
    ax.legend(title="mode", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collection_name_for(corpus: str | Path) -> str:
    """A Milvus-safe collection name per corpus folder: eval_<name>_<hash of the path>."""
    import hashlib

    root = Path(corpus).resolve()
    stem = re.sub(r"[^0-9a-zA-Z_]", "_", root.name)[:40] or "corpus"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    return f"eval_{stem}_{digest}"
