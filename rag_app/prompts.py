"""The tutorial's prompt as pure functions: strings in, string out.

The tutorial orders retrieved contexts best-last (nearest the question, where small models attend
most), lists the unique sources, asks the model to check relevance first and to answer in fewer than
two sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

TUTORIAL_TEMPLATE = (
    "First, check if the provided Context is relevant to the user's question.  Second, only if "
    "the provided Context is strongly relevant, answer the question using the Context.  Otherwise, "
    "if the Context is not strongly relevant, answer the question without using the Context.\n"
    "Be clear, concise, relevant.  Answer clearly, in fewer than 2 sentences.\n"
    "Grounding sources: {sources}\n"
    "Context: {context_str}\n"
    "User's question: {query_str}\n"
)
# The tutorial joins contexts with a space; kept so its prompt is reproduced exactly.
CONTEXT_SEPARATOR = " "
_SLOT = re.compile(r"\{([^{}]+)\}")


def fill_template(template: str, **values: str) -> str:
    """Fill ``{name}`` slots in one pass; unknown slots and other braces stay as written.

    The same rule as LlamaIndex's PromptTemplate (its SafeFormatter), done here so the hand-rolled
    baseline can build the identical prompt without importing LlamaIndex.
    """
    return _SLOT.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def best_last(items_best_first: Sequence[str]) -> list[str]:
    return list(reversed(items_best_first))


def unique_sources(sources_best_first: Sequence[str]) -> list[str]:
    """Each source once, at the rank of its best chunk, ordered best-last like the contexts."""
    return best_last(list(dict.fromkeys(s for s in sources_best_first if s)))


def format_context(texts_best_first: Sequence[str], separator: str = CONTEXT_SEPARATOR) -> str:
    return separator.join(best_last(texts_best_first))


def build_prompt(
    question: str,
    texts_best_first: Sequence[str],
    sources_best_first: Sequence[str],
    template: str = TUTORIAL_TEMPLATE,
    separator: str = CONTEXT_SEPARATOR,
) -> str:
    return fill_template(
        template,
        sources=" ".join(unique_sources(sources_best_first)),
        context_str=format_context(texts_best_first, separator),
        query_str=question,
    )


def check_template(template: str) -> str:
    """A custom template must carry the three slots the engine fills."""
    from rag_app.errors import ConfigError

    missing = [v for v in ("{context_str}", "{query_str}") if v not in template]
    if missing:
        raise ConfigError(f"prompt template lacks {', '.join(missing)}")
    return template
