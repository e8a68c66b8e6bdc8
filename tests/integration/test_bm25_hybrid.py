"""Real MiniLM + real Milvus Lite: BM25 (Milvus's built-in function), hybrid fusion, reopening
a BM25 collection in a new process, dense-only collections, the query instruction, reranking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag_app.app import RagApp
from rag_app.errors import UsageError
from tests.conftest import make_settings, write_files

pytestmark = pytest.mark.slow

# Near-identical status codes: MiniLM's word pieces cannot tell them apart, BM25's exact
# tokens can. And a paraphrase sharing no word with its answer, where BM25 has nothing to go on.
CORPUS = {
    "status/zqx9041.md": "The gateway answers ZQX9041 when the tenant has used up its storage "
    "allowance.\n",
    "status/zqx9014.md": "The gateway answers ZQX9014 when the tenant's access token has "
    "expired.\n",
    "status/zqx9401.md": "The gateway answers ZQX9401 when the tenant was suspended by an "
    "administrator.\n",
    "status/zqx9042.md": "The gateway answers ZQX9042 when the upstream service timed out.\n",
    "guide/acceleration.md": "Tuning the engine and reducing the vehicle's weight let an "
    "automobile reach highway velocity sooner.\n",
    "guide/builds.md": "How do I make the test suite faster? Run the tests in parallel and cache "
    "the dependencies so my builds go faster.\n",
    "misc/garden.txt": "Tomatoes need six hours of sun, regular watering and a stake to climb.\n",
}
KEYWORD_Q, KEYWORD_GOLD = "Why does ZQX9041 appear?", "status/zqx9041.md"
PARAPHRASE_Q, PARAPHRASE_GOLD = "How can I make my car quicker?", "guide/acceleration.md"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {**env, "RAG_HOME": str(home)}


@pytest.fixture(scope="module")
def bm25_home(tmp_path_factory: pytest.TempPathFactory, embed_model: Any) -> Path:
    """One BM25-enabled collection for the module, closed again (Lite's lock released)."""
    root = tmp_path_factory.mktemp("bm25")
    corpus = write_files(root / "corpus", CORPUS)
    home = root / "home"
    with RagApp(make_settings(home), embed_model=embed_model) as app:
        assert app.settings.milvus.enable_bm25  # the cpu profile's default
        report = app.ingest(corpus)
        assert report.chunks_inserted == len(CORPUS)
    return home


def _sources(app: RagApp, q: str, mode: str, k: int = 3) -> list[str]:
    return [h.source for h in app.retrieve(q, top_k=k, mode=mode)]  # type: ignore[arg-type]


def test_bm25_wins_on_a_rare_keyword_dense_on_a_paraphrase(
    bm25_home: Path, embed_model: Any
) -> None:
    with RagApp(make_settings(bm25_home), embed_model=embed_model) as app:
        assert _sources(app, KEYWORD_Q, "bm25")[0] == KEYWORD_GOLD
        assert _sources(app, KEYWORD_Q, "dense")[0] != KEYWORD_GOLD
        assert _sources(app, PARAPHRASE_Q, "dense")[0] == PARAPHRASE_GOLD
        assert PARAPHRASE_GOLD not in _sources(app, PARAPHRASE_Q, "bm25")
        # RRF fusion keeps both winners near the top
        assert KEYWORD_GOLD in _sources(app, KEYWORD_Q, "hybrid", 2)
        assert PARAPHRASE_GOLD in _sources(app, PARAPHRASE_Q, "hybrid", 2)
        hits = app.retrieve(KEYWORD_Q, top_k=3, mode="bm25")
        # Lite's negative BM25 distances come back as positive, descending scores
        scores = [h.score for h in hits]
        assert all(s is not None and s > 0 for s in scores)
        assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]


def test_weighted_fusion_follows_its_weights(bm25_home: Path, embed_model: Any) -> None:
    """With all the weight on one side, weighted fusion ranks first what that side does."""
    for weights, expected in (([0.0, 1.0], KEYWORD_GOLD), ([1.0, 0.0], None)):
        settings = make_settings(
            bm25_home, retrieval__hybrid_ranker="weighted", retrieval__hybrid_weights=weights
        )
        with RagApp(settings, embed_model=embed_model) as app:
            dense_top = _sources(app, KEYWORD_Q, "dense")[0]
            assert _sources(app, KEYWORD_Q, "hybrid")[0] == (expected or dense_top)


