"""rag_app against the hand-rolled tutorial pipeline (rag_app.baseline): same results, what cost.

Pure metric functions first (unit-tested on hand-made inputs), then :func:`run_compare`, which
ingests one corpus with both pipelines into separate collections, runs the questions through both
and returns one JSON-ready dict; :func:`render_table` and :func:`plot` present it.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rag_app.errors import UsageError
from rag_app.settings import Settings

RAG, BASE = "rag_app", "hand_rolled"
LABELS = {RAG: "rag_app (LlamaIndex)", BASE: "hand-rolled (tutorial)"}

# ---------------------------------------------------------------- pure metrics


def load_questions(path: Path | str, limit: int | None = None) -> list[str]:
    """Questions from a JSONL file (one object per line with a ``question`` string; other keys
    are ignored, blank lines skipped). Bad lines raise UsageError naming file:line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the questions file ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    questions: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}:{number}: not valid JSON ({exc.msg}); expected one object per line "
                'like {"question": "..."}'
            ) from exc
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise UsageError(f'{path}:{number}: missing or empty "question" string')
        questions.append(question.strip())
    if not questions:
        raise UsageError(f"{path}: no questions in the file")
    return questions[:limit] if limit else questions


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be within 0..100, got {p}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def topk_overlap(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> float:
    """Mean over questions of |top-k(a) ∩ top-k(b)| / k, with k the longer of the two lists."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} result lists against {len(b)}")
    if not a:
        return 0.0
    scores = []
    for x, y in zip(a, b, strict=True):
        k = max(len(x), len(y))
        scores.append(len(set(x) & set(y)) / k if k else 1.0)
    return sum(scores) / len(scores)


def rank1_agreement(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> float:
    """Share of questions whose best hit is the same in both (two empty lists agree)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} result lists against {len(b)}")
    if not a:
        return 0.0
    same = sum((x[0] if x else None) == (y[0] if y else None) for x, y in zip(a, b, strict=True))
    return same / len(a)


