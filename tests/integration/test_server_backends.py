"""The distributed setup on loopback: a real `vllm serve` (one per session) and a real
`milvus-lite server` (gRPC, used like a cluster), through the LLM backend and the HTTP API,
including failures and recovery when a server goes away and comes back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from rag_app.errors import BackendUnavailable
from tests.conftest import VLLM_SERVED_NAME, free_port, make_settings, wait_job, write_files

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CORPUS = {
    "hnsw.md": "# HNSW\n\nIn HNSW, M is the maximum number of neighbours each node keeps in the "
    "graph, efConstruction is the size of the candidate list used while building the index.\n",
    "ivf.md": "# IVF\n\nIVF_FLAT clusters vectors into nlist buckets; at search time nprobe "
    "buckets are scanned.\n",
    "pets.txt": "Cats sleep for about fifteen hours a day.\n",
}


def server_settings(home: Path, milvus_uri: str, llm_url: str, **extra: Any) -> Any:
    overrides = {
        "milvus__uri": milvus_uri,
        "milvus__timeout_s": 5,
        "llm__base_url": llm_url,
        "llm__model": VLLM_SERVED_NAME,
        "llm__max_tokens": 24,
        "llm__max_retries": 0,
        "llm__timeout_s": 60,
        # Serving, not ranking, is under test: dense keeps each question's top source stable.
        "retrieval__mode": "dense",
        **extra,
    }
    from rag_app.settings import load_settings

    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_settings("server", dotted, env={"RAG_HOME": str(home)})


class Forwarder:
    """A TCP relay 127.0.0.1:port -> target that can be switched off and on: the LLM server
    'going away' without paying for another vLLM start."""

    def __init__(self, target_port: int) -> None:
        self.target, self.port = target_port, free_port()
        self._sock: socket.socket | None = None

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def test_server_llm_generates_streams_and_batches(vllm_server: str, rag_home: Path) -> None:
    from rag_app.llm import build_llm

    settings = make_settings(
        rag_home,
        llm__backend="openai",
        llm__base_url=vllm_server,
        llm__model=VLLM_SERVED_NAME,
        llm__max_tokens=16,
    )
    llm = build_llm(settings)
    llm.ping()
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.is_chat_model) == (2048, 16, True)
    assert 3 < llm.count_prompt_tokens("Hello there") < 60  # templated by the server
    assert llm.complete("Name a colour.").text.strip()
    deltas = [c.delta for c in llm.stream_complete("Count from one to ten.") if c.delta]
    assert len(deltas) > 3  # real token streaming, not one chunk
    answers = llm.complete_batch(["Say yes.", "Say no.", "Name a fruit.", "Name a city."])
    assert len(answers) == 4 and all(a.strip() for a in answers)
    llm.close()


def test_dead_llm_server_is_a_clear_backend_error(rag_home: Path) -> None:
    from rag_app.llm import build_llm

    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = build_llm(
        make_settings(
            rag_home,
            llm__backend="openai",
            llm__base_url=url,
            llm__model="m",
            llm__max_retries=0,
        )
    )
    with pytest.raises(BackendUnavailable, match=rf"LLM server at {url}.*vllm serve"):
        llm.complete("hi")
    with pytest.raises(BackendUnavailable, match=url):
        list(llm.stream_complete("hi"))
    with pytest.raises(BackendUnavailable, match=url):
        llm.ping()


@pytest.fixture
def api(
    tmp_path: Path, rag_home: Path, embed_model: Any, vllm_server: str, milvus_server: Any
) -> Iterator[Any]:
    """The API on the server profile, its LLM URL behind a switchable relay."""
    from fastapi.testclient import TestClient

    from rag_app.server import create_app

    relay = Forwarder(int(vllm_server.rsplit(":", 1)[1].split("/")[0]))
    relay.up()
    root = write_files(tmp_path / "docs", CORPUS)
    settings = server_settings(
        rag_home,
        milvus_server.uri,
        f"http://127.0.0.1:{relay.port}/v1",
        milvus__collection=f"api_{tmp_path.name[-8:].replace('-', '_')}",
        server__allowed_roots=[str(tmp_path)],
    )
    app = RagApp(settings, embed_model=embed_model)
    with TestClient(create_app(app)) as client:
        client.relay, client.root = relay, root  # type: ignore[attr-defined]
        yield client
    relay.down()
    app.close()


def ingest(client: Any, root: Path) -> dict[str, Any]:
    return wait_job(client, client.post("/v1/ingest", json={"path": str(root)}).json()["job"])


def test_api_on_server_backends_with_openai_client(api: Any) -> None:
    import openai

    assert ingest(api, api.root)["report"]["files"]["new"] == 3
    assert api.get("/readyz").json() == {"ready": True, "checks": {"milvus": "ok", "llm": "ok"}}

    resp = api.post("/v1/query", json={"question": "What is nprobe?"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["sources"][0]["source"] == "ivf.md" and resp.json()["answer"].strip()

    with api.stream("POST", "/v1/query", json={"question": "What is M?", "stream": True}) as r:
        body = "".join(r.iter_text())
    assert body.count("event: token") > 3 and "hnsw.md" in body.split("event: sources")[1]

    # Any OpenAI client can talk to rag_app: the SDK, over the app's own transport.
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=api)
    done = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "How long do cats sleep?"}]
    )
    assert done.choices[0].message.content
    assert done.model_extra is not None and done.model_extra["sources"][0]["source"] == "pets.txt"
    stream = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "What is nprobe?"}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3


def test_api_fails_fast_and_recovers_when_servers_go_away(api: Any, milvus_server: Any) -> None:
    assert ingest(api, api.root)["status"] == "done"
    question = {"question": "What is nprobe?"}

    # LLM server gone: 503 naming it, quickly; readyz says which; back when it returns.
    api.relay.down()
    start = time.monotonic()
    resp = api.post("/v1/query", json=question)
    assert resp.status_code == 503 and "LLM server" in resp.json()["detail"]
    assert time.monotonic() - start < 5
    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert (
        ready.json()["checks"]["milvus"] == "ok" and "LLM server" in ready.json()["checks"]["llm"]
    )
    assert api.post("/v1/retrieve", json=question).status_code == 200  # no LLM needed
    api.relay.up()
    assert api.post("/v1/query", json=question).status_code == 200

    # Milvus gone: 503 naming it; after a restart the collection comes back released and the
    # API loads it again by itself.
    milvus_server.stop()
    try:
        start = time.monotonic()
        resp = api.post("/v1/query", json=question)
        assert resp.status_code == 503 and "Milvus" in resp.json()["detail"]
        assert time.monotonic() - start < 5
        checks = api.get("/readyz").json()["checks"]
        assert "Milvus" in checks["milvus"] and checks["llm"] == "ok"
    finally:
        milvus_server.start()
    resp = api.post("/v1/query", json=question)
    assert resp.status_code == 200, resp.text
    assert resp.json()["sources"][0]["source"] == "ivf.md"
    assert api.get("/readyz").json()["ready"] is True
