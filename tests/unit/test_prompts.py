"""The tutorial's prompt, string in, string out."""

from __future__ import annotations

import pytest

from rag_app.errors import ConfigError
from rag_app.prompts import (
    TUTORIAL_TEMPLATE,
    build_prompt,
    check_template,
    format_context,
    unique_sources,
)


def test_contexts_are_joined_best_last() -> None:
    assert format_context(["best", "second", "third"]) == "third second best"


def test_unique_sources_keep_best_rank_and_go_best_last() -> None:
    # a.md is best and also third; it appears once, at its best rank (last).
    assert unique_sources(["a.md", "b.md", "a.md", "", "c.md"]) == ["c.md", "b.md", "a.md"]


def test_build_prompt_reproduces_the_tutorial_exactly() -> None:
    prompt = build_prompt(
        "What do the parameters for HNSW mean?",
        ["M is the max degree.", "ef is the search width."],
        ["reference/index.md", "reference/index.md"],
    )
    assert prompt == (
        "First, check if the provided Context is relevant to the user's question.  Second, only "
        "if the provided Context is strongly relevant, answer the question using the Context.  "
        "Otherwise, if the Context is not strongly relevant, answer the question without using "
        "the Context.\n"
        "Be clear, concise, relevant.  Answer clearly, in fewer than 2 sentences.\n"
        "Grounding sources: reference/index.md\n"
        "Context: ef is the search width. M is the max degree.\n"
        "User's question: What do the parameters for HNSW mean?\n"
    )


def test_braces_in_contexts_are_not_template_slots() -> None:
    prompt = build_prompt("q?", ['{"index_type": "HNSW", "params": {"M": 8}}'], ["x.md"])
    assert '{"index_type": "HNSW", "params": {"M": 8}}' in prompt


def test_custom_template() -> None:
    prompt = build_prompt("Q", ["c1", "c2"], ["s1", "s2"], template="{context_str}|{query_str}")
    assert prompt == "c2 c1|Q"


def test_check_template_names_missing_slots() -> None:
    assert check_template(TUTORIAL_TEMPLATE) == TUTORIAL_TEMPLATE
    with pytest.raises(ConfigError, match=r"\{query_str\}"):
        check_template("Context: {context_str}")
