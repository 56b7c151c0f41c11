"""Big inputs as chunks: every line read once with its row number, whatever the chunk and block sizes; a split
file curates to the same outputs as an unsplit one; a chunk lost mid-way is rescored alone on resume; the driver
finds 1,000 completion markers on S3 with one listing."""
from __future__ import annotations

import glob
import gzip
import json
import random
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.core.io import Storage
from raypipe.curate.chunks import count_newlines, first_rows, iter_blocks, needs_index, plan_chunks
from tests.conftest import TRAJECTORIES, need_shared_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_fault_proxy import FaultProxy  # noqa: E402

pytestmark = pytest.mark.timeout(600)
STORAGE = Storage()


def jsonl_bytes(seed: int) -> bytes:
    """Lines of very different lengths (some longer than a chunk), blank lines, CRLF, maybe no final newline."""
    rng = random.Random(seed)
    lines = []
    for i in range(300):
        n = rng.choice([0, 1, 5, 50, 400, 3000])
        lines.append(b"" if n == 0 else json.dumps({"i": i, "t": "x" * n}).encode() + rng.choice([b"", b"\r"]))
    return b"\n".join(lines) + rng.choice([b"", b"\n"])


def read_all(chunks) -> list[tuple[int, bytes]]:
    counts = {c.key: count_newlines(c.uri, c.start, c.end, STORAGE) for c in needs_index(chunks)}
    got = []
    for c in first_rows(chunks, counts):
        for block, row in iter_blocks(c, STORAGE, 97):
            got += [(row + j, line) for j, line in enumerate(block.split(b"\n")) if line]
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_line_is_read_once_with_its_row_number(tmp_path, seed):
    data = jsonl_bytes(seed)
    path = tmp_path / "a.jsonl"
    path.write_bytes(data)
    want = [(i, line) for i, line in enumerate(data.split(b"\n")) if line]
    for chunk_bytes in (100, 777, 4096, 10**7):
        chunks = plan_chunks([(str(path), len(data))], STORAGE, chunk_bytes)
        assert len(chunks) == -(-len(data) // chunk_bytes)
        assert read_all(chunks) == want, chunk_bytes
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    chunks = plan_chunks([(str(gz), gz.stat().st_size)], STORAGE, 100)
    assert [c.kind for c in chunks] == ["stream"]  # a compressed file cannot be split: it streams in blocks
    assert read_all(chunks) == want


def test_parquet_splits_by_row_groups(tmp_path):
    table = pa.table({"i": list(range(1000)), "t": ["y" * (i % 50) for i in range(1000)]})
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=64)
    chunks = plan_chunks([(str(path), path.stat().st_size)], STORAGE, 2000)
    assert len(chunks) > 4 and chunks[1].first_row > 0
    rows = [(row + j, v) for c in chunks for t, row in iter_blocks(c, STORAGE, 500)
            for j, v in enumerate(t.column("i").to_pylist())]
    assert rows == [(i, i) for i in range(1000)]


def outputs(out: Path) -> dict:
    parts = {}
    for part in ("curated", "dropped", "rejects"):
        rows = [r for f in sorted(glob.glob(str(out / part / "*.parquet"))) for r in pq.read_table(f).to_pylist()]
        parts[part] = sorted(json.dumps({k: v for k, v in r.items() if k != "verify_ms"}, sort_keys=True,
                                        default=str) for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    return {**parts, "counts": manifest["counts"], "thresholds": manifest["policy"]["thresholds"]}


def test_split_file_curates_like_unsplit_and_resumes_one_chunk(tmp_path, capsys):
    from raypipe.curate.config import CurateConfig
    from raypipe.curate.job import run_curate

    need_shared_data()
    big = tmp_path / "in" / "all.jsonl"
    big.parent.mkdir()
    lines = [line for f in sorted(TRAJECTORIES.glob("*.jsonl")) for line in f.read_text().splitlines()]
    lines.insert(100, "{not json")  # a reject keeps its row number (line 101) wherever its chunk starts
    big.write_text("\n".join(lines) + "\n")
    assert big.stat().st_size > 4 << 20

    run_curate(CurateConfig(input=str(big.parent), output=str(tmp_path / "whole"), num_cpus=2))
    split = CurateConfig(input=str(big.parent), output=str(tmp_path / "split"), num_cpus=2, chunk_mb=1, block_mb=1)
    run_curate(split)
    whole, parts = outputs(tmp_path / "whole"), outputs(tmp_path / "split")
    assert parts == whole
    assert whole["counts"]["rejected"] == 1 and json.loads(whole["rejects"][0])["row"] == 101
    markers = sorted((tmp_path / "split" / "_work" / "done").glob("*.json"))
    assert len(markers) >= 4

    victim = markers[2]  # as if its actor died mid-way: a partial part file, no marker
    key = victim.stem
    scored = tmp_path / "split" / "_work" / "scored" / f"part-{key}.parquet"
    scored.write_bytes(scored.read_bytes()[:100])
    victim.unlink()
    capsys.readouterr()
    run_curate(split)
    said = capsys.readouterr().out
    assert f"{len(markers) - 1} already scored, 1 to score" in said, said
    assert outputs(tmp_path / "split") == whole


def test_the_driver_finds_a_thousand_markers_with_one_listing(s3_bucket):
    from raypipe.curate.chunks import Chunk
    from raypipe.curate.job import unfinished

    endpoint, bucket = s3_bucket
    client = boto3.client("s3", endpoint_url=endpoint)
    chunks = [Chunk(f"s3://{bucket}/raw/f{i}.jsonl", f"f{i}-abcd", "lines", 0, 10, 0, 10, i) for i in range(1000)]
    for c in chunks[:-3]:
        client.put_object(Bucket=bucket, Key=f"out/_work/done/{c.key}.json", Body=b"{}")
    with FaultProxy(endpoint) as proxy:
        pending = unfinished(chunks, f"s3://{bucket}/out", Storage(proxy.endpoint))
    assert [c.key for c in pending] == [c.key for c in chunks[-3:]]
    assert proxy.counts["requests"] <= 3, proxy.counts  # a listing of 997 keys: one page (two at most)
