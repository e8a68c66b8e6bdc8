#!/usr/bin/env bash
# rag_app against the hand-rolled tutorial pipeline on the Milvus docs (docs/compare.md):
# prints the table (with the goals met or not), writes docs/img/compare.png and $RAG_HOME/compare.json.
# Usage: scripts/compare.sh [CORPUS] [QUESTIONS] [extra `rag-app compare` flags...]
# Takes ~15 min on 2 CPU cores (two full ingestions, then 4 x 16 generations on vLLM CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${RAG_PYTHON:-${RAG_VENV:-.venv}/bin/python}"
CORPUS="${1:-../shared/data/milvus-docs}"
QUESTIONS="${2:-examples/questions/milvus-docs.jsonl}"
shift $(( $# > 2 ? 2 : $# ))
export RAG_HOME="${RAG_HOME:-.rag}"
exec "$PY" -m rag_app.cli compare --corpus "$CORPUS" --questions "$QUESTIONS" \
  --generate-limit 16 --repeat 3 --plot docs/img/compare.png --save "$RAG_HOME/compare.json" "$@"
