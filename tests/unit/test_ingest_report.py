"""IngestReport: exit codes, the one-line summary and the JSON shape (pure, no models)."""

from __future__ import annotations

from rag_app.ingest import IngestReport
from rag_app.readers import Skipped


def _report(**kwargs: object) -> IngestReport:
    report = IngestReport(collection="docs", root="/data", **kwargs)  # type: ignore[arg-type]
    report.seconds.update(scan=0.01, read=0.5, chunk=0.25, embed=10.0, write=1.25, delete=0.0)
    report.total_seconds = 12.0
    return report


def test_exit_code_is_3_only_when_files_were_skipped() -> None:
    assert _report().exit_code == 0
    assert _report(new=["a.md"]).exit_code == 0
    assert _report(skipped=[Skipped("b.pdf", "corrupt PDF")]).exit_code == 3


def test_summary_lists_every_count_and_stage() -> None:
    report = _report(
        files_seen=5,
        new=["a.md", "b.md"],
        changed=["c.md"],
        unchanged=1,
        deleted=["gone.md"],
        skipped=[Skipped("x.bin", "unsupported")],
        chunks_inserted=48,
        chunks_deleted=7,
    )
    assert report.summary() == (
        "files: 5 seen, 2 new, 1 changed, 1 unchanged, 1 deleted, 1 skipped | "
        "chunks: 48 inserted, 7 deleted | 12.0s (4 chunks/s) | "
        "read=0.5s chunk=0.2s embed=10.0s write=1.2s"
    )


def test_summary_says_nothing_to_do_for_an_up_to_date_collection() -> None:
    report = IngestReport(collection="docs", root="/data", files_seen=3, unchanged=3)
    report.seconds["scan"] = 0.08
    report.total_seconds = 0.1
    assert report.nothing_to_do
    assert report.summary() == (
        "nothing to do: collection is up to date; files: 3 seen, 0 new, 0 changed, "
        "3 unchanged, 0 deleted, 0 skipped | chunks: 0 inserted, 0 deleted | 0.1s (0 chunks/s) "
        "| scan=0.1s read=0.0s chunk=0.0s embed=0.0s write=0.0s"
    )


def test_up_to_date_with_skipped_files_does_not_claim_nothing_to_do() -> None:
    report = _report(files_seen=2, unchanged=1, skipped=[Skipped("bad.pdf", "corrupt PDF")])
    assert not report.summary().startswith("nothing to do")
    assert report.exit_code == 3


def test_to_dict() -> None:
    report = _report(files_seen=2, new=["a.md"], skipped=[Skipped("b.md", "empty file (0 bytes)")])
    report.chunks_inserted = report.chunks_embedded = 24
    d = report.to_dict()
    assert d["files"] == {
        "seen": 2,
        "new": 1,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "skipped": 1,
    }
    assert d["chunks"] == {"inserted": 24, "deleted": 0, "embedded": 24}
    assert d["skipped"] == [{"source": "b.md", "reason": "empty file (0 bytes)"}]
    assert d["seconds"]["embed"] == 10.0 and d["total_seconds"] == 12.0
    assert d["chunks_per_second"] == 2.0
    assert d["up_to_date"] is False
