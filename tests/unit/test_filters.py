"""--where translation to Milvus expressions, string in, string out."""

from __future__ import annotations

import pytest

from rag_app.errors import UsageError
from rag_app.filters import where_to_expr


@pytest.mark.parametrize(
    ("where", "expr"),
    [
        (None, ""),
        ("source=faq/a.md", 'source == "faq/a.md"'),
        ("file_type != pdf", 'file_type != "pdf"'),
        ("source^=user_guide/", r'source like "user\\_guide/%"'),
        ("title~=100%", r'title like "%100\\%%"'),
        ("file_type in md|txt", 'file_type in ["md", "txt"]'),
        ("mtime>=1700000000", "mtime >= 1700000000"),
        ("source='it\"s.md'", 'source == "it\\"s.md"'),
        (
            "source^=faq/ and file_type=md",
            '(source like "faq/%") and (file_type == "md")',
        ),
        (["source^=faq/", "mtime<5"], '(source like "faq/%") and (mtime < 5)'),
    ],
)
def test_translation(where: str | list[str] | None, expr: str) -> None:
    assert where_to_expr(where) == expr


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("colour=red", "unknown field 'colour'"),
        ("source>3", "ordering comparisons need a numeric field"),
        ("mtime=yesterday", "expected an integer"),
        ("source", "cannot parse"),
        ("source=", "missing value"),
        ("mtime^=1", "prefix and substring need a text field"),
    ],
)
def test_errors_name_the_problem(where: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        where_to_expr(where)
