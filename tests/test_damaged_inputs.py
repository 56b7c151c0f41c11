"""A bad file among good ones: a Parquet file with a damaged footer, a .jsonl.gz cut short, a file whose fields fit
no format. Each is found before any work and named on one line with its fix (exit 2), or, with --skip-unreadable,
is one reject while the good files are curated; a cut stream keeps the rows before the cut; the counts add up."""
from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.core.errors import LayoutError, UnusableInput
from raypipe.core.formats import make_format
from raypipe.core.io import Storage, list_input_files
from raypipe.core.scoring import Scorer
from raypipe.curate.chunks import Cut, iter_blocks, plan_chunks
from raypipe.curate.config import CurateConfig
from raypipe.curate.job import plan_inputs
from raypipe.curate.precheck import SNIFF_MAX_BYTES, check_inputs, first_lines
from raypipe.curate.score import score_chunk
from tests.conftest import ROOT, TRAJECTORIES, need_shared_data

pytestmark = pytest.mark.timeout(600)
STORAGE = Storage()
ODD = {"question": "What is 2+2?", "solution": "It is 4.", "answer": "4"}  # no response field: fits no format


def lines_of(name: str, n: int) -> list[bytes]:
    need_shared_data()
    path = next(TRAJECTORIES.glob(f"*{name}*.jsonl"))
    return path.read_bytes().splitlines(keepends=True)[:n]


