"""Ingestion benchmark: rag_app vs a raw sentence-transformers + pymilvus loop, same run.

    python scripts/bench_ingest.py [CORPUS] [--limit N] [--json] [--plot docs/img/ingest_bench.png]

Three phases, each in a fresh child process (multiprocessing spawn) so that peak RSS
(ru_maxrss) and warm caches of one phase do not leak into the next:

1. rag_app: ``RagApp.ingest(CORPUS)`` into a temporary home (model load and collection creation
   are not timed; scan, read, chunk, embed and write are).
2. raw: the SAME chunks (rag_app's reader and 512/51 splitter, not timed), embedded with
   ``SentenceTransformer.encode(normalize_embeddings=True, batch_size=B)`` and written with
   ``MilvusClient.insert`` in batches into a fresh Milvus Lite collection (same HNSW index).
3. re-run: ``RagApp.ingest(CORPUS)`` again on the unchanged folder, same home.

Goals: rag_app >= 0.9x raw chunks/s; the unchanged re-run < 5% of the first run's time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "milvus-docs"
RAW_COLLECTION = "raw_bench"
# This checkout's rag_app, in this process and in the spawned children (they inherit sys.path).
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _settings(home: Path, batch: int, insert_batch: int) -> Any:
    from rag_app.settings import load_settings

    return load_settings(
        "cpu",
        {"embedding.batch_size": batch, "milvus.insert_batch_size": insert_batch},
        env={"RAG_HOME": str(home)},
    )


def _text_digest(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(sorted(texts)).encode()).hexdigest()[:16]


def _limited_corpus(corpus: Path, limit: int | None, work: Path) -> Path:
    if not limit:
        return corpus
    from rag_app.readers import iter_files

    dest = work / "corpus"
    for path in list(iter_files(corpus))[:limit]:
        target = dest / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


# ---------------------------------------------------------------- phases (child processes)


def phase_rag_app(corpus: str, home: str, batch: int, insert_batch: int) -> dict[str, Any]:
    from rag_app.app import RagApp
    from rag_app.store import TEXT_FIELD, iter_rows

    t_start = time.perf_counter()
    settings = _settings(Path(home), batch, insert_batch)
    app = RagApp(settings)
    _ = app.vector_store  # model load + collection creation: setup, not ingestion
    setup = time.perf_counter() - t_start
    t0 = time.perf_counter()
    report = app.ingest(corpus)
    wall = time.perf_counter() - t0
    client = app.vector_store.client
    texts = [r[TEXT_FIELD] for r in iter_rows(client, settings.milvus.collection, [TEXT_FIELD])]
    app.close()
    return {
        "report": report.to_dict(),
        "seconds": wall,
        "setup_seconds": setup,
        "chunks": report.chunks_inserted,
        "rows": len(texts),
        "texts_digest": _text_digest(texts),
        "peak_rss_mb": _peak_rss_mb(),
    }


def phase_raw(corpus: str, home: str, batch: int, insert_batch: int) -> dict[str, Any]:
    from pymilvus import DataType, MilvusClient
    from sentence_transformers import SentenceTransformer

    from rag_app.chunking import chunk_documents
    from rag_app.models import resolve_embedding_model
    from rag_app.readers import read_folder

    settings = _settings(Path(home), batch, insert_batch)
    # Same chunks as rag_app (its reader and splitter); not timed, the loop below is.
    docs = read_folder(corpus, settings.ingest).documents
    nodes = chunk_documents(docs, settings.chunking)
    texts = [n.get_content() for n in nodes]
    sources = [str(n.metadata.get("source", "")) for n in nodes]

    model = SentenceTransformer(resolve_embedding_model(settings), device="cpu")
    client = MilvusClient(str(Path(home) / "raw.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    dim = len(model.encode(["dimension probe"])[0])
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(
        "embedding",
        index_type=settings.milvus.index_type,
        metric_type=settings.milvus.metric,
        params=dict(settings.milvus.index_params),
    )
    client.create_collection(RAW_COLLECTION, schema=schema, index_params=index)

    t0 = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch, normalize_embeddings=True)
    t_embed = time.perf_counter() - t0
    for start in range(0, len(texts), insert_batch):
        rows = [
            {"id": i, "text": texts[i], "embedding": vectors[i].tolist(), "source": sources[i]}
            for i in range(start, min(start + insert_batch, len(texts)))
        ]
        client.insert(RAW_COLLECTION, rows)
    wall = time.perf_counter() - t0
    count = client.query(RAW_COLLECTION, filter="", output_fields=["count(*)"])[0]["count(*)"]
    client.close()
    return {
        "seconds": wall,
        "embed_seconds": t_embed,
        "write_seconds": wall - t_embed,
        "chunks": len(texts),
        "rows": int(count),
        "texts_digest": _text_digest(texts),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------- output


def summarize(first: dict[str, Any], raw: dict[str, Any], rerun: dict[str, Any]) -> dict[str, Any]:
    rag_rate = first["chunks"] / first["seconds"] if first["seconds"] else 0.0
    raw_rate = raw["chunks"] / raw["seconds"] if raw["seconds"] else 0.0
    ratio = rag_rate / raw_rate if raw_rate else 0.0
    rerun_pct = 100 * rerun["seconds"] / first["seconds"] if first["seconds"] else 0.0
    return {
        "chunks": first["chunks"],
        "same_chunks": first["texts_digest"] == raw["texts_digest"]
        and first["rows"] == raw["rows"],
        "rag_app": {
            "seconds": round(first["seconds"], 2),
            "chunks_per_s": round(rag_rate, 1),
            "stage_seconds": first["report"]["seconds"],
            "peak_rss_mb": round(first["peak_rss_mb"]),
        },
        "raw": {
            "seconds": round(raw["seconds"], 2),
            "chunks_per_s": round(raw_rate, 1),
            "stage_seconds": {
                "embed": round(raw["embed_seconds"], 3),
                "write": round(raw["write_seconds"], 3),
            },
            "peak_rss_mb": round(raw["peak_rss_mb"]),
        },
        "rerun": {
            "seconds": round(rerun["seconds"], 2),
            "pct_of_first": round(rerun_pct, 2),
            "chunks_embedded": rerun["report"]["chunks"]["embedded"],
            "chunks_inserted": rerun["report"]["chunks"]["inserted"],
            "stage_seconds": rerun["report"]["seconds"],
            "peak_rss_mb": round(rerun["peak_rss_mb"]),
        },
        "ratio_vs_raw": round(ratio, 3),
        "goals": {"ratio_ge_0.9": ratio >= 0.9, "rerun_lt_5pct": rerun_pct < 5},
    }


def print_table(result: dict[str, Any], batch: int, insert_batch: int) -> None:
    from rich.console import Console
    from rich.table import Table

    def stages(d: dict[str, float]) -> str:
        return " ".join(f"{k}={v:.2f}" for k, v in d.items() if v >= 0.005)

    table = Table(
        title=f"ingest benchmark: {result['chunks']} chunks, embed batch {batch}, "
        f"insert batch {insert_batch}"
    )
    for col in ("phase", "seconds", "chunks/s", "peak RSS MB", "stage seconds"):
        table.add_column(col, justify="left" if col in ("phase", "stage seconds") else "right")
    for name, key in (("rag_app ingest", "rag_app"), ("raw encode+insert", "raw")):
        r = result[key]
        table.add_row(
            name,
            f"{r['seconds']:.1f}",
            f"{r['chunks_per_s']:.1f}",
            str(r["peak_rss_mb"]),
            stages(r["stage_seconds"]),
        )
    r = result["rerun"]
    table.add_row(
        "rag_app re-run (unchanged)",
        f"{r['seconds']:.2f}",
        "-",
        str(r["peak_rss_mb"]),
        stages(r["stage_seconds"]),
    )
    console = Console()
    console.print(table)
    console.print(
        f"same chunks in both: {result['same_chunks']}  |  rag_app / raw chunks/s: "
        f"[bold]{result['ratio_vs_raw']:.3f}x[/] (goal >= 0.9)  |  unchanged re-run: "
        f"[bold]{r['pct_of_first']:.2f}%[/] of the first run (goal < 5%; embedded "
        f"{r['chunks_embedded']}, inserted {r['chunks_inserted']})"
    )


def plot(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    rates = [result["rag_app"]["chunks_per_s"], result["raw"]["chunks_per_s"]]
    bars = ax1.bar(["rag_app", "raw loop"], rates, color=["#4C72B0", "#999999"])
    ax1.bar_label(bars, fmt="%.1f")
    ax1.set_ylabel("chunks / s (higher is better)")
    ax1.set_title(f"throughput, {result['chunks']} chunks ({result['ratio_vs_raw']:.2f}x raw)")
    secs = [result["rag_app"]["seconds"], result["rerun"]["seconds"]]
    bars = ax2.bar(["first ingest", "unchanged re-run"], secs, color=["#4C72B0", "#55A868"])
    ax2.bar_label(bars, fmt="%.1f s")
    ax2.set_ylabel("seconds")
    ax2.set_title(f"re-run = {result['rerun']['pct_of_first']:.1f}% of first run")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS), type=Path)
    parser.add_argument("--limit", type=int, help="Only the first N files (quick check).")
    parser.add_argument("--batch-size", type=int, default=64, help="Embedding batch size.")
    parser.add_argument("--insert-batch-size", type=int, default=512, help="Milvus insert batch.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    parser.add_argument("--plot", type=Path, help="Write a bar chart PNG here.")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"error: corpus {args.corpus} is not a folder", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        corpus = str(_limited_corpus(args.corpus, args.limit, work))
        home = str(work / "home")
        b, ib = args.batch_size, args.insert_batch_size
        print(f"phase 1/3: rag_app ingest of {corpus}", file=sys.stderr)
        first = _in_child(phase_rag_app, corpus, home, b, ib)
        print("phase 2/3: raw encode + insert loop", file=sys.stderr)
        raw = _in_child(phase_raw, corpus, home, b, ib)
        print("phase 3/3: rag_app re-run on the unchanged folder", file=sys.stderr)
        rerun = _in_child(phase_rag_app, corpus, home, b, ib)

    result = summarize(first, raw, rerun)
    result["corpus"] = str(args.corpus)
    result["files"] = first["report"]["files"]["seen"]
    result["batch_size"], result["insert_batch_size"] = b, ib
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result, b, ib)
    if args.plot:
        plot(result, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
