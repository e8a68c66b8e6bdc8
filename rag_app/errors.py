"""The few exceptions rag_app raises on purpose.

Every error carries a message meant for a person: what went wrong, naming the file or field,
and what to do about it. The CLI maps ``exit_code`` to the process exit status at the edge.
"""

from __future__ import annotations


class RagAppError(Exception):
    """Base class: a failure rag_app understands and can explain."""

    exit_code = 1


class ConfigError(RagAppError):
    """Bad settings, unknown profile, invalid field value, mismatched collection."""

    exit_code = 2


class UsageError(RagAppError):
    """The caller asked for something that cannot work (missing folder, bad filter...)."""

    exit_code = 2


class ModelNotFoundError(ConfigError):
    """A model path or packaged model is missing; the message says how to get it."""


class DimensionMismatchError(ConfigError):
    """The embedding model's dimension differs from the existing collection's."""


class IngestError(RagAppError):
    """A file could not be read or an ingestion step failed."""


class StrictIngestError(IngestError):
    """``--strict`` refused to write because some files cannot be ingested (exit 3, as for
    skipped files, but nothing was written)."""

    exit_code = 3


class BackendUnavailable(RagAppError):
    """Milvus or the LLM server cannot be reached."""


class MissingDependency(RagAppError):
    """An optional dependency is not installed; the message carries the install hint."""

    exit_code = 2


def require(module: str, extra: str, pip_name: str | None = None) -> object:
    """Import an optional heavy module or raise MissingDependency with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = pip_name or module
        raise MissingDependency(
            f"{module} is not installed ({exc}). Install it with: "
            f"pip install 'rag_app[{extra}]'  (or: pip install {hint})"
        ) from exc
