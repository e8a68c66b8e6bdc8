"""The HTTP API: ``create_app(settings | RagApp)`` -> FastAPI; ``rag-app serve`` runs it.

Concurrency: the in-process vLLM engine and Milvus Lite must not be driven from many threads at
once, so every call into the RagApp runs in a worker thread under one lock (embedded backends
only), and concurrent /v1/query requests are gathered for ``server.batch_window_ms`` into one
``query_batch`` call: that is where throughput comes from (vLLM batches the generations; with
``vllm serve`` the batch is sent concurrently and the server batches it). The event loop never
blocks.

Faults: before touching a Milvus server or an LLM server, a TCP probe (``server.probe_timeout_s``)
turns "down" into an immediate 503 naming the backend; after a Milvus failure the store is
reopened (and the collection loaded again) on the next request, so the API recovers by itself.
"""

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from rag_app.errors import BackendUnavailable, RagAppError, UsageError, require
from rag_app.settings import Settings

log = logging.getLogger(__name__)

TOKEN_ENV = "RAG_API_TOKEN"


# ---------------------------------------------------------------- pure helpers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, allow_remote: bool) -> None:
    """Refuse an unauthenticated API on a non-loopback address unless told otherwise."""
    if token or allow_remote or is_loopback(host):
        return
    raise UsageError(
        f"refusing to serve on {host} without authentication: set {TOKEN_ENV} (clients send "
        "'Authorization: Bearer <token>'), bind 127.0.0.1, or pass --allow-remote "
        "(server.allow_remote) on a trusted network"
    )


def resolve_under_roots(path: str, roots: list[Path]) -> Path:
    """``path`` with symlinks resolved, if it lies under one of ``roots``; else PermissionError."""
    if not roots:
        raise PermissionError(
            "server-side ingest is disabled: no server.allowed_roots configured "
            "(RAG_SERVER__ALLOWED_ROOTS='[/data/docs]')"
        )
    target = Path(path).expanduser().resolve()
    for root in roots:
        if target.is_relative_to(Path(root).expanduser().resolve()):
            return target
    raise PermissionError(f"{path} is not under an allowed root (server.allowed_roots)")


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else default_port)
    return parsed.hostname or "127.0.0.1", port


def tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None if something accepts connections at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def grouped(items: list[Any], key: Callable[[Any], Any]) -> dict[Any, list[int]]:
    """Indices of ``items`` grouped by ``key``, groups in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return groups


# ---------------------------------------------------------------- backends


class Backends:
    """The RagApp plus what the API needs around it: locking, probes, recovery."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.settings: Settings = app.settings
        cfg = self.settings
        self.embedded = cfg.milvus.is_local or cfg.llm.backend == "vllm"
        # One lane into the in-process engine / Milvus Lite; server backends take concurrency.
        self._lock: Any = threading.RLock() if self.embedded else contextlib.nullcontext()
        self._store_dirty = False

    # -- probes

    def milvus_problem(self) -> str | None:
        cfg = self.settings
        if cfg.milvus.is_local:
            return None
        where = tcp_probe(*host_port(cfg.milvus.uri, 19530), cfg.server.probe_timeout_s)
        return None if where is None else f"Milvus at {cfg.milvus.uri} is unreachable ({where})"

    def llm_problem(self, deep: bool = False) -> str | None:
        cfg = self.settings.llm
        if cfg.backend != "openai" or not cfg.base_url:
            return None
        where = tcp_probe(*host_port(cfg.base_url, 80), self.settings.server.probe_timeout_s)
        if where is not None:
            return f"LLM server at {cfg.base_url} is unreachable ({where})"
        if deep:
            try:
                self.app.llm.ping()
            except BackendUnavailable as exc:
                return str(exc)
        return None

    def readiness(self) -> dict[str, str]:
        milvus = self.milvus_problem()
        # Milvus Lite runs in-process: once open it stays up, so don't queue behind a batch
        # holding the lock just to look at it again.
        opened = self.settings.milvus.is_local and "vector_store" in self.app.__dict__
        if milvus is None and not opened:
            try:
                with self.using(llm=False):
                    self.app.vector_store  # noqa: B018 - opens (and loads) the collection
            except BackendUnavailable as exc:
                milvus = str(exc)
        return {"milvus": milvus or "ok", "llm": self.llm_problem(deep=True) or "ok"}

    # -- access

    @contextlib.contextmanager
    def using(self, llm: bool = True) -> Iterator[Any]:
        """Run RagApp work: fail fast on a down backend, map errors, reopen after failures."""
        problem = self.milvus_problem() or (self.llm_problem() if llm else None)
        if problem:
            if "Milvus" in problem:
                self._store_dirty = True
            raise BackendUnavailable(problem)
        with self._lock:
            if self._store_dirty:
                self._reset_store()
            try:
                yield self.app
            except BackendUnavailable:
                if not self.settings.milvus.is_local:
                    self._store_dirty = True
                raise
            except Exception as exc:
                from rag_app.store import is_unavailable_error, unavailable_error

                if not is_unavailable_error(exc):
                    raise
                self._store_dirty = not self.settings.milvus.is_local
                raise unavailable_error(self.settings, exc) from exc

    def _reset_store(self) -> None:
        store = self.app.__dict__.pop("vector_store", None)
        self.app.__dict__.pop("index", None)
        if store is not None:
            with contextlib.suppress(Exception):
                store.client.close()
        self._store_dirty = False
        log.info("reopening Milvus at %s", self.settings.milvus_uri)


