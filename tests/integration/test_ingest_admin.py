"""`collections`, `delete --source`, chunk metadata and `--where` filters against Milvus Lite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rag_app.app import RagApp
from rag_app.cli import main
from tests.conftest import make_settings, write_files
from tests.integration.test_ingest_incremental import rows

pytestmark = pytest.mark.slow

# Same topic everywhere, so only the filter can keep sources out of the top-k. The '_' in
# sub_dir/ is a LIKE wildcard unless escaped: subXdir/ and sub_dirty/ must not match it.
CORPUS = {
    "sub_dir/a.md": "# Index A\n\nHNSW index parameters: M and efConstruction.\n",
    "sub_dir/deeper/b.txt": "HNSW index parameters control graph degree and build effort.\n",
    "subXdir/c.md": "# Index C\n\nHNSW index parameters: M, efConstruction and ef.\n",
    "sub_dirty/d.md": "HNSW index parameters and their defaults.\n",
    "top.html": "<html><head><title>Top page</title></head><body><p>HNSW index "
    "parameters explained.</p></body></html>",
}


def test_collections_and_delete_source(tmp_path: Path, rag_home: Path) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    runner = CliRunner()
    home = ["--home", str(rag_home)]
    assert runner.invoke(main, [*home, "-q", "ingest", str(corpus)]).exit_code == 0
    other = write_files(tmp_path / "other", {"x.md": "Another collection.\n"})
    res = runner.invoke(main, [*home, "-c", "other_docs", "-q", "ingest", str(other)])
    assert res.exit_code == 0, res.output

    res = runner.invoke(main, [*home, "collections", "--json"])
    assert res.exit_code == 0, res.output
    listed = {c["collection"]: c for c in json.loads(res.stdout)["collections"]}
    assert listed["rag_app"]["documents"] == 5 and listed["rag_app"]["chunks"] == 5
    assert listed["other_docs"]["documents"] == 1 and listed["rag_app"]["dim"] == 384
    res = runner.invoke(main, [*home, "collections"])
    assert "rag_app" in res.stdout and "5 docs" in res.stdout

    res = runner.invoke(main, [*home, "delete", "--source", "sub_dir/a.md", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"source": "sub_dir/a.md", "chunks_deleted": 1}
    res = runner.invoke(main, [*home, "collections", "--json"])
    listed = {c["collection"]: c for c in json.loads(res.stdout)["collections"]}
    assert listed["rag_app"]["documents"] == 4 and listed["rag_app"]["chunks"] == 4
    assert listed["other_docs"]["chunks"] == 1

    res = runner.invoke(main, [*home, "delete", "--source", "sub_dir/a.md"])
    assert res.exit_code != 0 and "no chunks for sub_dir/a.md" in res.stdout

    # The deleted file is still on disk: the next ingest brings it back, and only it.
    res = runner.invoke(main, [*home, "ingest", str(corpus), "--json"])
    data = json.loads(res.stdout)
    assert data["files"]["new"] == 1 and data["files"]["unchanged"] == 4


def test_metadata_and_where_filters_in_milvus_lite(
    tmp_path: Path, rag_home: Path, embed_model: Any
) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    with RagApp(make_settings(rag_home), embed_model=embed_model) as app:
        app.ingest(corpus)
        everything = app.retrieve("HNSW index parameters", top_k=10)
        assert len(everything) == 5

        meta = {h.source: h.metadata for h in everything}
        assert meta["sub_dir/a.md"]["title"] == "Index A"
        assert meta["top.html"]["title"] == "Top page" and meta["top.html"]["file_type"] == "html"
        assert meta["sub_dir/deeper/b.txt"]["file_type"] == "txt"
        mtime = int((corpus / "subXdir/c.md").stat().st_mtime)
        assert meta["subXdir/c.md"]["mtime"] == mtime

        hits = app.retrieve("HNSW index parameters", top_k=10, where="source^=sub_dir/")
        assert sorted(h.source for h in hits) == ["sub_dir/a.md", "sub_dir/deeper/b.txt"]
        hits = app.retrieve("HNSW index parameters", top_k=10, where="file_type=md")
        assert sorted(h.source for h in hits) == sorted(
            ["sub_dir/a.md", "subXdir/c.md", "sub_dirty/d.md"]
        )
        hits = app.retrieve(
            "HNSW index parameters", top_k=10, where=["source^=sub", "title~=Index"]
        )
        assert sorted(h.source for h in hits) == sorted(["sub_dir/a.md", "subXdir/c.md"])
        hits = app.retrieve("HNSW index parameters", top_k=10, where=f"mtime>={mtime + 10**6}")
        assert hits == []
        assert len(rows(app)) == 5


def test_cli_retrieve_where(tmp_path: Path, rag_home: Path) -> None:
    corpus = write_files(tmp_path / "corpus", CORPUS)
    runner = CliRunner()
    home = ["--home", str(rag_home)]
    assert runner.invoke(main, [*home, "-q", "ingest", str(corpus)]).exit_code == 0
    res = runner.invoke(
        main,
        [
            *home,
            "retrieve",
            "HNSW index parameters",
            "-k",
            "10",
            "--where",
            "source^=sub_dir/",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    sources = sorted(s["source"] for s in json.loads(res.stdout)["sources"])
    assert sources == ["sub_dir/a.md", "sub_dir/deeper/b.txt"]