def good_inputs(folder: Path) -> Path:
    """A few real trajectories in three good files: two JSONL, one Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "amc23.jsonl").write_bytes(b"".join(lines_of("14B_amc23", 6)))
    (folder / "ckpt140.jsonl").write_bytes(b"".join(lines_of("ckpt140_aime24", 4)))
    rows = [json.loads(x) for x in lines_of("27B_math500", 5)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "math500.parquet")
    return folder


def corrupt_footer(folder: Path) -> Path:
    """A Parquet file whose last bytes (the footer and its magic) never arrived."""
    good = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([json.loads(x) for x in lines_of("14B_aime24", 3)]), good)
    path = folder / "broken.parquet"
    path.write_bytes(good.getvalue().to_pybytes()[:-100])
    return path


def cut_stream(folder: Path, compression: str = "gzip") -> tuple[Path, list[bytes], int]:
    """(a compressed JSONL cut at 60 % of its bytes, its lines, how many whole lines its bytes decode to)."""
    lines = lines_of("14B_aime24", 10)
    whole = pa.BufferOutputStream()
    with pa.CompressedOutputStream(whole, compression) as out:
        out.write(b"".join(lines))
    data = whole.getvalue().to_pybytes()
    cut = data[:int(len(data) * 0.6)]
    path = folder / ("cut.jsonl.gz" if compression == "gzip" else "cut.jsonl.zst")
    path.write_bytes(cut)
    if compression == "gzip":
        decodable = zlib.decompressobj(wbits=31).decompress(cut)
    else:
        import zstandard
        decodable = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    return path, lines, decodable.count(b"\n")


def odd_layout(folder: Path) -> Path:
    path = folder / "odd.jsonl"
    path.write_text("".join(json.dumps({**ODD, "id": f"q{i}"}) + "\n" for i in range(3)))
    return path


def config(folder: Path, out: Path, **kw) -> CurateConfig:
    return CurateConfig(input=str(folder), output=str(out), num_cpus=2, **kw)


def test_a_corrupt_parquet_footer_stops_the_job_before_any_work_on_one_line(tmp_path):
    folder = good_inputs(tmp_path / "in")
    bad = corrupt_footer(folder)
    checked = check_inputs(list_input_files(str(folder), STORAGE), STORAGE, None)
    assert list(checked.unusable) == [str(bad)]
    assert list(checked.footers) == [str(folder / "math500.parquet")]  # read once, handed to the planner
    with pytest.raises(UnusableInput) as err:
        plan_inputs(config(folder, tmp_path / "out"), str(folder), STORAGE)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{bad}: unreadable Parquet file (Parquet magic bytes not found")
    assert "replace or remove it, or pass --skip-unreadable" in line
    assert not (tmp_path / "out").exists()

    chunks = plan_inputs(config(folder, tmp_path / "out", skip_unreadable=True), str(folder), STORAGE)
    assert [(Path(c.uri).name, c.kind) for c in chunks] == [
        ("amc23.jsonl", "lines"), ("broken.parquet", "unusable"), ("ckpt140.jsonl", "lines"),
        ("math500.parquet", "row_groups")]
    assert chunks[1].reason.startswith("unreadable Parquet file") and "--skip" not in chunks[1].reason


def test_an_unknown_layout_is_one_short_line_naming_the_file_and_the_nearest_format(tmp_path):
    folder = good_inputs(tmp_path / "in")
    odd = odd_layout(folder)
    with pytest.raises(UnusableInput) as err:
        plan_inputs(config(folder, tmp_path / "out"), str(folder), STORAGE)
    line = str(err.value)
    assert "\n" not in line and len(line) < 400, line
    assert line.startswith(f"{odd}: unknown record layout: fields [answer, id, question, solution]")
    assert "nearest: flat (missing response|output|completion)" in line and "sharegpt" not in line
    assert "--fields problem=PATH,response=PATH" in line and "--skip-unreadable" in line
    told = make_format(None, {"problem": "question", "response": "solution"})  # --fields: no layout to detect
    assert check_inputs(list_input_files(str(folder), STORAGE), STORAGE, told).unusable == {}


def test_the_check_reads_little_and_is_bounded_in_time(tmp_path):
    need_shared_data()
    big = next(TRAJECTORIES.glob("*27B_math500*.jsonl"))  # 3.6 MB of lines up to 130 KB long
    head, damage = first_lines(str(big), STORAGE)
    assert damage is None and head.endswith(b"\n") and 0 < len(head) <= SNIFF_MAX_BYTES
    assert big.read_bytes().startswith(head)
    folder = good_inputs(tmp_path / "in")
    late = check_inputs(list_input_files(str(folder), STORAGE), STORAGE, None, deadline_s=0)
    assert late.footers and not late.unusable  # footers are always read (the planner needs them) ...
    assert set(late.unchecked) <= {str(folder / "amc23.jsonl"), str(folder / "ckpt140.jsonl")}  # ... first rows may wait


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_cut_stream_yields_its_whole_lines_then_the_cut(tmp_path, compression):
    path, lines, decodable = cut_stream(tmp_path, compression)
    assert check_inputs([(str(path), path.stat().st_size)], STORAGE, None).unusable == {}  # only phase 1 can know
    [chunk] = plan_chunks([(str(path), path.stat().st_size)], STORAGE, 1 << 20)
    blocks = list(iter_blocks(chunk, STORAGE, 1 << 16))
    cut, rows_before = blocks[-1]
    got = b"".join(b for b, _ in blocks[:-1])
    assert isinstance(cut, Cut) and not any(isinstance(b, Cut) for b, _ in blocks[:-1])
    assert rows_before == got.count(b"\n") and got == b"".join(lines[:rows_before])
    assert decodable - 1 <= rows_before <= decodable < len(lines)  # at most the line the last small read held
    assert lines[rows_before].startswith(cut.tail)
    assert cut.reason(rows_before) == f"truncated compressed stream after row {rows_before}"


def test_damage_becomes_rejects_and_the_counts_add_up(spawn, tmp_path):
    """Phase 1 on each damaged chunk (as an actor runs it): a whole-file reject; the rows before a cut and one reject
    for the rest; with --skip-unreadable, a block whose fields fit no format, one reject per row."""
    folder = tmp_path / "in"
    folder.mkdir()
    bad, odd = corrupt_footer(folder), odd_layout(folder)
    cut, lines, _ = cut_stream(folder)
    cfg = config(folder, tmp_path / "out", skip_unreadable=True)
    files = list_input_files(str(folder), STORAGE)
    chunks = {Path(c.uri).name: c for c in plan_chunks(files, STORAGE, 1 << 20, unusable={str(bad): "unreadable"})}
    scorer = Scorer(cfg.scoring()).setup()
    try:
        stats = {name: score_chunk(c, cfg, STORAGE, scorer) for name, c in chunks.items()}
        with pytest.raises(LayoutError, match="odd.jsonl: unknown record layout"):
            score_chunk(chunks["odd.jsonl"], config(folder, tmp_path / "out2"), STORAGE, scorer)
    finally:
        scorer.close()

    def part(kind: str, name: str) -> list[dict]:
        sub = "_work/scored" if kind == "scored" else "rejects"
        path = tmp_path / "out" / sub / f"part-{chunks[name].key}.parquet"
        return pq.read_table(path).to_pylist() if path.exists() else []

    for name, s in stats.items():
        assert s["records"] == len(part("scored", name)) + len(part("rejects", name)), name
        assert s["rejected"] == len(part("rejects", name)) and s["damage"], name
    [whole] = part("rejects", "broken.parquet")
    assert (whole["row"], whole["reason"], stats["broken.parquet"]["rows"]) == (None, "whole file: unreadable", 0)
    n = len(part("scored", "cut.jsonl.gz"))
    assert n >= 4 and [r["row"] for r in part("scored", "cut.jsonl.gz")] == list(range(1, n + 1))
    [rest] = part("rejects", "cut.jsonl.gz")
    assert (rest["row"], rest["reason"]) == (n + 1, f"truncated compressed stream after row {n}")
    assert lines[n].decode().startswith(rest["raw"])
    assert stats["cut.jsonl.gz"]["rows"] == n + 1 and stats["cut.jsonl.gz"]["records_per_row"] == {"1": n + 1}
    odd_rejects = part("rejects", "odd.jsonl")
    assert [r["row"] for r in odd_rejects] == [1, 2, 3] and not part("scored", "odd.jsonl")
    assert all(r["reason"].startswith("unknown record layout: fields [answer, id, question, solution]")
               for r in odd_rejects)


def test_skip_unreadable_curates_the_good_files_around_the_damaged_ones(tmp_path, capsys):
    from raypipe.curate.job import run_curate

    folder = good_inputs(tmp_path / "in")
    corrupt_footer(folder), odd_layout(folder)
    _, _, decodable = cut_stream(folder)
    with pytest.raises(UnusableInput):
        run_curate(config(folder, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # stopped before any work
    capsys.readouterr()
    m = run_curate(config(folder, tmp_path / "out", skip_unreadable=True))
    c = m["counts"]
    assert m["balanced"] and c["records"] == c["kept"] + c["dropped"] + c["rejected"]
    rejects = pq.read_table(tmp_path / "out" / "rejects").to_pylist()
    assert sorted((Path(r["shard"]).name, r["row"]) for r in rejects) == sorted(
        [("broken.parquet", None), ("odd.jsonl", None), ("cut.jsonl.gz", c["input_rows"] - 6 - 4 - 5)])
    assert c["rejected"] == 3 and c["input_rows"] - 15 in (decodable, decodable + 1)  # the cut's rows, and its reject
    assert [Path(d["uri"]).name for d in m["damage"]] == ["broken.parquet", "cut.jsonl.gz", "odd.jsonl"]
    said = capsys.readouterr().out
    assert (f"= {c['kept']} kept + {c['dropped']} dropped + {c['rejected']} rejected (3 of the rejects for damaged "
            "input") in said


def test_the_cli_names_the_damaged_file_on_one_line_with_exit_2(spawn, tmp_path):
    folder = good_inputs(tmp_path / "in")
    bad = corrupt_footer(folder)
    r = subprocess.run([sys.executable, "-m", "raypipe.cli", "curate", "--input", str(folder), "--output",
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"raypipe curate: {bad}: unreadable Parquet file") and "--skip-unreadable" in r.stderr
    assert "phase" not in r.stdout and not (tmp_path / "out").exists()


def test_on_s3_the_same_damage_is_found_the_same_way(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    local = good_inputs(tmp_path / "in")
    corrupt_footer(local)
    _, lines, decodable = cut_stream(local)
    client = boto3.client("s3", endpoint_url=endpoint)
    for f in sorted(local.iterdir()):
        client.put_object(Bucket=bucket, Key=f"raw/{f.name}", Body=f.read_bytes())
    storage = Storage(endpoint)
    files = list_input_files(f"s3://{bucket}/raw/", storage)
    checked = check_inputs(files, storage, None)
    assert list(checked.unusable) == [f"s3://{bucket}/raw/broken.parquet"]
    assert str(checked.error()).startswith(f"s3://{bucket}/raw/broken.parquet: unreadable Parquet file")
    assert list(checked.footers) == [f"s3://{bucket}/raw/math500.parquet"]
    [chunk] = [c for c in plan_chunks(files, storage, 1 << 20, checked.footers, checked.unusable) if c.uri.endswith(".gz")]
    blocks = list(iter_blocks(chunk, storage, 1 << 16))
    cut, rows_before = blocks[-1]
    assert isinstance(cut, Cut) and decodable - 1 <= rows_before <= decodable
    assert b"".join(b for b, _ in blocks[:-1]) == b"".join(lines[:rows_before])