def test_bm25_collection_reopens_in_a_new_process(bm25_home: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rag_app.cli", "retrieve", KEYWORD_Q, "--mode", "bm25", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=_env(bm25_home),
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["sources"][0]["source"] == KEYWORD_GOLD
    assert data["sources"][0]["score"] > 0


def test_dense_only_collection_refuses_bm25_clearly(tmp_path: Path, embed_model: Any) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    home = tmp_path / "home"
    dense = make_settings(home, milvus__enable_bm25=False)
    with RagApp(dense, embed_model=embed_model) as app:
        app.ingest(corpus)
        assert _sources(app, PARAPHRASE_Q, "dense")[0] == PARAPHRASE_GOLD
    # Reopened with BM25 on: an existing collection keeps its schema, and says so.
    with RagApp(make_settings(home), embed_model=embed_model) as app:
        for mode in ("bm25", "hybrid"):
            with pytest.raises(UsageError) as err:
                app.retrieve(KEYWORD_Q, mode=mode)  # type: ignore[arg-type]
            msg = str(err.value)
            assert "created without one" in msg and "--recreate" in msg
        assert _sources(app, PARAPHRASE_Q, "dense")[0] == PARAPHRASE_GOLD
    # ...but a profile whose default mode is hybrid still answers from it, densely.
    with RagApp(make_settings(home, retrieval__mode="hybrid"), embed_model=embed_model) as app:
        assert [h.source for h in app.retrieve(PARAPHRASE_Q, top_k=3)] == _sources(
            app, PARAPHRASE_Q, "dense"
        )
        # --recreate under a BM25 profile turns it into a BM25 collection
        app.ingest(corpus, recreate=True)
        assert _sources(app, KEYWORD_Q, "bm25")[0] == KEYWORD_GOLD


def test_query_instruction_changes_queries_only() -> None:
    import numpy as np

    from rag_app.embeddings import build_embed_model

    home = Path("/nonexistent-home")
    plain = build_embed_model(make_settings(home, embedding__query_instruction=None))
    bge = build_embed_model(
        make_settings(
            home,
            embedding__query_instruction="Represent this sentence for searching relevant "
            "passages: ",
        )
    )
    text = "How do I tune HNSW?"
    assert np.allclose(plain.get_text_embedding(text), bge.get_text_embedding(text))
    q_plain, q_bge = plain.get_query_embedding(text), bge.get_query_embedding(text)
    assert not np.allclose(q_plain, q_bge, atol=1e-3)
    # the prefixed query embeds like the prefixed text, i.e. the prefix is what differs
    prefixed = plain.get_text_embedding(
        "Represent this sentence for searching relevant passages: " + text
    )
    assert np.allclose(q_bge, prefixed, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised one-layer BERT cross-encoder with MiniLM's tokenizer (no
    weights ship here; this exercises the loading and reordering code, not quality)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag_app.models import resolve_embedding_model

    path = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(
        resolve_embedding_model(make_settings(Path("/nonexistent-home")))
    )
    torch.manual_seed(7)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_reranker_reorders_and_truncates(
    bm25_home: Path, embed_model: Any, tiny_cross_encoder: Path
) -> None:
    from sentence_transformers import CrossEncoder

    with RagApp(make_settings(bm25_home), embed_model=embed_model) as app:
        candidates = app.retrieve(PARAPHRASE_Q, top_k=5, mode="dense")
    scores = CrossEncoder(str(tiny_cross_encoder), device="cpu").predict(
        [(PARAPHRASE_Q, c.text) for c in candidates]
    )
    expected = [
        c.source for _, c in sorted(zip(scores, candidates, strict=True), key=lambda p: -p[0])
    ][:2]

    settings = make_settings(
        bm25_home,
        retrieval__rerank_model=str(tiny_cross_encoder),
        retrieval__rerank_top_n=2,
        retrieval__top_k=5,
    )
    with RagApp(settings, embed_model=embed_model) as app:
        hits = app.retrieve(PARAPHRASE_Q, mode="dense")
    assert [h.source for h in hits] == expected
    assert [h.score for h in hits] == pytest.approx(sorted(scores, reverse=True)[:2], abs=1e-4)
    # the random cross-encoder disagrees with MiniLM's order, so reordering really happened
    assert expected != [c.source for c in candidates[:2]]


def test_missing_rerank_model_is_a_config_error(bm25_home: Path, embed_model: Any) -> None:
    from rag_app.errors import ModelNotFoundError

    settings = make_settings(bm25_home, retrieval__rerank_model=str(bm25_home / "nope"))
    with (
        RagApp(settings, embed_model=embed_model) as app,
        pytest.raises(ModelNotFoundError, match="rerank_model"),
    ):
        app.retrieve(PARAPHRASE_Q)
