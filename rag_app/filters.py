"""``--where`` metadata filters -> Milvus boolean expressions (pure, string in, string out).

Grammar, conditions joined by `` and `` or ``,`` (all must hold)::

    source^=guides/          prefix          -> source like "guides/%"
    source=faq/a.md          equality        -> source == "faq/a.md"
    file_type!=pdf           inequality      -> file_type != "pdf"
    file_type in md|txt      membership      -> file_type in ["md", "txt"]
    title~=HNSW              substring       -> title like "%HNSW%"
    mtime>=1700000000        numeric compare -> mtime >= 1700000000
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rag_app.errors import UsageError

FIELDS = {"source": str, "file_type": str, "title": str, "doc_id": str, "mtime": int}
_COND = re.compile(
    r"^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*"
    r"(?P<op>\^=|~=|!=|>=|<=|==|=|>|<|\s+in\s+)\s*(?P<value>.*?)\s*$"
)
_SPLIT = re.compile(r"\s+and\s+|,", re.IGNORECASE)


def quote(value: str) -> str:
    """A Milvus expression string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _like_literal(value: str) -> str:
    # LIKE treats % and _ as wildcards; paths are full of underscores.
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("\\", "\\\\").replace('"', '\\"')


def _value(key: str, raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1]
    if FIELDS[key] is int:
        try:
            return str(int(raw))
        except ValueError:
            raise UsageError(f"--where {key}: expected an integer, got {raw!r}") from None
    return quote(raw)


def condition_to_expr(condition: str) -> str:
    match = _COND.match(condition)
    if not match:
        raise UsageError(
            f"--where: cannot parse {condition.strip()!r}; write KEY OP VALUE with OP one of "
            "= != ^= ~= > >= < <= in (e.g. source^=guides/)"
        )
    key, op, raw = match["key"], match["op"].strip(), match["value"]
    if key not in FIELDS:
        raise UsageError(f"--where: unknown field {key!r}; filterable: {', '.join(FIELDS)}")
    if raw == "":
        raise UsageError(f"--where {key}{op}: missing value")
    if op in {"^=", "~="}:
        if FIELDS[key] is not str:
            raise UsageError(f"--where {key}{op}: prefix and substring need a text field")
        pattern = _like_literal(raw.strip("\"'"))
        return f'{key} like "{pattern}%"' if op == "^=" else f'{key} like "%{pattern}%"'
    if op == "in":
        items = [v for v in raw.split("|") if v.strip()]
        if not items:
            raise UsageError(f"--where {key} in: give values separated by |")
        return f"{key} in [{', '.join(_value(key, v) for v in items)}]"
    if op in {">", ">=", "<", "<="} and FIELDS[key] is not int:
        raise UsageError(f"--where {key}{op}: ordering comparisons need a numeric field (mtime)")
    return f"{key} {'==' if op in {'=', '=='} else op} {_value(key, raw)}"


def where_to_expr(where: str | Iterable[str] | None) -> str:
    """Translate one or more --where strings into a single Milvus filter expression."""
    if where is None:
        return ""
    clauses = [where] if isinstance(where, str) else list(where)
    parts = [p for clause in clauses for p in _SPLIT.split(clause) if p.strip()]
    exprs = [condition_to_expr(p) for p in parts]
    if len(exprs) <= 1:
        return "".join(exprs)
    return " and ".join(f"({e})" for e in exprs)
