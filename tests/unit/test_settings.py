"""Settings: profiles, inheritance, environment overrides, validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag_app.errors import ConfigError
from rag_app.settings import env_overrides, expand_env, load_settings


def test_cpu_profile_is_the_embedded_default(tmp_path: Path) -> None:
    s = load_settings(env={"RAG_HOME": str(tmp_path)})
    assert s.profile == "cpu"
    assert s.embedding.model == "packaged:all-MiniLM-L6-v2"
    assert s.llm.model == "packaged:SmolLM2-135M-Instruct"
    assert s.llm.backend == "vllm"
    assert (s.chunking.chunk_size, s.chunking.chunk_overlap) == (512, 51)
    # measured choice, docs/retrieval.md
    assert (s.retrieval.top_k, s.retrieval.mode, s.milvus.enable_bm25) == (5, "hybrid", True)
    # Milvus Lite lives under the data directory.
    assert s.milvus.is_local
    assert Path(s.milvus_uri).parent == tmp_path.resolve()


def test_gpu_profile_is_the_tutorial_verbatim(tmp_path: Path) -> None:
    s = load_settings("gpu", env={"RAG_HOME": str(tmp_path)})
    assert s.embedding.model == "BAAI/bge-large-en-v1.5"
    assert s.embedding.query_instruction is None
    assert s.llm.model == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    llm = s.llm
    assert (llm.dtype, llm.max_model_len, llm.enforce_eager) == ("bfloat16", 1000, True)
    assert (llm.gpu_memory_utilization, llm.seed, llm.max_num_batched_tokens) == (0.5, 415, 3000)
    assert (llm.temperature, llm.top_p, llm.repetition_penalty) == (0.2, 0.95, None)
    assert llm.backend == "vllm"  # the same code path as the cpu profile
    assert (s.retrieval.top_k, s.retrieval.mode) == (2, "dense")
    assert (s.chunking.chunk_size, s.chunking.chunk_overlap) == (512, 51)


def test_gpu_model_names_can_be_local_paths(tmp_path: Path) -> None:
    env = {"RAG_HOME": str(tmp_path), "RAG_LLM_MODEL": "/models/llama", "RAG_EMBED_MODEL": "/m/bge"}
    s = load_settings("gpu", env=env)
    assert (s.llm.model, s.embedding.model) == ("/models/llama", "/m/bge")


def test_env_overrides_beat_the_profile_and_flags_beat_env(tmp_path: Path) -> None:
    env = {
        "RAG_HOME": str(tmp_path),
        "RAG_LLM__MAX_TOKENS": "64",
        "RAG_RETRIEVAL__TOP_K": "5",
        "RAG_MILVUS__URI": "http://127.0.0.1:19530",
        "RAG_MILVUS__TOKEN": "root:Milvus",
    }
    s = load_settings("cpu", {"retrieval.top_k": 7}, env=env)
    assert s.llm.max_tokens == 64
    assert s.retrieval.top_k == 7
    assert s.milvus_uri == "http://127.0.0.1:19530"
    assert s.milvus.token is not None and s.milvus.token.get_secret_value() == "root:Milvus"
    assert s.redacted()["milvus"]["token"] == "***"
    assert "root:Milvus" not in repr(s)


def test_null_override_unsets_a_field(tmp_path: Path) -> None:
    s = load_settings("cpu", {"llm.seed": None}, env={"RAG_HOME": str(tmp_path)})
    assert s.llm.seed is None
    assert load_settings("cpu", {}, env={"RAG_HOME": str(tmp_path)}).llm.seed == 415


def test_profile_from_environment(tmp_path: Path) -> None:
    assert load_settings(env={"RAG_PROFILE": "gpu", "RAG_HOME": str(tmp_path)}).profile == "gpu"


def test_profile_file_path_and_extends(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: gpu\nretrieval:\n  top_k: 4\n")
    s = load_settings(str(tmp_path / "mine.yaml"), env={"RAG_CONFIG_DIR": str(tmp_path)})
    assert (s.profile, s.retrieval.top_k, s.llm.max_model_len) == ("mine", 4, 1000)


def test_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'nope'.*cpu, gpu"):
        load_settings("nope", env={})


def test_typo_names_the_field_and_env_var(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("llm:\n  max_tokenz: 3\n")
    with pytest.raises(ConfigError, match=r"llm\.max_tokenz: unknown setting.*RAG_LLM__MAX_TOKENZ"):
        load_settings("bad", env={"RAG_CONFIG_DIR": str(tmp_path)})


def test_invalid_value_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"chunking: Value error, chunk_overlap \(600\)"):
        load_settings("cpu", {"chunking.chunk_overlap": 600}, env={})
    with pytest.raises(ConfigError, match=r"retrieval\.top_k"):
        load_settings("cpu", env={"RAG_RETRIEVAL__TOP_K": "0"})


def test_expand_env_defaults_and_missing() -> None:
    tree = {"a": "${X:1}", "b": ["${Y}"], "c": "${Z:}", "d": 3}
    assert expand_env(tree, {"Y": "y"}) == {"a": "1", "b": ["y"], "c": None, "d": 3}
    with pytest.raises(ConfigError, match="b: environment variable Y is not set"):
        expand_env(tree, {})


def test_env_overrides_parse_yaml_scalars() -> None:
    env = {"RAG_LLM__TEMPERATURE": "0.5", "RAG_INGEST__EXCLUDE": "[a, b]", "RAG_HOME": "x"}
    assert env_overrides(env) == {"llm": {"temperature": 0.5}, "ingest": {"exclude": ["a", "b"]}}
