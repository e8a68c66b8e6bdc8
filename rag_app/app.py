"""RagApp: the Python API. Parts are built lazily from settings and passed explicitly to
LlamaIndex (never through its global ``Settings``, which silently falls back to OpenAI)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from rag_app.settings import RetrievalMode, Settings, load_settings, log_active

log = logging.getLogger(__name__)


class RagApp:
    """Ingest folders, retrieve chunks, answer questions with sources.

    >>> app = RagApp.from_profile("cpu")                  # doctest: +SKIP
    >>> app.ingest("docs/")                               # doctest: +SKIP
    >>> print(app.query("What do the parameters for HNSW mean?"))  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        *,
        embed_model: Any = None,
        llm: Any = None,
        vector_store: Any = None,
    ) -> None:
        self.settings = settings
        if embed_model is not None:
            self.__dict__["embed_model"] = embed_model
        if llm is not None:
            self.__dict__["llm"] = llm
        if vector_store is not None:
            self.__dict__["vector_store"] = vector_store
        log_active(settings)

    @classmethod
    def from_profile(
        cls, profile: str | None = None, overrides: dict[str, Any] | None = None, **parts: Any
    ) -> RagApp:
        """Settings from a profile; ``overrides`` are dotted keys, e.g.
        ``{"milvus.collection": "docs", "retrieval.top_k": 4}``."""
        return cls(load_settings(profile, overrides), **parts)

    # ---------------------------------------------------------------- parts (lazy)

    @cached_property
    def embed_model(self) -> Any:
        from rag_app.embeddings import build_embed_model

        return build_embed_model(self.settings)

    @cached_property
    def dim(self) -> int:
        from rag_app.embeddings import embedding_dim

        return embedding_dim(self.embed_model)

    @cached_property
    def vector_store(self) -> Any:
        from rag_app.store import build_vector_store

        return build_vector_store(self.settings, self.dim)

    @cached_property
    def llm(self) -> Any:
        from rag_app.llm import build_llm

        return build_llm(self.settings)

    @cached_property
    def reranker(self) -> Any:
        """The cross-encoder of retrieval.rerank_model, loaded once (None when unset)."""
        from rag_app.rerank import build_reranker

        return build_reranker(self.settings)

    @cached_property
    def index(self) -> Any:
        from llama_index.core import VectorStoreIndex

        return VectorStoreIndex.from_vector_store(self.vector_store, embed_model=self.embed_model)

    def retriever(
        self,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        where: str | Iterable[str] | None = None,
    ) -> Any:
        from rag_app.retrieval import build_retriever

        return build_retriever(
            self.index,
            self.embed_model,
            self.settings,
            top_k=top_k,
            mode=mode,
            where=where,
            reranker=self.reranker,
        )

    def query_engine(
        self,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        where: str | Iterable[str] | None = None,
    ) -> Any:
        from rag_app.engine import RagQueryEngine

        return RagQueryEngine(retriever=self.retriever(top_k, mode, where), llm=self.llm)

    # ---------------------------------------------------------------- operations

    def ingest(
        self,
        path: str | Path,
        *,
        prune: bool = True,
        strict: bool = False,
        recreate: bool = False,
        progress: Any = None,
    ) -> Any:
        """Bring the collection in line with ``path``; returns an IngestReport."""
        from rag_app.ingest import ingest_folder
        from rag_app.readers import check_root

        check_root(path)  # a usage error should not wait for the models to load

        def rebuild() -> Any:
            from rag_app.store import build_vector_store

            self.__dict__["vector_store"] = build_vector_store(
                self.settings, self.dim, overwrite=True
            )
            self.__dict__.pop("index", None)
            return self.vector_store

        return ingest_folder(
            path,
            self.settings,
            self.embed_model,
            self.vector_store,
            prune=prune,
            strict=strict,
            progress=progress,
            recreate=rebuild if recreate else None,
        )

    def retrieve(
        self,
        question: str,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        where: str | Iterable[str] | None = None,
    ) -> list[Any]:
        """Top-k chunks (SourceChunk: source, score, text), best first. No LLM involved."""
        from rag_app.engine import SourceChunk

        hits = self.retriever(top_k, mode, where).retrieve(question)
        return [SourceChunk.from_node(h) for h in hits]

    def query(
        self,
        question: str,
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        where: str | Iterable[str] | None = None,
    ) -> Any:
        """Answer with sources (an Answer: .answer, .sources, .prompt)."""
        from rag_app.engine import Answer

        response = self.query_engine(top_k, mode, where).query(question)
        return Answer.from_response(response)

    def query_batch(
        self,
        questions: Sequence[str],
        top_k: int | None = None,
        mode: RetrievalMode | None = None,
        where: str | Iterable[str] | None = None,
    ) -> list[Any]:
        """Answer many questions with one batched generation (vLLM batches them)."""
        from rag_app.engine import Answer

        engine = self.query_engine(top_k, mode, where)
        return [Answer.from_response(r) for r in engine.query_batch(questions)]

    def collections(self) -> list[dict[str, Any]]:
        """Every collection at the configured Milvus, with chunk and document counts."""
        from pymilvus import MilvusClient

        from rag_app.store import collection_stats, milvus_client_kwargs

        client = MilvusClient(**milvus_client_kwargs(self.settings))
        try:
            return [collection_stats(client, name) for name in sorted(client.list_collections())]
        finally:
            client.close()

    def delete(self, source: str) -> int:
        """Remove one document (by its source path); returns the number of chunks removed."""
        from rag_app.ingest import delete_source

        return delete_source(self.vector_store, self.settings, source)

    def close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        if llm is not None and hasattr(llm, "close"):
            llm.close()
        store = self.__dict__.pop("vector_store", None)
        if store is not None:
            from rag_app.store import release_local

            store.client.close()
            release_local(self.settings)
        self.__dict__.pop("index", None)

    def __enter__(self) -> RagApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
