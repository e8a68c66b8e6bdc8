"""build_retriever(...): top-k retrieval over the Milvus index, by mode, with metadata filters."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.retrievers import VectorIndexRetriever
from llama_index.core.vector_stores.types import VectorStoreQueryMode

from rag_app.errors import UsageError
from rag_app.filters import where_to_expr
from rag_app.settings import RetrievalMode, Settings

log = logging.getLogger(__name__)

QUERY_MODES: dict[str, VectorStoreQueryMode] = {
    "dense": VectorStoreQueryMode.DEFAULT,
    "bm25": VectorStoreQueryMode.TEXT_SEARCH,
    "hybrid": VectorStoreQueryMode.HYBRID,
}


@functools.lru_cache(maxsize=32)
def _warn_dense_fallback(collection: str, mode: str) -> None:
    log.warning(
        "collection %r has no BM25 index, so retrieval.mode=%s falls back to dense; "
        "re-ingest with --recreate to enable bm25/hybrid",
        collection,
        mode,
    )


def build_retriever(
    index: VectorStoreIndex,
    embed_model: Any,
    settings: Settings,
    *,
    top_k: int | None = None,
    mode: RetrievalMode | str | None = None,
    where: str | Iterable[str] | None = None,
    reranker: Any = None,
) -> BaseRetriever:
    """A retriever for one mode; with ``retrieval.rerank_model`` set, its top-k hits are
    reordered by the cross-encoder ``reranker`` (built here when not given) and cut to
    ``retrieval.rerank_top_n``."""
    asked = mode
    mode = mode or settings.retrieval.mode
    if mode not in QUERY_MODES:
        raise UsageError(f"unknown retrieval mode {mode!r}; choose one of {', '.join(QUERY_MODES)}")
    store = index.vector_store
    if mode != "dense" and not getattr(store, "enable_sparse", False) and asked is None:
        # Only the profile's default asked for BM25: a collection made before BM25 was
        # enabled keeps working (dense) instead of failing every query.
        _warn_dense_fallback(settings.milvus.collection, mode)
        mode = "dense"
    if mode != "dense" and not getattr(store, "enable_sparse", False):
        raise UsageError(
            f"mode {mode!r} needs the collection's BM25 index, but collection "
            f"{settings.milvus.collection!r} was created without one (dense only). Re-ingest "
            "with `rag-app ingest PATH --recreate` and milvus.enable_bm25: true, or use "
            "--mode dense"
        )
    kwargs: dict[str, Any] = {}
    expr = where_to_expr(where)
    if expr:
        kwargs["string_expr"] = expr
    k = top_k or settings.retrieval.top_k
    if k < 1:
        raise UsageError(f"top_k must be at least 1, got {k}")
    retriever = VectorIndexRetriever(
        index=index,
        similarity_top_k=k,
        sparse_top_k=k,
        embed_model=embed_model,
        vector_store_query_mode=QUERY_MODES[mode],
        vector_store_kwargs=kwargs,
    )
    if not settings.retrieval.rerank_model:
        return retriever
    from rag_app.rerank import RerankingRetriever, build_reranker

    reranker = reranker or build_reranker(settings)
    return RerankingRetriever(retriever, reranker, min(settings.retrieval.rerank_top_n or k, k))
