"""Incremental, crash-safe ingestion: folder -> chunks -> embeddings -> Milvus.

The collection is its own ledger. Every chunk row carries ``doc_id`` (the source path),
``doc_hash`` (sha256 of the file bytes), ``chunk_count`` (chunks in that version of the file) and
``root_id`` (which ingested folder it came from). From those rows alone a run can tell, per file:

* unchanged  - all ``chunk_count`` rows of the current hash are there: nothing is read or embedded;
* new        - no rows: read, chunk, embed, insert;
* changed    - rows of another hash, or an incomplete set of this hash (a run killed mid-way):
               insert the new version (stable ids, upserted when partly present), then delete
               rows of other hashes. A reader never sees the document vanish;
* deleted    - rows whose file is gone from this root (with ``prune``): deleted.

Because ids derive from (collection, source, file hash, chunk index), a re-run after SIGKILL
rewrites exactly the rows a clean run would have written: no duplicates, nothing missing. There is
no side state file to drift from the collection, and the same logic works against a cluster.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llama_index.core.schema import BaseNode, MetadataMode

from rag_app.chunking import RecursiveCharacterNodeParser, stable_chunk_id
from rag_app.embeddings import embed_documents
from rag_app.errors import IngestError, StrictIngestError, UsageError
from rag_app.filters import quote
from rag_app.readers import (
    READERS,
    SUPPORTED,
    Skipped,
    check_root,
    iter_files,
    read_file,
    relative_source,
)
from rag_app.settings import Settings
from rag_app.store import DOC_ID_FIELD, iter_rows

log = logging.getLogger(__name__)

LEDGER_FIELDS = ["doc_hash", "chunk_count", "root_id"]
STAGES = ("scan", "read", "chunk", "embed", "write", "delete")


class Progress(Protocol):
    def start(self, files: int, chunks: int) -> None: ...
    def advance(self, files: int = 0, chunks: int = 0) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def start(self, files: int, chunks: int) -> None:
        pass

    def advance(self, files: int = 0, chunks: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class IngestReport:
    collection: str
    root: str
    files_seen: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_inserted: int = 0
    chunks_deleted: int = 0
    chunks_embedded: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    total_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 3 if self.skipped else 0

    @property
    def nothing_to_do(self) -> bool:
        return not (self.new or self.changed or self.deleted or self.chunks_deleted)

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_inserted / self.total_seconds if self.total_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "root": self.root,
            "files": {
                "seen": self.files_seen,
                "new": len(self.new),
                "changed": len(self.changed),
                "unchanged": self.unchanged,
                "deleted": len(self.deleted),
                "skipped": len(self.skipped),
            },
            "chunks": {
                "inserted": self.chunks_inserted,
                "deleted": self.chunks_deleted,
                "embedded": self.chunks_embedded,
            },
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "total_seconds": round(self.total_seconds, 3),
            "chunks_per_second": round(self.chunks_per_second, 1),
            "up_to_date": self.nothing_to_do,
        }

    def summary(self) -> str:
        d = self.to_dict()
        f, c = d["files"], d["chunks"]
        head = (
            "nothing to do: collection is up to date; "
            if self.nothing_to_do and not self.skipped
            else ""
        )
        # The four work stages always; scan and delete only when they took noticeable time.
        stages = " ".join(
            f"{k}={v:.1f}s"
            for k, v in self.seconds.items()
            if k in ("read", "chunk", "embed", "write") or v >= 0.05
        )
        return (
            f"{head}files: {f['seen']} seen, {f['new']} new, {f['changed']} changed, "
            f"{f['unchanged']} unchanged, {f['deleted']} deleted, {f['skipped']} skipped | "
            f"chunks: {c['inserted']} inserted, {c['deleted']} deleted | "
            f"{self.total_seconds:.1f}s ({d['chunks_per_second']:.0f} chunks/s) | {stages}"
        )


class _Timer:
    def __init__(self, report: IngestReport, stage: str):
        self.report, self.stage = report, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.report.seconds[self.stage] += time.perf_counter() - self.t0


def root_id(root: Path) -> str:
    return hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class DocState:
    """What the collection holds for one document: rows per hash, and expected counts."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    expected: dict[str, int] = field(default_factory=dict)
    root_id: str | None = None

    def complete(self, digest: str) -> bool:
        return digest in self.expected and self.counts[digest] >= self.expected[digest]