def chunk_parity(a: Mapping[str, Sequence[str]], b: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Chunks identical in text and source, counted as multisets per source (storage order does
    not matter), over the larger of the two totals."""
    identical = 0
    for source in set(a) | set(b):
        common = Counter(a.get(source, ())) & Counter(b.get(source, ()))
        identical += sum(common.values())
    total_a = sum(len(v) for v in a.values())
    total_b = sum(len(v) for v in b.values())
    total = max(total_a, total_b)
    return {
        "identical": identical,
        "total": total,
        RAG: total_a,
        BASE: total_b,
        "ratio": identical / total if total else 1.0,
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "mean_ms": sum(seconds) / len(seconds) * 1000,
        "samples": len(seconds),
    }


def goal_checks(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The comparison's goals, each with the measured value and whether it is met (reported,
    never asserted: timings on a shared machine are noisy)."""
    checks = [
        ("chunk parity = 100%", report["chunk_parity"], report["chunk_parity"] == 1.0),
        ("rank-1 agreement = 100%", report["rank1_agreement"], report["rank1_agreement"] == 1.0),
    ]
    ing, lat = report.get("ingest_ratio"), report.get("latency_ratio")
    checks.append(("rag_app ingestion >= 0.9x hand-rolled", ing, ing is not None and ing >= 0.9))
    checks.append(
        ("rag_app retrieval p50 <= 1.2x hand-rolled", lat, lat is not None and lat <= 1.2)
    )
    gen = report.get("generation")
    if gen:
        speedup = gen[RAG]["speedup"]
        checks.append(
            (f"batched generation >= 3x one-by-one ({gen['questions']} q)", speedup, speedup >= 3)
        )
    return [{"goal": g, "value": v, "met": bool(m)} for g, v, m in checks]


# ---------------------------------------------------------------- the run


def _noop(message: str) -> None:
    pass


def _tutorial_settings(settings: Settings, name: str) -> Settings:
    """The profile's models, chunking, top_k and sampling, with the tutorial's retrieval: dense
    only, no BM25 index (a profile may default to hybrid, which the baseline does not do)."""
    out = settings.model_copy(deep=True)
    out.milvus.collection = name
    out.milvus.enable_bm25 = False
    out.retrieval.mode = "dense"
    return out


def run_compare(
    settings: Settings,
    corpus: Path | str,
    questions: Sequence[str],
    *,
    generate: bool = True,
    generate_limit: int | None = 16,
    repeat: int = 3,
    embed_model: Any = None,
    llm: Any = None,
    say: Callable[[str], None] = _noop,
    ingest_progress: Any = None,
) -> dict[str, Any]:
    """Ingest ``corpus`` with both pipelines, run ``questions`` through both, measure."""
    from rag_app.app import RagApp
    from rag_app.baseline import HandRolledRag
    from rag_app.readers import check_root
    from rag_app.store import DOC_ID_FIELD, TEXT_FIELD, iter_rows

    corpus = check_root(corpus)
    if not questions:
        raise UsageError("no questions to compare on")
    if repeat < 1:
        raise UsageError(f"repeat must be at least 1, got {repeat}")
    name = settings.milvus.collection
    rag_settings = _tutorial_settings(settings, f"{name}_compare")
    base_settings = _tutorial_settings(settings, f"{name}_compare_baseline")
    app = RagApp(rag_settings, embed_model=embed_model, llm=llm)
    base = HandRolledRag(base_settings, collection=base_settings.milvus.collection)
    top_k = settings.retrieval.top_k
    report: dict[str, Any] = {
        "corpus": str(corpus),
        "questions": len(questions),
        "top_k": top_k,
        "collections": {RAG: rag_settings.milvus.collection, BASE: base.collection},
    }
    try:
        say("loading the embedding model for both pipelines")
        # A full batch of chunk-sized texts, so neither pays first-batch costs inside its timing.
        warm = [("warm up the encoder " * 30)[: 400 + i] for i in range(64)]
        app.embed_model.get_text_embedding_batch(warm)
        base.embed(warm)

        # -- ingestion: from nothing to a searchable collection, models already loaded.
        say(f"ingesting {corpus} with rag_app")
        t0 = time.perf_counter()
        rag_ingest = app.ingest(corpus, recreate=True, progress=ingest_progress)
        rag_s = time.perf_counter() - t0
        say(f"ingesting {corpus} with the hand-rolled pipeline")
        base_ingest = base.ingest(corpus)
        rag_rate = ratio(rag_ingest.chunks_inserted, rag_s) or 0.0
        base_rate = base_ingest.chunks_per_second
        report["ingest"] = {
            RAG: {
                "seconds": rag_s,
                "chunks": rag_ingest.chunks_inserted,
                "chunks_per_s": rag_rate,
                "files": rag_ingest.files_seen - len(rag_ingest.skipped),
                "skipped": len(rag_ingest.skipped),
            },
            BASE: {
                "seconds": base_ingest.total_seconds,
                "chunks": base_ingest.chunks,
                "chunks_per_s": base_rate,
                "files": base_ingest.files,
                "skipped": len(base_ingest.skipped),
            },
        }
        report["ingest_ratio"] = ratio(rag_rate, base_rate)

        # -- chunk parity: what each collection holds.
        stored: dict[str, list[str]] = {}
        client = app.vector_store.client
        for row in iter_rows(client, rag_settings.milvus.collection, [TEXT_FIELD, DOC_ID_FIELD]):
            stored.setdefault(row[DOC_ID_FIELD], []).append(row[TEXT_FIELD])
        parity = chunk_parity(stored, base_ingest.chunk_texts)
        report["chunks"] = parity
        report["chunk_parity"] = parity["ratio"]

        # -- retrieval: agreement, then warm latency (interleaved, so load changes hit both).
        say(f"retrieving top-{top_k} for {len(questions)} questions x {repeat} with both")
        retriever = app.retriever()
        retriever.retrieve(questions[0])
        base.retrieve(questions[0])
        rag_hits: list[list[str]] = []
        base_hits: list[list[str]] = []
        rag_times: list[float] = []
        base_times: list[float] = []
        for round_ in range(repeat):
            for q in questions:
                t0 = time.perf_counter()
                hits = retriever.retrieve(q)
                rag_times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                bhits = base.retrieve(q)
                base_times.append(time.perf_counter() - t0)
                if round_ == 0:
                    rag_hits.append([h.node.get_content() for h in hits])
                    base_hits.append([h.text for h in bhits])
        report["rank1_agreement"] = rank1_agreement(rag_hits, base_hits)
        report["topk_overlap"] = topk_overlap(rag_hits, base_hits)
        report["retrieval"] = {RAG: latency_stats(rag_times), BASE: latency_stats(base_times)}
        report["latency_ratio"] = ratio(
            report["retrieval"][RAG]["p50_ms"], report["retrieval"][BASE]["p50_ms"]
        )

        report["generation"] = None
        if generate:
            report["generation"] = _compare_generation(
                app, base, list(questions[:generate_limit] if generate_limit else questions), say
            )
    finally:
        base.close()
        if llm is not None:
            app.__dict__.pop("llm", None)  # the caller's engine: theirs to close, not ours
        app.close()
    return report


def _compare_generation(
    app: Any, base: Any, questions: list[str], say: Callable[[str], None]
) -> dict[str, Any]:
    engine = getattr(app.llm, "engine", None)
    if engine is None:
        raise UsageError(
            "comparing generation needs the in-process vLLM backend (llm.backend=vllm); "
            "pass --no-generate to compare ingestion and retrieval only"
        )
    say("starting vLLM (shared by both pipelines)")
    base._engine = engine  # one engine: generation compares prompts and pipelines, not engines
    base.generate(["Say hello."])  # warm-up
    tokenizer = engine.get_tokenizer()

    def tokens(texts: Sequence[str]) -> int:
        return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)

    qe = app.query_engine()
    n = len(questions)
    runs: dict[str, dict[str, Any]] = {RAG: {}, BASE: {}}
    answers: dict[str, dict[str, list[str]]] = {RAG: {}, BASE: {}}
    reset = getattr(engine, "reset_prefix_cache", None)

    def timed(who: str, key: str, fn: Callable[[], list[str]]) -> None:
        # Every run starts from an empty prefix cache: otherwise later runs reuse the earlier
        # runs' prompt prefills and look faster (and sample from slightly different numerics).
        if reset:
            reset()
        label = "all submitted at once" if key == "batched" else "one by one"
        say(f"generating {n} answers, {label}, with {LABELS[who]}")
        t0 = time.perf_counter()
        answers[who][key] = fn()
        runs[who][f"{key}_s"] = time.perf_counter() - t0

    rag_prompts: list[str] = []
    base_prompts: list[str] = []

    def rag_batched() -> list[str]:
        responses = qe.query_batch(questions)
        rag_prompts.extend(str((r.metadata or {}).get("prompt", "")) for r in responses)
        return [str(r.response).strip() for r in responses]

    def base_batched() -> list[str]:
        out = base.answer_batch(questions)
        base_prompts.extend(
            base.prompt(q, hits) for q, (_, hits) in zip(questions, out, strict=True)
        )
        return [a for a, _ in out]

    timed(RAG, "batched", rag_batched)
    timed(BASE, "batched", base_batched)
    timed(RAG, "sequential", lambda: [str(qe.query(q).response).strip() for q in questions])
    timed(BASE, "sequential", lambda: [base.answer(q)[0] for q in questions])

    for who, run in runs.items():
        run["batched_qps"] = n / run["batched_s"]
        run["sequential_qps"] = n / run["sequential_s"]
        run["speedup"] = run["batched_qps"] / run["sequential_qps"]
        run["batched_tokens"] = tokens(answers[who]["batched"])
        run["batched_tokens_per_s"] = run["batched_tokens"] / run["batched_s"]
        run["sequential_tokens"] = tokens(answers[who]["sequential"])
        run["sequential_tokens_per_s"] = run["sequential_tokens"] / run["sequential_s"]
    same = sum(
        x == y for x, y in zip(answers[RAG]["batched"], answers[BASE]["batched"], strict=True)
    )
    same_seq = sum(
        x == y for x, y in zip(answers[RAG]["sequential"], answers[BASE]["sequential"], strict=True)
    )
    return {
        "questions": n,
        "identical_prompts": sum(a == b for a, b in zip(rag_prompts, base_prompts, strict=True)),
        RAG: runs[RAG],
        BASE: runs[BASE],
        "identical_answers_batched": same,
        "identical_answers_sequential": same_seq,
        "answers": [
            {"question": q, RAG: a, BASE: b}
            for q, a, b in zip(
                questions, answers[RAG]["batched"], answers[BASE]["batched"], strict=True
            )
        ],
    }


