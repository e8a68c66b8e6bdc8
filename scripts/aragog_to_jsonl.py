#!/usr/bin/env python
"""Convert ARAGOG's benchmark.json into a `rag-app eval` question set (JSONL).

benchmark.json is {"questions": [...], "ground_truths": [...]} (parallel lists) and does NOT say
which paper answers which question, so the output is an ANSWER-ONLY set: no gold_sources, the
ground truth as `answer`, and `answer_keywords` derived from it (below). Questions about the
GLM-130B paper are skipped: its PDF is not in aragog/papers.

answer_keywords: the ground truth's distinctive terms — numbers and tokens with a digit
("8.3", "110M", "GSM8K"), acronyms and mixed-case names ("MLM", "RoBERTa"), and other words of
at least 5 letters that are not common English/question words — deduplicated case-insensitively,
in order, at most --max-keywords. `rag-app eval` scores them as whole words, case-insensitively,
in the retrieved context (ctx_kw_recall@k) and in generated answers.

    python scripts/aragog_to_jsonl.py ../shared/data/aragog/benchmark.json \
        -o examples/questions/aragog.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

MISSING_PAPERS = ("GLM-130B",)

_STOP_TEXT = """
    about above across after again against along also although among another around based
    because been before being below between both cannot could different does doing during each
    either every further given having however including into itself large larger least less
    like many more most much must other others over same several should since such than that
    their them then there these they this those through thus under until upon using various
    very were what when where whether which while within without would your specific
    significantly significant particularly approach model models performance compared
    ability allows allowing provides providing through improved improves improvement results
"""
STOPWORDS = set(_STOP_TEXT.split())

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+]*[A-Za-z0-9%]|[A-Za-z0-9]")


def keywords(answer: str, limit: int = 8) -> list[str]:
    """Distinctive terms of a ground-truth answer (see the module docstring)."""
    out: list[str] = []
    seen: set[str] = set()
    for tok in _TOKEN.findall(answer):
        tok = tok.strip(".-")
        low = tok.lower()
        if not tok or low in seen or low in STOPWORDS:
            continue
        has_digit = any(ch.isdigit() for ch in tok)
        caps = sum(ch.isupper() for ch in tok)
        is_name = caps >= 2 or (caps == 1 and not tok[0].isupper())
        if has_digit or is_name or (tok.isalpha() and len(tok) >= 5):
            seen.add(low)
            out.append(tok)
        if len(out) >= limit:
            break
    return out


def convert(benchmark: Path, max_keywords: int = 8) -> tuple[list[dict[str, object]], int]:
    data = json.loads(benchmark.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not {"questions", "ground_truths"} <= set(data):
        raise SystemExit(f"{benchmark}: expected an object with 'questions' and 'ground_truths'")
    questions, truths = data["questions"], data["ground_truths"]
    if len(questions) != len(truths):
        raise SystemExit(f"{benchmark}: {len(questions)} questions but {len(truths)} ground truths")
    rows: list[dict[str, object]] = []
    skipped = 0
    for q, a in zip(questions, truths, strict=True):
        q, a = str(q).strip(), str(a).strip()
        if any(name in q or name in a for name in MISSING_PAPERS):
            skipped += 1
            continue
        rows.append({"question": q, "answer": a, "answer_keywords": keywords(a, max_keywords)})
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmark", type=Path, help="aragog/benchmark.json")
    ap.add_argument("-o", "--out", type=Path, help="Output .jsonl (default: stdout)")
    ap.add_argument("--max-keywords", type=int, default=8)
    args = ap.parse_args(argv)
    if not args.benchmark.is_file():
        print(f"error: {args.benchmark} does not exist", file=sys.stderr)
        return 2
    rows, skipped = convert(args.benchmark, args.max_keywords)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(
        f"{len(rows)} questions written, {skipped} skipped (GLM-130B paper not in the corpus)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