def ledger(client: Any, collection: str) -> dict[str, DocState]:
    docs: dict[str, DocState] = defaultdict(DocState)
    if not client.has_collection(collection):
        return {}
    for row in iter_rows(client, collection, [DOC_ID_FIELD, *LEDGER_FIELDS]):
        state = docs[row.get(DOC_ID_FIELD) or ""]
        digest = str(row.get("doc_hash") or "")
        state.counts[digest] += 1
        if row.get("chunk_count") is not None:
            state.expected[digest] = int(row["chunk_count"])
        state.root_id = row.get("root_id") or state.root_id
    return dict(docs)


@dataclass
class _Work:
    source: str
    path: Path
    digest: str
    upsert: bool  # rows of this exact version already exist (an interrupted run)
    nodes: list[BaseNode] = field(default_factory=list)


def _batches(work: Sequence[_Work], size: int) -> Iterator[list[tuple[_Work, BaseNode]]]:
    batch: list[tuple[_Work, BaseNode]] = []
    for item in work:
        for node in item.nodes:
            batch.append((item, node))
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def ingest_folder(
    root: Path | str,
    settings: Settings,
    embed_model: Any,
    store: Any,
    *,
    prune: bool = True,
    strict: bool = False,
    progress: Progress | None = None,
    recreate: Callable[[], Any] | None = None,
) -> IngestReport:
    """Bring the collection in line with ``root`` (a folder or one file).

    ``recreate``, if given, drops and rebuilds the collection and returns the new store; it is
    called only once every file has been read, so a ``strict`` refusal leaves the old one intact.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    root = check_root(root)
    base = root.parent if root.is_file() else root
    rid = root_id(root)
    collection = settings.milvus.collection
    client = store.client
    report = IngestReport(collection=collection, root=str(root))

    # 1. scan: hash every supported file; compare with what the collection holds.
    with _Timer(report, "scan"):
        paths = [root] if root.is_file() else list(iter_files(root, settings.ingest))
        if not paths:
            raise UsageError(
                f"{root} contains no files to ingest (supported: {', '.join(SUPPORTED)}; "
                "hidden files and ingest.exclude patterns are left out)"
            )
        existing = {} if recreate else ledger(client, collection)
        work: list[_Work] = []
        seen: set[str] = set()
        for path in paths:
            source = relative_source(path, base)
            seen.add(source)
            if not path.is_file():  # a FIFO would block the hash forever; sockets, devices...
                reason = "broken symlink" if path.is_symlink() else "not a regular file"
                report.skipped.append(Skipped(source, f"unreadable: {reason}"))
                continue
            if path.suffix.lower() not in READERS:
                report.skipped.append(
                    Skipped(
                        source,
                        f"unsupported file type {path.suffix or '(none)'!r}; "
                        f"supported: {', '.join(SUPPORTED)} (leave it out with --exclude)",
                    )
                )
                continue
            try:
                digest = file_hash(path)
            except OSError as exc:
                report.skipped.append(Skipped(source, f"unreadable: {exc.strerror or exc}"))
                continue
            state = existing.get(source)
            if state is not None and state.complete(digest):
                report.unchanged += 1
                stale = [h for h in state.counts if h != digest]
                if stale:  # a run died between writing the new version and deleting the old
                    work.append(_Work(source, path, digest, upsert=False))
                continue
            upsert = state is not None and state.counts.get(digest, 0) > 0
            (report.changed if state is not None else report.new).append(source)
            work.append(_Work(source, path, digest, upsert=upsert))
        gone = [
            src for src, st in existing.items() if prune and src not in seen and st.root_id == rid
        ]
        report.files_seen = len(paths)

    # 2. read + chunk everything that changed (before writing, so --strict can refuse early).
    parser = RecursiveCharacterNodeParser.from_settings(settings.chunking)
    to_write = [w for w in work if w.source in report.new or w.source in report.changed]
    for item in to_write:
        try:
            with _Timer(report, "read"):
                doc = read_file(item.path, base, settings.ingest)
        except IngestError as exc:
            report.skipped.append(Skipped(item.source, str(exc)))
            (report.new if item.source in report.new else report.changed).remove(item.source)
            continue
        with _Timer(report, "chunk"):
            nodes = parser.get_nodes_from_documents([doc])
            for i, node in enumerate(nodes):
                node.id_ = stable_chunk_id(collection, item.source, item.digest, i)
                node.metadata.update(doc_hash=item.digest, chunk_count=len(nodes), root_id=rid)
                node.excluded_embed_metadata_keys = list(node.metadata)
                node.excluded_llm_metadata_keys = list(node.metadata)
            item.nodes = nodes
    to_write = [w for w in to_write if w.nodes]
    if strict and report.skipped:
        listing = "; ".join(f"{s.source}: {s.reason}" for s in report.skipped)
        raise StrictIngestError(
            f"--strict: {len(report.skipped)} file(s) cannot be ingested, nothing was written: "
            f"{listing}"
        )

    if recreate is not None:
        store = recreate()
        client = store.client

    # 3. embed + write, overlapping the write of batch k with the embedding of batch k+1.
    total_chunks = sum(len(w.nodes) for w in to_write)
    if total_chunks:
        progress.start(len(to_write), total_chunks)
    written: dict[str, int] = defaultdict(int)
    cache: dict[str, list[float]] = {}
    batch_size = max(settings.embedding.batch_size, settings.milvus.insert_batch_size)

    def write(batch: list[tuple[_Work, BaseNode]]) -> float:
        t0 = time.perf_counter()
        fresh = [n for w, n in batch if not w.upsert]
        again = [n for w, n in batch if w.upsert]
        if fresh:
            store.upsert_mode = False
            store.add(fresh)
        if again:
            store.upsert_mode = True
            store.add(again)
        return time.perf_counter() - t0

    pending: Future[float] | None = None
    pending_batch: list[tuple[_Work, BaseNode]] = []

    def settle() -> None:
        nonlocal pending
        if pending is None:
            return
        report.seconds["write"] += pending.result()
        pending = None
        done_files = 0
        for item, _ in pending_batch:
            written[item.source] += 1
            if written[item.source] == len(item.nodes):
                done_files += 1
        report.chunks_inserted += len(pending_batch)
        log.debug(
            "wrote %d chunks (%d/%d)", len(pending_batch), report.chunks_inserted, total_chunks
        )
        progress.advance(files=done_files, chunks=len(pending_batch))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="milvus-write") as pool:
        try:
            for batch in _batches(to_write, batch_size):
                with _Timer(report, "embed"):
                    texts = [n.get_content(metadata_mode=MetadataMode.NONE) for _, n in batch]
                    todo = list(dict.fromkeys(t for t in texts if t not in cache))
                    if todo:
                        vectors = embed_documents(embed_model, todo)
                        cache.update(zip(todo, vectors, strict=True))
                        report.chunks_embedded += len(todo)
                    for (_, node), text in zip(batch, texts, strict=True):
                        node.embedding = cache[text]
                    if len(cache) > 50_000:
                        cache.clear()
                settle()
                pending_batch = batch
                pending = pool.submit(write, batch)
            settle()
        finally:
            progress.close()

    # 4. delete superseded versions and documents whose files are gone.
    with _Timer(report, "delete"):
        for item in work:
            state = existing.get(item.source)
            if state is None:
                continue
            stale_rows = sum(n for h, n in state.counts.items() if h != item.digest)
            if stale_rows and (item.nodes or state.complete(item.digest)):
                client.delete(
                    collection,
                    filter=f"{DOC_ID_FIELD} == {quote(item.source)} "
                    f"and doc_hash != {quote(item.digest)}",
                )
                report.chunks_deleted += stale_rows
        for src in gone:
            client.delete(collection, filter=f"{DOC_ID_FIELD} == {quote(src)}")
            report.chunks_deleted += sum(existing[src].counts.values())
            report.deleted.append(src)

    report.total_seconds = time.perf_counter() - started
    log.debug("ingest %s: %s", root, report.summary())
    return report


def delete_source(store: Any, settings: Settings, source: str) -> int:
    """Remove one document's chunks; returns how many rows it had."""
    client = store.client
    collection = settings.milvus.collection
    rows = sum(1 for _ in iter_rows(client, collection, [], f"{DOC_ID_FIELD} == {quote(source)}"))
    if rows:
        client.delete(collection, filter=f"{DOC_ID_FIELD} == {quote(source)}")
    return rows
