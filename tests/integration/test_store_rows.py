"""iter_rows / ledger against Milvus Lite with more rows than one query page holds."""

from __future__ import annotations

import uuid
from pathlib import Path

from rag_app.ingest import ledger
from rag_app.store import iter_rows


def test_iter_rows_returns_every_row_with_its_own_metadata(tmp_path: Path) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(tmp_path / "rows.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("embedding", index_type="FLAT", metric_type="L2")
    client.create_collection("t", schema=schema, index_params=index)
    # 9,000 rows over 60 documents: more than two 4,096-row pages, ids in random order.
    rows = [
        {
            "id": str(uuid.uuid4()),
            "doc_id": f"doc{i % 60}.md",
            "doc_hash": f"hash{i % 60}",
            "chunk_count": 150,
            "root_id": "r",
            "embedding": [0.0, 1.0],
        }
        for i in range(9000)
    ]
    for start in range(0, len(rows), 3000):
        client.insert("t", rows[start : start + 3000])

    got = list(iter_rows(client, "t", ["doc_id", "doc_hash"]))
    assert len(got) == 9000 and {r["id"] for r in got} == {r["id"] for r in rows}
    assert all(r["doc_hash"] == "hash" + r["doc_id"][3:-3] for r in got)

    filtered = list(iter_rows(client, "t", ["doc_id"], 'doc_id == "doc7.md"'))
    assert len(filtered) == 150 and {r["doc_id"] for r in filtered} == {"doc7.md"}

    docs = ledger(client, "t")
    assert len(docs) == 60
    assert all(state.complete(f"hash{src[3:-3]}") for src, state in docs.items())
    client.close()
