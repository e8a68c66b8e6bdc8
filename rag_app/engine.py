"""RagQueryEngine: retriever + the tutorial's prompt + LLM, as a LlamaIndex query engine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import Response
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore
from pydantic import ConfigDict

from rag_app.prompts import CONTEXT_SEPARATOR, TUTORIAL_TEMPLATE, build_prompt

log = logging.getLogger(__name__)


@dataclass
class SourceChunk:
    source: str
    score: float | None
    text: str
    id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_node(cls, hit: NodeWithScore) -> SourceChunk:
        meta = dict(hit.node.metadata)
        return cls(
            source=str(meta.get("source", "")),
            score=None if hit.score is None else float(hit.score),
            text=hit.node.get_content(metadata_mode=MetadataMode.NONE),
            id=hit.node.node_id,
            metadata=meta,
        )

    def to_dict(self, metadata: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not metadata:
            out.pop("metadata")
        return out


@dataclass
class Answer:
    answer: str
    sources: list[SourceChunk]
    prompt: str = ""

    @classmethod
    def from_response(cls, response: Response) -> Answer:
        return cls(
            answer=str(response.response or "").strip(),
            sources=[SourceChunk.from_node(n) for n in response.source_nodes],
            prompt=str((response.metadata or {}).get("prompt", "")),
        )

    def to_dict(self, prompt: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "answer": self.answer,
            "sources": [s.to_dict() for s in self.sources],
        }
        if prompt:
            out["prompt"] = self.prompt
        return out

    def __str__(self) -> str:
        return self.answer


def fit_contexts(
    question: str,
    hits: Sequence[NodeWithScore],
    render: Callable[[Sequence[NodeWithScore]], str],
    count_tokens: Callable[[str], int] | None,
    budget: int | None,
) -> tuple[list[NodeWithScore], str]:
    """Drop the weakest contexts until the prompt fits ``budget`` tokens (vLLM rejects prompts
    longer than max_model_len - max_tokens). The best context always stays."""
    kept = list(hits)
    prompt = render(kept)
    if count_tokens is None or budget is None:
        return kept, prompt
    while len(kept) > 1 and count_tokens(prompt) > budget:
        dropped = kept.pop()
        log.warning(
            "prompt over the %d-token budget: dropped context from %s",
            budget,
            dropped.node.metadata.get("source"),
        )
        prompt = render(kept)
    return kept, prompt


class RagQueryEngine(CustomQueryEngine):
    """Retrieve top-k chunks, build the tutorial's prompt (best context last), generate."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BaseRetriever
    llm: Any
    template: str = TUTORIAL_TEMPLATE
    context_separator: str = CONTEXT_SEPARATOR

    def render(self, question: str, hits: Sequence[NodeWithScore]) -> str:
        return build_prompt(
            question,
            [h.node.get_content(metadata_mode=MetadataMode.NONE) for h in hits],
            [str(h.node.metadata.get("source", "")) for h in hits],
            template=self.template,
            separator=self.context_separator,
        )

    def prepare(self, question: str) -> tuple[list[NodeWithScore], str]:
        hits = self.retriever.retrieve(question)
        meta = self.llm.metadata
        budget = meta.context_window - meta.num_output if meta.context_window > 0 else None
        counter = getattr(self.llm, "count_prompt_tokens", None)
        return fit_contexts(question, hits, lambda h: self.render(question, h), counter, budget)

    def custom_query(self, query_str: str) -> Response:
        hits, prompt = self.prepare(query_str)
        text = self.llm.complete(prompt).text
        return Response(response=text.strip(), source_nodes=hits, metadata={"prompt": prompt})

    def query_batch(self, questions: Sequence[str]) -> list[Response]:
        """Answer many questions with one batched generation where the LLM supports it."""
        prepared = [self.prepare(q) for q in questions]
        prompts = [p for _, p in prepared]
        batch = getattr(self.llm, "complete_batch", None)
        texts = batch(prompts) if batch else [self.llm.complete(p).text for p in prompts]
        return [
            Response(response=t.strip(), source_nodes=hits, metadata={"prompt": p})
            for (hits, p), t in zip(prepared, texts, strict=True)
        ]