# ---------------------------------------------------------------- micro-batcher


@dataclass
class QueryJob:
    question: str
    top_k: int | None
    mode: str | None
    where: tuple[str, ...] | None
    future: asyncio.Future[Any]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.top_k, self.mode, self.where)


class QueryBatcher:
    """Collects concurrent questions for a few ms, answers them with one query_batch call."""

    def __init__(self, backends: Backends, window_s: float, max_batch: int, observe: Any) -> None:
        self.backends, self.window_s, self.max_batch = backends, window_s, max_batch
        self.observe = observe
        self.queue: asyncio.Queue[QueryJob] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, question: str, top_k: Any, mode: Any, where: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(QueryJob(question, top_k, mode, where, future))
        return await future

    async def _loop(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.observe(len(batch))
            try:
                results = await asyncio.to_thread(self._run, batch)
            except Exception as exc:
                results = [exc] * len(batch)
            for job, result in zip(batch, results, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _run(self, batch: list[QueryJob]) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        for (top_k, mode, where), idx in grouped(batch, lambda j: j.key).items():
            try:
                with self.backends.using() as app:
                    answers = app.query_batch([batch[i].question for i in idx], top_k, mode, where)
                for i, answer in zip(idx, answers, strict=True):
                    results[i] = answer
            except Exception as exc:
                for i in idx:
                    results[i] = exc
        return results


# ---------------------------------------------------------------- ingest jobs


@dataclass
class IngestJob:
    id: str
    source: str
    status: Literal["queued", "running", "done", "failed"] = "queued"
    files_total: int = 0
    files_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    # the ingest progress protocol
    def start(self, files: int, chunks: int) -> None:
        self.files_total, self.chunks_total = files, chunks

    def advance(self, files: int = 0, chunks: int = 0) -> None:
        self.files_done += files
        self.chunks_done += chunks

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- metrics


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rag_request_seconds",
            "Request latency",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
            registry=self.registry,
        )
        self.tokens = Counter(
            "rag_generated_tokens", "Answer tokens generated", registry=self.registry
        )
        self.batch = Histogram(
            "rag_query_batch_size",
            "Questions per batched generation",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


def count_tokens(llm: Any, text: str) -> int:
    tokenizer = getattr(llm, "_engine", None) and llm.tokenizer
    if tokenizer is not None:
        return len(tokenizer.encode(text, add_special_tokens=False))
    return len(text.split())  # server LLMs: words, close enough for a rate


# ---------------------------------------------------------------- the app


def create_app(source: Any, *, token: str | None = None) -> Any:
    """The FastAPI app over ``source`` (a Settings, or a RagApp with its parts already built).
    ``token``: bearer token required on every /v1 route (default: $RAG_API_TOKEN)."""
    require("fastapi", "server", "fastapi uvicorn")
    import os

    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from pydantic import BaseModel, Field
    from starlette.datastructures import UploadFile as StarletteUpload

    from rag_app.app import RagApp

    rag = RagApp(source) if isinstance(source, Settings) else source
    settings: Settings = rag.settings
    scfg = settings.server
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    backends = Backends(rag)
    metrics = Metrics()
    jobs: dict[str, IngestJob] = {}

    def validation_error(loc: str, msg: str) -> RequestValidationError:
        return RequestValidationError(
            [{"loc": ("body", loc), "msg": msg, "type": "value_error", "input": None}]
        )

    class Retrieval(BaseModel):
        question: str = Field(min_length=1)
        top_k: int | None = Field(None, ge=1)
        mode: Literal["dense", "bm25", "hybrid"] | None = None
        where: list[str] | str | None = None

        def check(self) -> None:
            if len(self.question) > scfg.max_question_chars:
                raise validation_error(
                    "question",
                    f"at most {scfg.max_question_chars} characters (server.max_question_chars)",
                )
            if self.top_k is not None and self.top_k > scfg.max_top_k:
                raise validation_error("top_k", f"at most {scfg.max_top_k} (server.max_top_k)")

        def where_key(self) -> tuple[str, ...] | None:
            if self.where is None:
                return None
            return (self.where,) if isinstance(self.where, str) else tuple(self.where)

    class QueryRequest(Retrieval):
        stream: bool = False

    class ChatMessageIn(BaseModel):
        role: Literal["system", "user", "assistant", "tool"]
        content: str

    class ChatRequest(BaseModel):
        model: str | None = None
        messages: list[ChatMessageIn] = Field(min_length=1)
        stream: bool = False
        top_k: int | None = Field(None, ge=1)

    class IngestRequest(BaseModel):
        path: str = Field(min_length=1)
        prune: bool = True

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    api = FastAPI(title="rag_app", version="0.1.0", lifespan=lifespan)
    batcher = QueryBatcher(
        backends, scfg.batch_window_ms / 1000, scfg.max_batch, metrics.batch.observe
    )
    api.state.rag, api.state.backends, api.state.jobs = rag, backends, jobs

    def authorize(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorize)]

    @api.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @api.exception_handler(BackendUnavailable)
    async def unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @api.exception_handler(RagAppError)
    async def rag_error(_: Request, exc: RagAppError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400 if exc.exit_code == 2 else 500)

    @api.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # -- health

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", dependencies=auth)
    async def readyz() -> JSONResponse:
        checks = await run_in_threadpool(backends.readiness)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @api.get("/metrics", dependencies=auth)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # -- retrieval and answers

    def chunks(sources: list[Any]) -> list[dict[str, Any]]:
        return [s.to_dict() for s in sources]

    @api.post("/v1/retrieve", dependencies=auth)
    async def retrieve(req: Retrieval) -> dict[str, Any]:
        req.check()

        def work() -> list[Any]:
            with backends.using(llm=False) as app:
                return list(app.retrieve(req.question, req.top_k, req.mode, req.where_key()))

        hits = await run_in_threadpool(work)
        return {"question": req.question, "sources": chunks(hits)}

    def stream_tokens(req: Retrieval, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[Any]:
        """Retrieve, then stream the LLM's tokens from a worker thread into a queue:
        ("token", text)..., then ("sources", [...]) or ("error", exc), then None."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                with backends.using() as app:
                    engine = app.query_engine(req.top_k, req.mode, req.where_key())
                    hits, prompt = engine.prepare(req.question)
                    text = []
                    for chunk in app.llm.stream_complete(prompt):
                        if chunk.delta:
                            text.append(chunk.delta)
                            put(("token", chunk.delta))
                    metrics.tokens.inc(count_tokens(app.llm, "".join(text)))
                from rag_app.engine import SourceChunk

                put(("sources", [SourceChunk.from_node(h).to_dict() for h in hits]))
            except Exception as exc:
                put(("error", exc))
            finally:
                put(None)

        threading.Thread(target=work, daemon=True, name="rag-stream").start()
        return queue

    def error_payload(exc: BaseException) -> dict[str, Any]:
        status = 503 if isinstance(exc, BackendUnavailable) else 500
        return {"status": status, "detail": str(exc) or type(exc).__name__}

    @api.post("/v1/query", dependencies=auth)
    async def query(req: QueryRequest) -> Any:
        req.check()
        if not req.stream:
            answer = await batcher.submit(req.question, req.top_k, req.mode, req.where_key())
            metrics.tokens.inc(count_tokens(rag.llm, answer.answer))
            return answer.to_dict()
        # Fail before the 200 header goes out when a backend is known to be down.
        problem = backends.milvus_problem() or backends.llm_problem()
        if problem:
            raise BackendUnavailable(problem)
        queue = stream_tokens(req, asyncio.get_running_loop())

        async def events() -> AsyncIterator[str]:
            while (item := await queue.get()) is not None:
                kind, data = item
                if kind == "token":
                    yield sse("token", {"delta": data})
                elif kind == "sources":
                    yield sse("sources", {"sources": data})
                else:
                    yield sse("error", error_payload(data))
            yield sse("done", {})

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(req: ChatRequest) -> Any:
        users = [m.content for m in req.messages if m.role == "user"]
        if not users:
            raise validation_error("messages", "needs at least one message with role 'user'")
        question = Retrieval(question=users[-1], top_k=req.top_k)
        question.check()
        model = req.model or settings.llm.model
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            answer = await batcher.submit(question.question, req.top_k, None, None)
            completion = count_tokens(rag.llm, answer.answer)
            metrics.tokens.inc(completion)
            return {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"completion_tokens": completion},
                "sources": chunks(answer.sources),
            }
        problem = backends.milvus_problem() or backends.llm_problem()
        if problem:
            raise BackendUnavailable(problem)
        queue = stream_tokens(question, asyncio.get_running_loop())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant"})
            while (item := await queue.get()) is not None:
                kind, data = item
                if kind == "token":
                    yield chunk({"content": data})
                elif kind == "sources":
                    yield chunk({}, "stop", sources=data)
                else:
                    yield f"data: {json.dumps({'error': error_payload(data)})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- ingestion

    def run_job(job: IngestJob, root: Path, prune: bool) -> None:
        job.status = "running"
        try:
            with backends.using(llm=False) as app:
                report = app.ingest(root, prune=prune, progress=job)
            job.report = report.to_dict()
            job.status = "done"
        except Exception as exc:
            log.warning("ingest job %s failed: %s", job.id, exc)
            job.error, job.status = str(exc) or type(exc).__name__, "failed"
        finally:
            job.finished = time.time()

    def launch(source: str, root: Path, prune: bool) -> dict[str, Any]:
        job = IngestJob(id=uuid.uuid4().hex[:12], source=source)
        jobs[job.id] = job
        threading.Thread(
            target=run_job, args=(job, root, prune), daemon=True, name=f"ingest-{job.id}"
        ).start()
        return {"job": job.id, "status": job.status, "url": f"/v1/jobs/{job.id}"}

    max_bytes = int(scfg.max_upload_mb * 1024 * 1024)

    async def ingest_uploads(request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise HTTPException(413, f"upload over {scfg.max_upload_mb} MB (server.max_upload_mb)")
        form = await request.form(max_part_size=max_bytes + 1)
        files = [f for f in form.getlist("files") if isinstance(f, StarletteUpload)]
        if not files:
            raise validation_error("files", "send one or more files as multipart field 'files'")
        folder = settings.home / "uploads" / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        try:
            for upload in files:
                name = Path(upload.filename or "").name
                if not name or name.startswith("."):
                    raise validation_error("files", f"bad file name {upload.filename!r}")
                with (folder / name).open("wb") as out:
                    while block := await upload.read(1 << 16):
                        total += len(block)
                        if total > max_bytes:
                            raise HTTPException(
                                413, f"upload over {scfg.max_upload_mb} MB (server.max_upload_mb)"
                            )
                        out.write(block)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return launch(f"upload:{folder.name}", folder, prune=False)

    @api.post("/v1/ingest", dependencies=auth, status_code=202)
    async def ingest(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return await ingest_uploads(request)
        try:
            body = IngestRequest.model_validate(await request.json())
        except json.JSONDecodeError as exc:
            raise validation_error("path", f"expected a JSON body {{'path': ...}}: {exc}") from exc
        except Exception as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                raise RequestValidationError(
                    [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                ) from exc
            raise
        try:
            root = resolve_under_roots(body.path, scfg.allowed_roots)
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from exc
        if not root.exists():
            raise HTTPException(404, f"{body.path} does not exist on the server")
        return launch(str(root), root, body.prune)

    @api.get("/v1/jobs/{job_id}", dependencies=auth)
    async def job_status(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job.to_dict()

    return api


def serve(
    settings: Settings, host: str, port: int, allow_remote: bool = False, log_level: str = "info"
) -> None:
    """Run the API with uvicorn (one process: the engine is not shared across workers)."""
    import os

    require("uvicorn", "server", "uvicorn")
    import uvicorn

    check_bind(host, os.environ.get(TOKEN_ENV), allow_remote or settings.server.allow_remote)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
