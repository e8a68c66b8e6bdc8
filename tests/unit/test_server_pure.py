"""Pure helpers of the HTTP API: bind policy, allowed roots, SSE framing, grouping, URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.errors import UsageError
from rag_app.llm_server import resolve_api_key, server_root
from rag_app.server import check_bind, grouped, host_port, is_loopback, resolve_under_roots, sse
from tests.conftest import make_settings


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    assert not is_loopback("example.com")


def test_bind_policy() -> None:
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "s3cret", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(UsageError, match=r"RAG_API_TOKEN.*--allow-remote"):
        check_bind("0.0.0.0", None, False)


def test_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert resolve_under_roots(str(root / "sub"), [root]) == (root / "sub").resolve()
    assert resolve_under_roots(str(root), [root]) == root.resolve()
    with pytest.raises(PermissionError, match="not under an allowed root"):
        resolve_under_roots(str(root / ".." / "secret"), [root])
    with pytest.raises(PermissionError, match="not under an allowed root"):
        resolve_under_roots(str(root / "escape"), [root])  # the symlink points outside
    with pytest.raises(PermissionError, match="allowed_roots"):
        resolve_under_roots(str(root), [])


def test_sse_and_grouping() -> None:
    assert sse("token", {"delta": "é"}) == 'event: token\ndata: {"delta": "é"}\n\n'
    assert grouped(["a", "bb", "c", "dd", "eee"], len) == {1: [0, 2], 2: [1, 3], 3: [4]}


def test_urls() -> None:
    assert host_port("http://10.0.0.5:19530", 19530) == ("10.0.0.5", 19530)
    assert host_port("https://x.zillizcloud.com", 19530) == ("x.zillizcloud.com", 443)
    assert host_port("http://h/v1", 80) == ("h", 80)
    assert server_root("http://h:8001/v1") == "http://h:8001"
    assert server_root("http://h:8001/v1/") == "http://h:8001"
    assert server_root("http://h:8001") == "http://h:8001"


def test_api_key_resolution(tmp_path: Path) -> None:
    cfg = make_settings(tmp_path).llm
    assert resolve_api_key(cfg, env={}) == "EMPTY"
    assert resolve_api_key(cfg, env={"VLLM_API_KEY": "v"}) == "v"
    assert resolve_api_key(cfg, env={"RAG_LLM_API_KEY": "r", "VLLM_API_KEY": "v"}) == "r"
    cfg = make_settings(tmp_path, llm__api_key="k").llm
    assert resolve_api_key(cfg, env={"RAG_LLM_API_KEY": "r"}) == "k"


def test_server_profile_reads_env(tmp_path: Path) -> None:
    from rag_app.settings import load_settings

    env = {
        "RAG_HOME": str(tmp_path),
        "RAG_MILVUS_URI": "https://c.example:443",
        "RAG_MILVUS_TOKEN": "user:pw",
        "RAG_LLM_BASE_URL": "http://gpu:8001/v1",
    }
    s = load_settings("server", env=env)
    assert s.milvus.uri == "https://c.example:443" and not s.milvus.is_local
    assert s.milvus.token is not None and s.milvus.token.get_secret_value() == "user:pw"
    assert (s.llm.backend, s.llm.base_url) == ("openai", "http://gpu:8001/v1")
    d = load_settings("server", env={"RAG_HOME": str(tmp_path)})
    assert d.milvus.uri == "http://127.0.0.1:19530" and d.milvus.token is None
    assert d.embedding.model == s.embedding.model == "packaged:all-MiniLM-L6-v2"  # from cpu


def test_serve_refuses_open_bind_without_token(rag_home: Path) -> None:
    from click.testing import CliRunner

    from rag_app.cli import main

    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in result.output
