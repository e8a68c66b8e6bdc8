"""rag_app: retrieval-augmented generation on LlamaIndex, Milvus and vLLM.

Imports stay light: heavy parts (torch, vLLM, pymilvus) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Answer", "RagApp", "Settings", "SourceChunk", "load_settings"]

if TYPE_CHECKING:
    from rag_app.app import RagApp
    from rag_app.engine import Answer, SourceChunk
    from rag_app.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    if name == "RagApp":
        from rag_app.app import RagApp

        return RagApp
    if name in {"Answer", "SourceChunk"}:
        from rag_app import engine

        return getattr(engine, name)
    if name in {"Settings", "load_settings"}:
        from rag_app import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'rag_app' has no attribute {name!r}")