# ---------------------------------------------------------------- presentation


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, rag_app, hand-rolled, comparison) rows."""
    ing, ret, ch = report["ingest"], report["retrieval"], report["chunks"]
    rows = [
        ("chunks", str(ch[RAG]), str(ch[BASE]), f"{ch['identical']}/{ch['total']} identical"),
        ("chunk parity", "", "", _fmt(report["chunk_parity"] * 100, ".1f", "%")),
        (
            "ingestion (s)",
            _fmt(ing[RAG]["seconds"], ".1f"),
            _fmt(ing[BASE]["seconds"], ".1f"),
            "",
        ),
        (
            "ingestion (chunks/s)",
            _fmt(ing[RAG]["chunks_per_s"], ".0f"),
            _fmt(ing[BASE]["chunks_per_s"], ".0f"),
            _fmt(report["ingest_ratio"], ".2f", "x"),
        ),
        (
            f"rank-1 agreement (top-{report['top_k']})",
            "",
            "",
            _fmt(report["rank1_agreement"] * 100, ".1f", "%"),
        ),
        ("top-k overlap", "", "", _fmt(report["topk_overlap"] * 100, ".1f", "%")),
        (
            "retrieval p50 (ms)",
            _fmt(ret[RAG]["p50_ms"], ".1f"),
            _fmt(ret[BASE]["p50_ms"], ".1f"),
            _fmt(report["latency_ratio"], ".2f", "x"),
        ),
        (
            "retrieval p95 (ms)",
            _fmt(ret[RAG]["p95_ms"], ".1f"),
            _fmt(ret[BASE]["p95_ms"], ".1f"),
            _fmt(ratio(ret[RAG]["p95_ms"], ret[BASE]["p95_ms"]), ".2f", "x"),
        ),
    ]
    gen = report.get("generation")
    if gen:
        n = gen["questions"]
        for key, label in (("batched", "all at once"), ("sequential", "one by one")):
            rows.append(
                (
                    f"generation {label}, {n} q (s)",
                    _fmt(gen[RAG][f"{key}_s"], ".1f"),
                    _fmt(gen[BASE][f"{key}_s"], ".1f"),
                    f"{gen[f'identical_answers_{key}']}/{n} identical answers"
                    + (f" ({gen['identical_prompts']}/{n} prompts)" if key == "batched" else ""),
                )
            )
            rows.append(
                (
                    f"  throughput {label} (q/s | tok/s)",
                    f"{gen[RAG][f'{key}_qps']:.2f} | {gen[RAG][f'{key}_tokens_per_s']:.0f}",
                    f"{gen[BASE][f'{key}_qps']:.2f} | {gen[BASE][f'{key}_tokens_per_s']:.0f}",
                    "",
                )
            )
        rows.append(
            (
                "batched ÷ one-by-one throughput",
                _fmt(gen[RAG]["speedup"], ".2f", "x"),
                _fmt(gen[BASE]["speedup"], ".2f", "x"),
                "",
            )
        )
    return rows


def render_table(report: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(
        title=f"rag_app vs the hand-rolled tutorial pipeline: {report['corpus']} "
        f"({report['questions']} questions, top-{report['top_k']})"
    )
    table.add_column("metric")
    table.add_column(LABELS[RAG], justify="right")
    table.add_column(LABELS[BASE], justify="right")
    table.add_column("rag_app vs hand-rolled", justify="right")
    for row in table_rows(report):
        table.add_row(*row)
    table.add_section()
    for check in goal_checks(report):
        value = check["value"]
        shown = "-" if value is None else f"{value:.2f}"
        table.add_row(
            f"goal: {check['goal']}", "", "", f"{shown} {'met' if check['met'] else 'NOT met'}"
        )
    return table


def plot(report: Mapping[str, Any], path: Path | str) -> Path:
    """A PNG with one bar panel per aspect: ingestion, retrieval, generation, agreement."""
    from rag_app.errors import require

    require("matplotlib", "plot", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = report.get("generation")
    panels = 4 if gen else 3
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4))
    colors = {RAG: "#4C72B0", BASE: "#DD8452"}
    width = 0.38

    def bars(ax: Any, groups: list[str], values: dict[str, list[float]], title: str) -> None:
        for i, who in enumerate((RAG, BASE)):
            xs = [g + (i - 0.5) * width for g in range(len(groups))]
            drawn = ax.bar(xs, values[who], width, label=LABELS[who], color=colors[who])
            ax.bar_label(drawn, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)

    ing, ret = report["ingest"], report["retrieval"]
    bars(
        axes[0],
        ["chunks/s"],
        {w: [ing[w]["chunks_per_s"]] for w in (RAG, BASE)},
        f"ingestion ({_fmt(report['ingest_ratio'], '.2f', 'x')})",
    )
    bars(
        axes[1],
        ["p50", "p95"],
        {w: [ret[w]["p50_ms"], ret[w]["p95_ms"]] for w in (RAG, BASE)},
        f"retrieval latency, ms ({_fmt(report['latency_ratio'], '.2f', 'x')} at p50)",
    )
    if gen:
        bars(
            axes[2],
            ["all at once", "one by one"],
            {w: [gen[w]["batched_qps"], gen[w]["sequential_qps"]] for w in (RAG, BASE)},
            f"generation, questions/s ({gen['questions']} q)",
        )
    agree = axes[-1]
    names = ["chunk parity", "rank-1", "top-k overlap"]
    vals = [
        report["chunk_parity"] * 100,
        report["rank1_agreement"] * 100,
        report["topk_overlap"] * 100,
    ]
    drawn = agree.bar(names, vals, color="#55A868")
    agree.bar_label(drawn, fmt="%.1f%%", fontsize=8)
    agree.set_ylim(0, 110)
    agree.set_title("agreement, %", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower center")
    fig.suptitle(f"rag_app vs hand-rolled: {Path(report['corpus']).name}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
