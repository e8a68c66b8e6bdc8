"""Load test of the HTTP API: one-at-a-time vs N concurrent /v1/query clients.

For each backend it starts what it needs on 127.0.0.1 (or uses the URLs given), ingests a small
corpus through /v1/ingest, then measures, in the same run:
  * sequential: --sequential questions, one at a time (the baseline);
  * concurrent: --clients questions fired at once (default 32).
It prints successes, errors, lost requests, p50/p95 latency and answers/s, the concurrent/sequential
throughput ratio, a table and a PNG plot. Loopback only; every request and the whole run are
bounded by timeouts, and every process it started is stopped at the end.

    python scripts/load_test.py                       # embedded and server backends
    python scripts/load_test.py --backend server --llm-url http://127.0.0.1:8001/v1 \
        --milvus-uri http://127.0.0.1:19530          # reuse running servers
    python scripts/load_test.py --api-url http://127.0.0.1:8000   # an API already running
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
SERVED_NAME = "smollm2"


def log(msg: str) -> None:
    print(f"[load_test] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"error: {url} is not a loopback address; this load test only targets 127.0.0.1")
    return url.rstrip("/")


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None, logf: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"error: process for {url} exited; see {logf}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"error: {url} not ready after {timeout:.0f} s; see {logf}")


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    sys.exit(f"error: nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> tuple[Any, Path]:
        logf = self.logs / f"{name}.log"
        with logf.open("ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.procs.append(proc)
        log(f"started {name} (pid {proc.pid}, log {logf})")
        return proc, logf

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()


@dataclass
class Phase:
    backend: str
    phase: str
    clients: int
    requests: int
    ok: int = 0
    errors: int = 0
    lost: int = 0
    p50_s: float = 0.0
    p95_s: float = 0.0
    wall_s: float = 0.0
    answers_per_s: float = 0.0
    error_samples: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def ask(client: Any, url: str, question: str, headers: dict[str, str]) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        resp = await client.post(f"{url}/v1/query", json={"question": question}, headers=headers)
    except Exception as exc:
        return f"lost: {type(exc).__name__}: {exc}", time.perf_counter() - start
    took = time.perf_counter() - start
    if resp.status_code != 200:
        return f"error {resp.status_code}: {resp.text[:200]}", took
    data = resp.json()
    if not data.get("answer", "").strip() or not data.get("sources"):
        return "error: empty answer or no sources", took
    return "ok", took


async def run_phase(
    backend: str, phase: str, url: str, questions: list[str], clients: int, timeout: float
) -> Phase:
    import httpx

    token = os.environ.get("RAG_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    result = Phase(backend, phase, clients, len(questions))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        gate = asyncio.Semaphore(clients)

        async def one(q: str) -> tuple[str, float]:
            async with gate:
                return await ask(client, url, q, headers)

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(q) for q in questions))
        result.wall_s = time.perf_counter() - start
    latencies = [t for status, t in outcomes if status == "ok"]
    result.ok = len(latencies)
    result.lost = sum(status.startswith("lost") for status, _ in outcomes)
    result.errors = len(outcomes) - result.ok - result.lost
    result.error_samples = sorted({s for s, _ in outcomes if s != "ok"})[:3]
    result.p50_s = round(statistics.median(latencies), 3) if latencies else float("nan")
    result.p95_s = round(percentile(latencies, 0.95), 3)
    result.wall_s = round(result.wall_s, 3)
    result.answers_per_s = round(result.ok / result.wall_s, 3) if result.wall_s else 0.0
    return result


def load_questions(path: Path, n: int) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    qs = [r["question"] for r in rows]
    return [qs[i % len(qs)] for i in range(n)]


def ingest(url: str, corpus: Path) -> None:
    import httpx

    token = os.environ.get("RAG_API_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=60, headers=headers) as http:
        resp = http.post(f"{url}/v1/ingest", json={"path": str(corpus)})
        if resp.status_code != 202:
            sys.exit(f"error: ingest refused: {resp.status_code} {resp.text}")
        job = resp.json()["job"]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            state = http.get(f"{url}/v1/jobs/{job}").json()
            if state["status"] == "done":
                log(f"ingested: {state['report']['files']}")
                return
            if state["status"] == "failed":
                sys.exit(f"error: ingest failed: {state['error']}")
            time.sleep(0.5)
    sys.exit("error: ingest did not finish in 600 s")


def prepare_model(home: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from rag_app.models import resolve_llm_model
    from rag_app.settings import load_settings

    return resolve_llm_model(load_settings("cpu", env={"RAG_HOME": str(home)}))


def start_api(
    procs: Processes, backend: str, home: Path, corpus: Path, args: argparse.Namespace, extra: dict
) -> str:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k == "RAG_API_TOKEN"}
    env.update(
        RAG_HOME=str(home / backend),
        RAG_SERVER__ALLOWED_ROOTS=json.dumps([str(corpus)]),
        RAG_LLM__MAX_TOKENS=str(args.max_tokens),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        **extra,
    )
    profile = "cpu" if backend == "embedded" else "server"
    cmd = [sys.executable, "-m", "rag_app.cli", "-p", profile, "-q", "serve", "--port", str(port)]
    proc, logf = procs.start(f"api-{backend}", cmd, env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", 120, proc, logf)
    return url


def start_servers(procs: Processes, home: Path, model: str, args: argparse.Namespace) -> dict:
    out: dict[str, str] = {}
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_LOGGING_LEVEL="WARNING")
    if args.milvus_uri:
        out["RAG_MILVUS_URI"] = loopback_only(args.milvus_uri)
    else:
        port = free_port()
        exe = str(Path(sys.executable).parent / "milvus-lite")
        data = home / "milvus-data"
        procs.start(
            "milvus-lite",
            [exe, "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
            env,
        )
        wait_port(port, 60)
        out["RAG_MILVUS_URI"] = f"http://127.0.0.1:{port}"
    if args.llm_url:
        out["RAG_LLM_BASE_URL"] = loopback_only(args.llm_url)
        out["RAG_LLM_MODEL"] = args.served_model
    else:
        port = free_port()
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME]
        cmd += ["--enforce-eager", "--max-model-len", "2048", "--dtype", "bfloat16"]
        cmd += ["--seed", "415"]
        proc, logf = procs.start("vllm-serve", cmd, env)
        wait_http(f"http://127.0.0.1:{port}/health", 600, proc, logf)
        out["RAG_LLM_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        out["RAG_LLM_MODEL"] = SERVED_NAME
    return out


def table(rows: list[Phase]) -> str:
    head = (
        f"{'backend':<9} {'phase':<11} {'clients':>7} {'ok':>4} {'err':>4} {'lost':>4} "
        f"{'p50 s':>7} {'p95 s':>7} {'wall s':>7} {'answers/s':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.backend:<9} {r.phase:<11} {r.clients:>7} {r.ok:>4} {r.errors:>4} {r.lost:>4} "
            f"{r.p50_s:>7.2f} {r.p95_s:>7.2f} {r.wall_s:>7.1f} {r.answers_per_s:>9.2f}"
        )
    return "\n".join(lines)


def plot(rows: list[Phase], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({r.backend for r in rows}, key=[r.backend for r in rows].index)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for i, phase in enumerate(("sequential", "concurrent")):
        xs = [b + (i - 0.5) * width for b in range(len(backends))]
        pick = [
            next((r for r in rows if r.backend == b and r.phase == phase), None) for b in backends
        ]
        label = "1 client" if phase == "sequential" else f"{rows[-1].clients} clients"
        ax1.bar(xs, [p.answers_per_s if p else 0 for p in pick], width, label=label)
        ax2.bar(xs, [p.p50_s if p else 0 for p in pick], width, label=f"p50, {label}")
        ax2.scatter(xs, [p.p95_s if p else 0 for p in pick], color="black", marker="_", s=400)
    for ax, title in ((ax1, "Throughput (answers/s)"), (ax2, "Latency (s; bar p50, tick p95)")):
        ax.set_xticks(range(len(backends)), backends)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("rag_app HTTP API under load (SmolLM2-135M on 2 CPU cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    log(f"plot: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", choices=["embedded", "server", "both"], default="both")
    ap.add_argument("--api-url", help="An API already running on loopback (skips starting one).")
    ap.add_argument("--milvus-uri", help="A running Milvus server (default: start milvus-lite).")
    ap.add_argument("--llm-url", help="A running vllm serve /v1 URL (default: start one).")
    ap.add_argument("--served-model", default=SERVED_NAME, help="With --llm-url.")
    ap.add_argument("--clients", type=int, default=32, help="Concurrent clients (max 256).")
    ap.add_argument("--sequential", type=int, default=8, help="Questions asked one at a time.")
    ap.add_argument("--max-tokens", type=int, default=64, help="Answer budget (llm.max_tokens).")
    ap.add_argument("--corpus", type=Path, default=ROOT / "examples" / "corpus")
    ap.add_argument(
        "--questions", type=Path, default=ROOT / "examples" / "questions" / "milvus-docs.jsonl"
    )
    ap.add_argument("--home", type=Path, help="Work folder (default: a temporary one).")
    ap.add_argument("--timeout", type=float, default=300, help="Per request, seconds.")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "load_test.png")
    ap.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    args = ap.parse_args()
    if not 1 <= args.clients <= 256:
        sys.exit("error: --clients must be between 1 and 256")

    home = args.home or Path(tempfile.mkdtemp(prefix="rag-load-"))
    home.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    procs = Processes(home)
    rows: list[Phase] = []
    backends = ["embedded", "server"] if args.backend == "both" else [args.backend]
    if args.api_url:
        backends = [args.backend if args.backend != "both" else "api"]
    try:
        model = "" if args.api_url else prepare_model(home / "models-home")
        for backend in backends:
            if args.api_url:
                url = loopback_only(args.api_url)
            else:
                # The server profile names the served model; the embedded one loads the folder.
                extra = {"RAG_LLM__MODEL": model} if backend == "embedded" else {}
                if backend == "server":
                    extra.update(start_servers(procs, home, model, args))
                url = start_api(procs, backend, home, corpus, args, extra)
                ingest(url, corpus)
            log(f"{backend}: warm-up")
            asyncio.run(
                run_phase(
                    backend, "warmup", url, load_questions(args.questions, 2), 1, args.timeout
                )
            )
            seq_q = load_questions(args.questions, args.sequential)
            conc_q = load_questions(args.questions, args.clients)
            for phase, qs, n in (("sequential", seq_q, 1), ("concurrent", conc_q, args.clients)):
                log(f"{backend}: {phase}, {len(qs)} questions, {n} client(s)")
                rows.append(asyncio.run(run_phase(backend, phase, url, qs, n, args.timeout)))
                log(table([rows[-1]]).splitlines()[-1])
            if not args.api_url:
                procs.stop_all()
    finally:
        procs.stop_all()

    ratios = {}
    for b in backends:
        seq = next(r for r in rows if r.backend == b and r.phase == "sequential")
        conc = next(r for r in rows if r.backend == b and r.phase == "concurrent")
        ratios[b] = round(conc.answers_per_s / seq.answers_per_s, 2) if seq.answers_per_s else None
    text = (
        table(rows)
        + "\n\nconcurrent / sequential throughput: "
        + ", ".join(f"{b} {r}x" for b, r in ratios.items())
    )
    plot(rows, args.plot)
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "ratios": ratios}, indent=2))
    else:
        print(text)
    failed = sum(r.errors + r.lost for r in rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
