"""build_vector_store(settings, dim): a MilvusVectorStore for Milvus Lite or a Milvus server.

The same code serves a local ``.db`` file and ``http(s)://host:19530`` + token; only settings
change. On top of llama-index's store this module adds what breaks first in practice: a clear error
when the embedding dimension differs from the collection's, loading a collection that a new process
finds released, and Milvus Lite's refusal of search parameters it does not know.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.milvus import MilvusVectorStore

from rag_app.errors import BackendUnavailable, DimensionMismatchError
from rag_app.settings import Settings

log = logging.getLogger(__name__)

TEXT_FIELD = "text"
EMBEDDING_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
DOC_ID_FIELD = "doc_id"


class RagMilvusVectorStore(MilvusVectorStore):
    """MilvusVectorStore with rag_app's fixes (kept small so upgrades stay easy)."""

    # Milvus Lite reports BM25 hits as negative distances (its search is "smaller is closer"),
    # servers as positive scores; set for Lite so callers always see positive BM25 scores.
    _negate_bm25: bool = PrivateAttr(default=False)

    @classmethod
    def class_name(cls) -> str:
        return "RagMilvusVectorStore"

    def _default_search(
        self,
        query: VectorStoreQuery,
        string_expr: str,
        output_fields: list[str],
        **kwargs: Any,
    ) -> tuple[list[BaseNode], list[float], list[str]]:
        # pymilvus's search() adds "params": {} to the search-params dict it is handed, i.e.
        # to self.search_config; a later hybrid search nests that dict under "params" and
        # pymilvus refuses it ("ambiguous parameter: params"). Hand it a copy.
        kwargs.setdefault("milvus_search_config", dict(self.search_config or {}))
        return super()._default_search(query, string_expr, output_fields, **kwargs)

    def _sparse_search(
        self,
        query: VectorStoreQuery,
        string_expr: str,
        output_fields: list[str],
        **kwargs: Any,
    ) -> tuple[list[BaseNode], list[float], list[str]]:
        """BM25 search without llama-index's ``drop_ratio_search=0.2``: Milvus Lite rejects
        any value but 0 ("only drop_ratio_search=0 is supported"), and dropping a fifth of a
        short query's terms hurts BM25 on servers too, so both get exact BM25."""
        res = self.client.search(
            collection_name=self.collection_name,
            data=[query.query_str],
            anns_field=self.sparse_embedding_field,
            limit=query.similarity_top_k,
            filter=string_expr,
            output_fields=output_fields,
            search_params={"params": {"drop_ratio_search": 0.0}},
            partition_names=kwargs.get("milvus_partition_names"),
        )
        nodes, scores, ids = self._parse_from_milvus_results(res)
        if self._negate_bm25:
            scores = [-s for s in scores]
        return nodes, scores, ids


def _connect_error(settings: Settings, exc: BaseException) -> BackendUnavailable:
    where = settings.milvus_uri
    hint = (
        "check the path is writable"
        if settings.milvus.is_local
        else "check that the server is up, the URI and the token (milvus.token / RAG_MILVUS__TOKEN)"
    )
    return BackendUnavailable(f"cannot open Milvus at {where}: {exc}; {hint}")


# Milvus errors that mean "cannot reach / use the server right now" rather than a bad request.
_UNAVAILABLE_HINTS = ("connect", "unavailable", "deadline", "timeout", "released", "not loaded")


def is_unavailable_error(exc: BaseException) -> bool:
    """True for errors that a down, restarting or unreachable Milvus raises."""
    module = type(exc).__module__
    if module.startswith("grpc") or isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if module.startswith("pymilvus"):
        return any(h in str(exc).lower() for h in _UNAVAILABLE_HINTS)
    return False


def unavailable_error(settings: Settings, exc: BaseException) -> BackendUnavailable:
    return _connect_error(settings, exc)


def existing_dim(client: Any, collection: str) -> int | None:
    """The dense vector dimension of an existing collection, or None if it does not exist."""
    if not client.has_collection(collection):
        return None
    for field in client.describe_collection(collection).get("fields", []):
        if field.get("name") == EMBEDDING_FIELD:
            dim = field.get("params", {}).get("dim")
            return int(dim) if dim is not None else None
    return None


def has_bm25(client: Any, collection: str) -> bool | None:
    """Whether an existing collection has a BM25 function (None: no such collection)."""
    if not client.has_collection(collection):
        return None
    from pymilvus import FunctionType

    functions = client.describe_collection(collection).get("functions") or []
    return any(f.get("type") == FunctionType.BM25 for f in functions)


def bm25_kwargs(settings: Settings) -> dict[str, Any]:
    """MilvusVectorStore arguments for the built-in BM25 function and the hybrid ranker."""
    from llama_index.vector_stores.milvus.utils import BM25BuiltInFunction

    r = settings.retrieval
    ranker, params = (
        ("RRFRanker", {"k": r.rrf_k})
        if r.hybrid_ranker == "rrf"
        else ("WeightedRanker", {"weights": list(r.hybrid_weights)})
    )
    return {
        "enable_sparse": True,
        "sparse_embedding_field": SPARSE_FIELD,
        "sparse_embedding_function": BM25BuiltInFunction(
            input_field_names=TEXT_FIELD,
            output_field_names=SPARSE_FIELD,
            analyzer_params=settings.milvus.bm25_analyzer,
        ),
        "hybrid_ranker": ranker,
        "hybrid_ranker_params": params,
    }


