#!/usr/bin/env bash
# Install (idempotent), lint, type-check and run the whole test suite, slow real-vLLM tests included.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the fast loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV=${RAG_VENV:-.venv}
"$VENV/bin/ruff" check rag_app tests scripts
"$VENV/bin/ruff" format --check rag_app tests scripts
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"
