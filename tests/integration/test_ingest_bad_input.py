"""A folder of deliberately broken files: each is skipped with its path and reason, the rest is
ingested, and the exit codes say which happened. Real MiniLM + Milvus Lite."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag_app.app import RagApp
from rag_app.cli import main
from rag_app.errors import StrictIngestError
from tests.conftest import make_settings, write_files
from tests.integration.test_ingest_incremental import rows

pytestmark = pytest.mark.slow

GOOD = {
    "good/hnsw.md": "# HNSW\n\nM sets the number of edges per node in the HNSW graph.\n",
    "good/notes.txt": "Compaction merges small segments into larger ones.\n",
}

# source -> a fragment of the reason it must be reported with
EXPECTED_REASONS = {
    "bad/empty.md": "empty file",
    "bad/binary.md": "binary content",
    "bad/latin1.txt": "not valid UTF-8",
    "bad/misnamed.pdf": "not a PDF",
    "bad/truncated.pdf": "corrupt PDF",
    "bad/data.json": "unsupported file type '.json'",
    "bad/broken-link.md": "broken symlink",
    "bad/pipe.md": "not a regular file",
    "bad/blank.md": "no text could be extracted",
}


def broken_folder(root: Path) -> Path:
    write_files(
        root,
        {
            **GOOD,
            "bad/empty.md": b"",
            "bad/binary.md": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
            "bad/latin1.txt": "café crème".encode("latin-1"),
            "bad/misnamed.pdf": "this is text, not a PDF\n",
            "bad/truncated.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\n",
            "bad/data.json": '{"a": 1}\n',
            "bad/blank.md": "   \n\n\t\n",
        },
    )
    # Tests run as root, so chmod 000 reads fine; these are unreadable for any user.
    (root / "bad/broken-link.md").symlink_to(root / "bad/does-not-exist.md")
    os.mkfifo(root / "bad/pipe.md")  # would block a naive reader forever
    (root / "bad/folder.md").mkdir()  # a directory named like a file: not a file, not listed
    return root


def test_broken_files_are_skipped_with_reasons(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    corpus = broken_folder(tmp_path / "corpus")
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        report = app.ingest(corpus)
        stored = rows(app)
    assert sorted(report.new) == sorted(GOOD)
    reasons = {s.source: s.reason for s in report.skipped}
    assert set(reasons) == set(EXPECTED_REASONS)
    for source, fragment in EXPECTED_REASONS.items():
        assert fragment in reasons[source], (source, reasons[source])
    assert report.exit_code == 3
    assert {src for src, _ in stored.values()} == set(GOOD)


def test_cli_exit_codes(tmp_path: Path, rag_home: Path) -> None:
    runner = CliRunner()
    home = ["--home", str(rag_home)]
    corpus = broken_folder(tmp_path / "corpus")

    res = runner.invoke(main, [*home, "ingest", str(corpus)])
    assert res.exit_code == 3, res.output
    assert "files: 11 seen, 2 new" in res.stderr and "9 skipped" in res.stderr
    for source, fragment in EXPECTED_REASONS.items():
        assert f"skipped {source}: " in res.stderr and fragment in res.stderr

    # --quiet drops the summary but still lists what needs fixing.
    res = runner.invoke(main, [*home, "-q", "ingest", str(corpus)])
    assert res.exit_code == 3
    assert "files:" not in res.stderr and "skipped bad/pipe.md: " in res.stderr

    res = runner.invoke(main, [*home, "ingest", str(corpus / "good")])
    assert res.exit_code == 0, res.output

    res = runner.invoke(main, [*home, "ingest", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    res = runner.invoke(main, [*home, "--profile", "no-such-profile", "ingest", str(corpus)])
    assert res.exit_code == 2 and "no-such-profile" in res.stderr


def test_strict_refuses_before_writing_anything(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", GOOD)
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        app.ingest(corpus)
        before = rows(app)

        # A new file, a changed file, a deleted file and one corrupt file: all or nothing.
        write_files(
            corpus,
            {
                "good/new.md": "Partitions split a collection.\n",
                "good/hnsw.md": "# HNSW\n\nef sets the search candidate list size.\n",
                "bad/truncated.pdf": b"%PDF-1.4\n%broken\n",
            },
        )
        (corpus / "good/notes.txt").unlink()
        with pytest.raises(StrictIngestError) as err:
            app.ingest(corpus, strict=True)
        assert err.value.exit_code == 3
        assert "bad/truncated.pdf" in str(err.value) and "nothing was written" in str(err.value)
        assert rows(app) == before
        with pytest.raises(StrictIngestError):  # --recreate waits for the check too
            app.ingest(corpus, strict=True, recreate=True)
        assert rows(app) == before

        report = app.ingest(corpus)  # without --strict the good part goes in
        assert report.new == ["good/new.md"] and report.changed == ["good/hnsw.md"]
        assert report.deleted == ["good/notes.txt"] and report.exit_code == 3
        after = rows(app)

        rebuilt = app.ingest(corpus, recreate=True)  # from scratch: same rows again
        assert sorted(rebuilt.new) == ["good/hnsw.md", "good/new.md"]
        assert rows(app) == after


def test_file_removed_between_scan_and_read(
    tmp_path: Path, rag_home: Path, embed_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rag_app.ingest as ingest_mod

    corpus = write_files(tmp_path / "corpus", {**GOOD, "gone/vanishing.md": "Soon gone.\n"})
    real_read = ingest_mod.read_file

    def read_after_delete(path: Path, *args: Any, **kwargs: Any) -> Any:
        if path.name == "vanishing.md":
            path.unlink()  # another process removed it after the scan hashed it
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(ingest_mod, "read_file", read_after_delete)
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        report = app.ingest(corpus)
        assert [s.source for s in report.skipped] == ["gone/vanishing.md"]
        assert "No such file" in report.skipped[0].reason
        assert sorted(report.new) == sorted(GOOD)
        assert {src for src, _ in rows(app).values()} == set(GOOD)
