"""build_embed_model(settings): a LlamaIndex embedding model over sentence-transformers."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rag_app.errors import ModelNotFoundError, require
from rag_app.models import resolve_embedding_model
from rag_app.settings import Settings

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

log = logging.getLogger(__name__)

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
BGE_QUERY_INSTRUCTION_ZH = "为这个句子生成表示以用于检索相关文章："


def query_prefix(model: str, instruction: str | None) -> str:
    """The text put before each query. ``auto`` follows the model's convention (BGE's authors
    recommend their instruction for short queries); None or "" means none, as in the tutorial."""
    if not instruction:
        return ""
    if instruction != "auto":
        return instruction
    name = Path(model).name.lower()
    if "bge" in name and "m3" not in name:
        return BGE_QUERY_INSTRUCTION_ZH if "-zh" in name else BGE_QUERY_INSTRUCTION
    return ""


def build_embed_model(settings: Settings) -> BaseEmbedding:
    require("llama_index.embeddings.huggingface", "cpu", "llama-index-embeddings-huggingface")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    cfg = settings.embedding
    path = resolve_embedding_model(settings)
    if Path(path).exists():
        # A local folder needs no hub; without this, sentence-transformers may still phone home.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar on stderr even under --quiet or in a cron log.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = HuggingFaceEmbedding(
            model_name=path,
            normalize=cfg.normalize,
            embed_batch_size=cfg.batch_size,
            device=cfg.device,
            max_length=cfg.max_length,
            show_progress_bar=False,
        )
    except OSError as exc:
        raise ModelNotFoundError(
            f"embedding.model {cfg.model!r} could not be loaded ({exc}); use a local folder or "
            "a packaged model (packaged:all-MiniLM-L6-v2) when offline"
        ) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    # HuggingFaceEmbedding silently adds BGE's prefix when given none; make the setting decide.
    model._model.prompts = {"query": query_prefix(cfg.model, cfg.query_instruction), "text": ""}
    return model


def embedding_dim(embed_model: BaseEmbedding) -> int:
    st = getattr(embed_model, "_model", None)
    getter = getattr(st, "get_embedding_dimension", None) or getattr(
        st, "get_sentence_embedding_dimension", None
    )
    dim = getter() if getter else None
    return int(dim) if dim else len(embed_model.get_text_embedding("dimension probe"))


def embed_documents(embed_model: BaseEmbedding, texts: list[str]) -> list[list[float]]:
    """Document vectors for ``texts``, identical to ``get_text_embedding_batch``.

    For a HuggingFaceEmbedding this is one ``SentenceTransformer.encode`` call over all the texts
    (batched by ``embed_batch_size``): encode sorts the whole list by length before batching, so
    batches pad less than LlamaIndex's fixed slices of ``embed_batch_size`` texts, and the
    per-slice callback/event overhead goes away. Other models take LlamaIndex's path.
    """
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    if not isinstance(embed_model, HuggingFaceEmbedding) or not texts:
        return embed_model.get_text_embedding_batch(texts)
    vectors = embed_model._model.encode(
        texts,
        batch_size=embed_model.embed_batch_size,
        prompt_name="text",
        normalize_embeddings=embed_model.normalize,
        show_progress_bar=False,
        convert_to_numpy=True,
    )
    return vectors.tolist()