def check_dimension(client: Any, settings: Settings, dim: int) -> None:
    have = existing_dim(client, settings.milvus.collection)
    if have is not None and have != dim:
        raise DimensionMismatchError(
            f"collection {settings.milvus.collection!r} at {settings.milvus_uri} holds {have}-dim "
            f"vectors, but embedding model {settings.embedding.model!r} produces {dim}-dim "
            "vectors. "
            "Use another collection (milvus.collection / RAG_MILVUS__COLLECTION), switch back to "
            f"the {have}-dim model, or drop and rebuild it with `rag-app ingest PATH --recreate`."
        )


def milvus_client_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"uri": settings.milvus_uri}
    if settings.milvus.token is not None:
        kwargs["token"] = settings.milvus.token.get_secret_value()
    if settings.milvus.db_name:
        kwargs["db_name"] = settings.milvus.db_name
    if not settings.milvus.is_local:
        kwargs["timeout"] = settings.milvus.timeout_s
    return kwargs


def build_vector_store(
    settings: Settings, dim: int, *, overwrite: bool = False
) -> RagMilvusVectorStore:
    """Open (or create) the collection named by the settings, checked against ``dim``."""
    cfg = settings.milvus
    if cfg.is_local:
        Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
        # pymilvus probes AllocTimestamp, which Lite's in-process gRPC server does not
        # implement; the client copes, but grpc logs a full traceback for each probe.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    kwargs = milvus_client_kwargs(settings)
    try:
        from pymilvus import MilvusClient

        probe = MilvusClient(**kwargs)
        if overwrite and probe.has_collection(cfg.collection):
            probe.drop_collection(cfg.collection)
        check_dimension(probe, settings, dim)
        # An existing collection keeps its schema: BM25 cannot be added to it later.
        existing = has_bm25(probe, cfg.collection)
        probe.close()
        sparse = (
            bm25_kwargs(settings) if (cfg.enable_bm25 if existing is None else existing) else {}
        )
        store = RagMilvusVectorStore(
            uri=kwargs.pop("uri"),
            token=kwargs.pop("token", ""),
            collection_name=cfg.collection,
            dim=dim,
            embedding_field=EMBEDDING_FIELD,
            text_key=TEXT_FIELD,
            doc_id_field=DOC_ID_FIELD,
            similarity_metric=cfg.metric.lower(),
            index_config={"index_type": cfg.index_type, **cfg.index_params},
            search_config=dict(cfg.search_params),
            consistency_level=cfg.consistency_level,
            batch_size=cfg.insert_batch_size,
            **sparse,
            **kwargs,
        )
    except DimensionMismatchError:
        raise
    except Exception as exc:  # pymilvus raises many types; they all mean "cannot use it"
        if type(exc).__module__.startswith(("pymilvus", "grpc", "milvus_lite")) or isinstance(
            exc, (OSError, ConnectionError)
        ):
            raise _connect_error(settings, exc) from exc
        raise
    store._negate_bm25 = cfg.is_local
    ensure_loaded(store.client, cfg.collection)
    return store


def release_local(settings: Settings) -> None:
    """Stop this process's Milvus Lite server for the settings' path. Lite holds a file lock
    on its data folder for as long as the in-process server runs (until exit otherwise), so
    another process could not open the store after we are done with it."""
    if not settings.milvus.is_local:
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - Lite is a core dependency
        return
    server_manager_instance.release_server(settings.milvus_uri)


def ensure_loaded(client: Any, collection: str) -> None:
    """A collection reopened by a new process is 'released' until loaded; searching it fails."""
    if not client.has_collection(collection):
        return
    state = client.get_load_state(collection).get("state")
    if "Loaded" not in str(state):
        log.debug("loading collection %s (state %s)", collection, state)
        client.load_collection(collection)


def collection_stats(client: Any, collection: str) -> dict[str, Any]:
    """Chunk and document counts for one collection."""
    ensure_loaded(client, collection)
    rows = client.query(collection, filter="", output_fields=["count(*)"])
    chunks = int(rows[0]["count(*)"]) if rows else 0
    docs = {r[DOC_ID_FIELD] for r in iter_rows(client, collection, [DOC_ID_FIELD])}
    return {
        "collection": collection,
        "chunks": chunks,
        "documents": len(docs),
        "dim": existing_dim(client, collection),
    }


def iter_rows(client: Any, collection: str, fields: list[str], filter: str = "", batch: int = 4096):
    """Every row's ``fields`` (plus ``id``), on Lite and servers alike.

    A query iterator, not ``id > last`` paging: a query with a limit returns *some* matching
    rows, not the lowest ids, so paging by the largest id seen skipped the rest (a 6,838-row
    collection read back as ~4,100 rows and the next ingest re-embedded the difference).
    """
    # Lite has no MVCC timestamp to hand out; pymilvus warns on every iterator it opens.
    logging.getLogger("pymilvus.orm.iterator").setLevel(logging.ERROR)
    iterator = client.query_iterator(
        collection,
        batch_size=batch,
        filter=filter or 'id != ""',
        output_fields=["id", *fields],
    )
    try:
        while rows := iterator.next():
            # pymilvus hands back a lazy list that fills in dynamic fields by position on
            # access; plain dicts keep each row's metadata with its own row.
            yield from (dict(r) for r in rows)
    finally:
        iterator.close()
