"""Optional cross-encoder reranking: re-score the retrieved chunks with a local model.

Off by default (retrieval.rerank_model: null). A cross-encoder reads question and chunk
together, so it orders better than the bi-encoder's cosine, at a cost per chunk; retrieve a
wider top_k and keep the best rerank_top_n.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_app.errors import ModelNotFoundError, require
from rag_app.settings import Settings


def build_reranker(settings: Settings, top_n: int | None = None) -> Any:
    """A SentenceTransformerRerank over ``retrieval.rerank_model``, or None when unset."""
    cfg = settings.retrieval
    if not cfg.rerank_model:
        return None
    path = Path(cfg.rerank_model).expanduser()
    if not path.is_dir():
        raise ModelNotFoundError(
            f"retrieval.rerank_model {cfg.rerank_model!r} is not a folder; give the path of a "
            "local cross-encoder (saved with save_pretrained) or set it to null"
        )
    require("sentence_transformers", "cpu", "sentence-transformers")
    from llama_index.core.postprocessor import SentenceTransformerRerank

    return SentenceTransformerRerank(
        model=str(path),
        top_n=top_n or cfg.rerank_top_n or cfg.top_k,
        device=settings.embedding.device,
        trust_remote_code=False,
    )


class RerankingRetriever(BaseRetriever):
    """Retrieve with ``inner``, then let ``reranker`` reorder (and truncate) the hits."""

    def __init__(self, inner: BaseRetriever, reranker: Any, top_n: int) -> None:
        super().__init__()
        self.inner = inner
        self.reranker = reranker
        self.top_n = top_n

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.inner.retrieve(query_bundle)
        # top_n lives on the shared postprocessor; set it per call so one loaded model
        # serves retrievers with different top_k.
        self.reranker.top_n = self.top_n
        return list(self.reranker.postprocess_nodes(hits, query_bundle=query_bundle))
