"""Paired problems: the controlled comparison's data. Each source is scored by the curation job itself (rule
keep-all, so `curated/` holds exactly its verified-correct, non-duplicate records), the sources are joined on a
problem key (curation's `problem_id`, the stable hash of the normalised problem text, or the given `id`), and only
the problems where *every* source has a verified-correct trajectory are kept.

Outputs under `--output`: `inputs/<name>/` (the original input rows of the paired problems, byte for byte for
JSONL, one file per input file: what each arm's curation reads), `scored/<name>/` (the scoring runs), and
`pairing.json` (problems per source, overlap, paired, every excluded problem with its reason).
"""
from __future__ import annotations

import json
import posixpath
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.curate.config import CurateConfig
from raypipe.experiment.config import READ_FIELDS, PairConfig

EXCLUDED_SAMPLE = 200  # excluded problems listed one by one in pairing.json (all are counted)


def scoring_config(cfg, name: str, uri: str) -> CurateConfig:
    values = {n: getattr(cfg, n) for n in READ_FIELDS}
    return CurateConfig(input=uri, output=io.join(cfg.output, "scored", name), rule="keep-all",
                        keep_incorrect=False, plugins=cfg.plugins, **values)


def problem_key(key: str, ids: list, problem_ids: list) -> list[str]:
    if key == "problem_id":
        return [str(p) for p in problem_ids]
    return [str(i).split("#", 1)[0] for i in ids]


def source_keys(scored: pa.Table | None, key: str) -> tuple[set[str], dict[str, Counter], dict[str, set]]:
    """(keys with a verified-correct record, verdict counts per key, input rows (shard, row) per key)."""
    correct: set[str] = set()
    verdicts: dict[str, Counter] = defaultdict(Counter)
    rows: dict[str, set] = defaultdict(set)
    if scored is None:
        return correct, verdicts, rows
    cols = {c: scored.column(c).to_pylist() for c in ("id", "problem_id", "verdict", "decision", "reason", "shard",
                                                      "row")}
    for k, verdict, decision, reason, shard, row in zip(problem_key(key, cols["id"], cols["problem_id"]),
                                                        cols["verdict"], cols["decision"], cols["reason"],
                                                        cols["shard"], cols["row"]):
        duplicate = (reason or "").startswith("duplicate")
        verdicts[k]["duplicate" if duplicate else str(verdict)] += 1
        rows[k].add((shard, int(row)))
        if decision == "keep":  # keep-all: kept = verified correct and not a duplicate
            correct.add(k)
    return correct, verdicts, rows


def pair_sources(per_source: dict[str, tuple[set, dict, dict]]) -> dict:
    """The paired keys and the account of every other problem (pure: the test's hand-built cases come here)."""
    names = list(per_source)
    seen = {n: set(v[1]) for n, v in per_source.items()}
    correct = {n: v[0] for n, v in per_source.items()}
    everything = set().union(*seen.values())
    paired = set.intersection(*correct.values())
    excluded, reasons = {}, Counter()
    for k in sorted(everything - paired):
        why = []
        for n in names:
            if k not in seen[n]:
                why.append(f"{n}: absent")
            elif k not in correct[n]:
                counts = ", ".join(f"{c} {v}" for v, c in sorted(per_source[n][1][k].items()))
                why.append(f"{n}: no verified-correct trajectory ({counts})")
        excluded[k] = why
        for w in why:
            reasons[w.split(" (")[0]] += 1
    return {
        "sources": {n: {"problems": len(seen[n]), "problems_with_correct": len(correct[n]),
                        "records": sum(sum(c.values()) for c in per_source[n][1].values())} for n in names},
        "overlap": len(set.intersection(*seen.values())),
        "union": len(everything),
        "paired": len(paired),
        "paired_keys": sorted(paired),
        "excluded": len(excluded),
        "exclusion_reasons": dict(sorted(reasons.items())),
        "excluded_problems": dict(list(excluded.items())[:EXCLUDED_SAMPLE]),
    }


def write_inputs(rows_by_key: dict[str, set], keys: set[str], out: str, storage: io.Storage) -> dict[str, int]:
    """The original input rows of the paired problems, one output file per input file; {file: rows written}."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for k in keys:
        for shard, row in rows_by_key.get(k, ()):
            wanted[shard].add(row)
    io.remove_tree(out, storage)
    written = {}
    for i, shard in enumerate(sorted(wanted)):
        base = posixpath.basename(shard).split(".")[0]
        rows = wanted[shard]
        if shard.endswith(".parquet"):
            fs, path = storage.filesystem(shard)
            table = pq.read_table(path, filesystem=fs)
            uri = io.join(out, f"{i:04d}-{base}.parquet")
            io.write_parquet(table.take([r - 1 for r in sorted(rows)]), uri, storage)  # rows count from 1
        else:
            lines = [r.raw for r in io.iter_raw_rows(shard, storage) if r.index in rows]
            uri = io.join(out, f"{i:04d}-{base}.jsonl")
            io.write_text("".join(line + "\n" for line in lines), uri, storage)
        written[uri] = len(rows)
    return written


def run_pairing(cfg) -> dict:
    """Score every source with the curation job, pair, write the arms' inputs and pairing.json."""
    from raypipe.curate.job import run_curate

    storage = io.Storage(cfg.s3_endpoint, cfg.s3_region)
    names = cfg.source_names()
    per_source, manifests = {}, {}
    for name, uri in zip(names, cfg.inputs):
        scoring = scoring_config(cfg, name, uri)
        manifests[name] = run_curate(scoring)
        cols = ["id", "problem_id", "verdict", "decision", "reason", "shard", "row"]
        parts = [io.read_parquet_dir(io.join(scoring.output, d), storage, columns=cols) for d in ("curated", "dropped")]
        parts = [p for p in parts if p is not None]
        per_source[name] = source_keys(pa.concat_tables(parts) if parts else None, cfg.key)
    report = pair_sources(per_source)
    keys = set(report["paired_keys"])
    inputs = {}
    for name in names:
        files = write_inputs(per_source[name][2], keys, io.join(cfg.output, "inputs", name), storage)
        inputs[name] = {"uri": io.join(cfg.output, "inputs", name), "files": files, "rows": sum(files.values())}
    report = {"key": cfg.key, "inputs": dict(zip(names, cfg.inputs)), **report, "arm_inputs": inputs,
              "scoring": {n: {"counts": m.get("counts"),
                              "verdicts": {s: v.get("verdicts") for s, v in m.get("by_source", {}).items()},
                              "report": io.join(cfg.output, "scored", n, "report.html")} for n, m in manifests.items()},
              "settings": json.loads(cfg.model_dump_json())}
    io.write_text(json.dumps(report, indent=1, default=str), io.join(cfg.output, "pairing.json"), storage)
    print(f"[pair] {report['paired']} problems paired of {report['union']} ({report['overlap']} in every source); "
          f"excluded: {report['exclusion_reasons']}; -> {io.join(cfg.output, 'pairing.json')}", flush=True)
    return report
