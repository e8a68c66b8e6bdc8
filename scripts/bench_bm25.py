#!/usr/bin/env python
"""What BM25 costs: ingest the same corpus into a dense-only and a BM25 collection (same run,
same embedding model), then time retrieval per mode.

Milvus computes BM25 itself (analyzer + sparse inverted index), so its cost lands in the ingest
report's `write` stage; embedding is the same work in both runs. Prints a table and a JSON
line; timings on a shared machine are noisy, compare within one run only.

    python scripts/bench_bm25.py --corpus examples/corpus \
        --qa examples/questions/sample.jsonl [--home /tmp/bench-bm25]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout: this repository's rag_app, not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="examples/corpus")
    ap.add_argument("--qa", help="question set whose questions time retrieval (.jsonl)")
    ap.add_argument("--home", help="scratch RAG home (default: a temporary folder)")
    ap.add_argument("--top-k", type=int, default=10)
    args = ap.parse_args(argv)

    from rag_app.app import RagApp
    from rag_app.evaluate import load_qa
    from rag_app.settings import load_settings

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-bm25-"))
    shutil.rmtree(home / "milvus.db", ignore_errors=True)
    questions = [i.question for i in load_qa(args.qa)] if args.qa else ["What is HNSW?"]
    rows = {}
    embed_model = None
    for label, bm25 in (("dense-only", False), ("bm25", True)):
        settings = load_settings(
            None,
            {
                "home": str(home),
                "milvus.collection": f"bench_{label.replace('-', '_')}",
                "milvus.enable_bm25": bm25,
            },
        )
        with RagApp(settings, embed_model=embed_model) as app:
            embed_model = app.embed_model
            report = app.ingest(args.corpus)
            row = {
                "chunks": report.chunks_inserted,
                "ingest_s": report.total_seconds,
                "embed_s": report.seconds["embed"],
                "write_s": report.seconds["write"],
            }
            for mode in ("dense", "bm25", "hybrid") if bm25 else ("dense",):
                retriever = app.retriever(top_k=args.top_k, mode=mode)  # type: ignore[arg-type]
                retriever.retrieve(questions[0])  # warm-up (load, first-call costs)
                times = []
                for q in questions:
                    t0 = time.perf_counter()
                    retriever.retrieve(q)
                    times.append(time.perf_counter() - t0)
                row[f"{mode}_query_ms"] = 1000 * statistics.median(times)
            rows[label] = row
    base, bm = rows["dense-only"], rows["bm25"]
    ratios = {
        "write_ratio": bm["write_s"] / max(base["write_s"], 1e-9),
        "ingest_ratio": bm["ingest_s"] / max(base["ingest_s"], 1e-9),
    }
    print(
        f"corpus {args.corpus}: {base['chunks']} chunks, {len(questions)} queries", file=sys.stderr
    )
    print(
        f"{'collection':<12}{'ingest s':>10}{'embed s':>10}{'write s':>10}"
        f"{'dense ms':>10}{'bm25 ms':>10}{'hybrid ms':>11}"
    )
    for label, r in rows.items():
        cells = [f"{r.get(k, float('nan')):>10.2f}" for k in ("ingest_s", "embed_s", "write_s")]
        cells += [f"{r.get(f'{m}_query_ms', float('nan')):>10.1f}" for m in ("dense", "bm25")]
        cells.append(f"{r.get('hybrid_query_ms', float('nan')):>11.1f}")
        print(f"{label:<12}" + "".join(cells))
    print(
        f"BM25 write/dense write = {ratios['write_ratio']:.2f}x, "
        f"BM25 ingest/dense ingest = {ratios['ingest_ratio']:.2f}x"
    )
    print(json.dumps({"rows": rows, **ratios}))
    if not args.home:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
