"""The curation job on Ray Data, in three resumable phases.

1. score (actors): each input shard is read, normalised, verified and measured; the scored rows go to
   `_work/scored/`, bad rows to `rejects/`, then a completion marker is written (datatrove style). A rerun
   skips shards whose marker exists.
2. select (driver): the rank columns of all scored rows give exact per-source thresholds.
3. write (tasks): every scored shard is split into `curated/` and `dropped/` under the one policy.
Then manifest.json and report.html.
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.curate.ablate import delete_steps_table
from raypipe.curate.config import CurateConfig
from raypipe.core.errors import ConfigMismatch, LayoutError
from raypipe.core.formats import InputFormat, make_format
from raypipe.core.schema import dominant_markup, stable_hash
from raypipe.core.scoring import Scorer
from raypipe.core.policy import Policy
from raypipe.curate.dedup import KEY_COLUMNS, apply_fixes, find_duplicates
from raypipe.curate.select import compute_thresholds
from raypipe.curate.shard import load_shard

# What the manifest and the report read of every scored row, beside what the policy's proxy and rule need.
REPORT_COLUMNS = ["source", "verdict", "branch_ratio", "n_steps", "n_tokens", "markup", "answer_source",
                  "final_chars", "unconsumed_text", *KEY_COLUMNS]


def rank_columns(config: CurateConfig) -> list[str]:
    """The scored columns phase 2 reads: the decision's (proxy and rule declare theirs) and the report's."""
    needed = config.policy().columns() + REPORT_COLUMNS
    if config.reference_source:
        needed += ["problem_id", "n_steps"]
    return list(dict.fromkeys(needed))


def _say(msg: str) -> None:
    print(f"[raypipe] {msg}", flush=True)


class ScoreShards:
    """Ray Data actor: score whole input shards. One Scorer (and its verifier workers) per actor."""

    def __init__(self, config: dict):
        self.config = CurateConfig(**config)
        self.storage = io.Storage(self.config.s3_endpoint, self.config.s3_region)
        self.scorer = Scorer(self.config.scoring()).setup()
        self.fmt = make_format(self.config.format, self.config.fields)

    def __call__(self, batch: dict) -> dict:
        out: dict[str, list] = defaultdict(list)
        for uri, key in zip(batch["uri"], batch["key"]):
            try:
                score_shard(str(uri), str(key), self.config, self.storage, self.scorer, self.fmt)
                out["error"].append("")
            except LayoutError as e:  # the whole file is unusable: reported to the driver, which stops the job
                out["error"].append(str(e))
            out["key"].append(str(key))
        return dict(out)


def score_shard(uri: str, key: str, config: CurateConfig, storage: io.Storage, scorer: Scorer,
                fmt: InputFormat | None = None) -> dict:
    t0 = time.perf_counter()
    records, rejects, n_rows = load_shard(uri, storage, config.max_response_chars, fmt)
    parts = [scorer.score(records.slice(i, config.batch_rows)) for i in range(0, records.num_rows, config.batch_rows)]
    scored = pa.concat_tables(parts) if parts else scorer.score(records)
    scored = scored.append_column("content_hash", content_hashes(scored))
    scored = scored.append_column("unconsumed_text", unconsumed_text(scored.column("meta")))
    out = config.output
    io.write_parquet(scored, io.join(out, "_work", "scored", f"part-{key}.parquet"), storage)
    if rejects.num_rows:
        rejects = rejects.append_column("decision", pa.array(["reject"] * rejects.num_rows, type=pa.string()))
        io.write_parquet(rejects, io.join(out, "rejects", f"part-{key}.parquet"), storage)
    stats = {"uri": uri, "key": key, "rows": n_rows, "records": scored.num_rows + rejects.num_rows,
             "rejected": rejects.num_rows, "records_per_row": records_per_row(scored, rejects),
             "bytes": int(pc.sum(pc.binary_length(records.column("response"))).as_py() or 0),
             "seconds": time.perf_counter() - t0}
    io.write_text(json.dumps(stats), io.join(out, "_work", "done", f"{key}.json"), storage)
    return stats


def write_shard(key: str, config: CurateConfig, policy: Policy, storage: io.Storage) -> dict:
    """Phase 3 for one shard: the decision for every row, then curated/ and dropped/."""
    out = config.output
    scored = io.read_parquet(io.join(out, "_work", "scored", f"part-{key}.parquet"), storage)
    fixes_uri = io.join(out, "_work", "dedup", f"part-{key}.parquet")
    scored = apply_fixes(scored, io.read_parquet(fixes_uri, storage) if io.exists(fixes_uri, storage) else None)
    decided = Scorer(config.scoring()).decide(scored, policy)
    kept = decided.filter(pc.equal(decided.column("decision"), "keep"))
    dropped = decided.filter(pc.equal(decided.column("decision"), "drop"))
    if config.delete_steps > 0 and kept.num_rows:
        kept = delete_steps_table(kept, config.delete_steps, config.seed, config.segmenter)
    for part, table in (("curated", kept), ("dropped", dropped)):
        uri = io.join(out, part, f"part-{key}.parquet")
        if table.num_rows:
            io.write_parquet(table, uri, storage)
    counts = Counter(zip(decided.column("source").to_pylist(), decided.column("decision").to_pylist()))
    return {"key": key, "counts": json.dumps([[s, d, n] for (s, d), n in counts.items()])}


def _prepare_output(config: CurateConfig, storage: io.Storage) -> None:
    marker = io.join(config.output, "_work", "config.json")
    previous = io.read_text(marker, storage)
    if previous is not None:
        old = json.loads(previous)
        if old.get("hash") != config.hash():
            if not config.overwrite:
                changed = sorted(k for k, v in config.result_fields().items() if old.get("config", {}).get(k) != v)
                raise ConfigMismatch(
                    f"{config.output} holds a run with a different config (changed: {', '.join(changed)}); "
                    "use another --output or pass --overwrite to replace it")
            _say(f"--overwrite: removing the earlier run in {config.output}")
            for sub in ("_work", "curated", "dropped", "rejects"):
                io.remove_tree(io.join(config.output, sub), storage)
    elif config.overwrite:
        for sub in ("_work", "curated", "dropped", "rejects"):
            io.remove_tree(io.join(config.output, sub), storage)
    io.write_text(json.dumps({"hash": config.hash(), "config": config.result_fields()}, default=str), marker, storage)


def run_curate(config: CurateConfig) -> dict:
    import ray

    from raypipe.ray_env import actor_pool, ensure_ray
    from raypipe.curate.report import build_manifest, write_report

    t_start = time.time()
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    inputs = io.list_inputs(config.input, storage)
    _prepare_output(config, storage)
    ensure_ray(config.num_cpus, plugins=config.plugins)
    shards = [{"uri": u, "key": io.shard_key(u)} for u in inputs]
    done = {s["key"] for s in shards if io.exists(io.join(config.output, "_work", "done", f"{s['key']}.json"), storage)}
    pending = [s for s in shards if s["key"] not in done]
    _say(f"{len(inputs)} input shards, {len(done)} already scored, {len(pending)} to score -> {config.output}")

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.execution_options.verbose_progress = False
    if pending:
        pool = actor_pool(config.actors, len(pending), config.num_cpus)
        _say(f"phase 1/3 score: {pool.size} actors x {pool.num_cpus:g} CPU")
        results = ray.data.from_items(pending).map_batches(
            ScoreShards, fn_constructor_kwargs={"config": config.model_dump()}, batch_size=1,
            # Ray Data's defaults restart actors and retry their tasks without limit, which a lost node needs
            # (a capped budget is spent before the node is declared dead); a rescored shard rewrites the same files.
            compute=ray.data.ActorPoolStrategy(size=pool.size), num_cpus=pool.num_cpus,
        ).take_all()
        errors = [r["error"] for r in results if r["error"]]
        if errors:
            raise LayoutError("; ".join(errors))
    stats = [json.loads(io.read_text(io.join(config.output, "_work", "done", f"{s['key']}.json"), storage))
             for s in shards]

    _say("phase 2/3 select: duplicates, then exact per-source thresholds over all scored records")
    ranks = io.read_parquet_dir(io.join(config.output, "_work", "scored"), storage, columns=rank_columns(config))
    policy, fixes = config.policy(), None
    if ranks is not None and ranks.num_rows:
        fixes = find_duplicates(ranks, {s["uri"]: i for i, s in enumerate(shards)})
        write_fixes(fixes, shards, config.output, storage)
        ranks = apply_fixes(ranks, fixes)
        ranked = ranks.filter(pc.is_null(ranks.column("duplicate_of")))
        if config.reference_input:  # scored for its step counts only (raypipe.curate.reference), never written
            from raypipe.curate.reference import reference_input_steps

            policy = policy.model_copy(update={"reference_steps": reference_input_steps(config, storage)})
        elif config.reference_source:
            policy = policy.model_copy(update={"reference_steps": reference_steps(ranked, config.reference_source)})
        policy = compute_thresholds(ranked, policy)
        policy = policy.model_copy(update={"markup_by_source": markup_by_source(ranked)})

    _say("phase 3/3 write: curated/ and dropped/")
    policy_json = policy.model_dump_json()
    per_shard = ray.data.from_items([{"key": s["key"]} for s in shards]).map_batches(
        _write_batch, fn_kwargs={"config": config.model_dump(), "policy": policy_json}, batch_size=1, num_cpus=0.5,
    ).take_all()
    decisions: Counter = Counter()
    for row in per_shard:
        for s, d, n in json.loads(row["counts"]):
            decisions[(s, d)] += n

    manifest = build_manifest(config, inputs, stats, ranks, fixes, policy, decisions, time.time() - t_start)
    io.write_text(json.dumps(manifest, indent=2, default=str), io.join(config.output, "manifest.json"), storage)
    write_report(manifest, ranks, policy, io.join(config.output, "report.html"), storage)
    c = manifest["counts"]
    _say(f"done in {time.time() - t_start:.1f}s: {c['input_rows']} input rows gave {c['records']} records = "
         f"{c['kept']} kept + {c['dropped']} dropped + {c['rejected']} rejected")
    _say(f"curated data: {io.join(config.output, 'curated')}")
    _say(f"report:       {io.join(config.output, 'report.html')}")
    return manifest


def _write_batch(batch: dict, config: dict, policy: str) -> dict:
    cfg = CurateConfig(**config)
    pol = Policy.model_validate_json(policy)
    storage = io.Storage(cfg.s3_endpoint, cfg.s3_region)
    rows = [write_shard(str(k), cfg, pol, storage) for k in batch["key"]]
    return {"key": [r["key"] for r in rows], "counts": [r["counts"] for r in rows]}


def content_hashes(scored: pa.Table) -> pa.Array:
    """What makes two records the same trajectory: source, problem and response."""
    cols = (scored.column(c).to_pylist() for c in ("source", "problem", "response"))
    return pa.array([stable_hash(s, p, r) for s, p, r in zip(*cols)], pa.string())


def unconsumed_text(meta: pa.ChunkedArray) -> pa.Array:
    """Per record, the fields its format left unread that hold text (comma-separated), else null."""
    out = []
    for m in meta.to_pylist():
        fields = [k for k, v in json.loads(m).items() if isinstance(v, str) and v.strip()] if m and m != "{}" else []
        out.append(",".join(fields) or None)
    return pa.array(out, pa.string())


def records_per_row(scored: pa.Table, rejects: pa.Table) -> dict[str, int]:
    """{records a row gave: how many rows gave that many}; a row rejected as a whole gave one (its reject)."""
    rows = scored.column("row").to_pylist() + rejects.column("row").to_pylist()
    per_row = Counter(Counter(rows).values())
    return {str(k): n for k, n in sorted(per_row.items())}


def write_fixes(fixes: pa.Table, shards: list[dict], output: str, storage: io.Storage) -> None:
    """Each shard's renamed and duplicate records, for its phase-3 task (a shard with none has no file)."""
    io.remove_tree(io.join(output, "_work", "dedup"), storage)
    keys = {s["uri"]: s["key"] for s in shards}
    for uri in sorted(set(fixes.column("shard").to_pylist())):
        part = fixes.filter(pc.equal(fixes.column("shard"), uri))
        io.write_parquet(part, io.join(output, "_work", "dedup", f"part-{keys[uri]}.parquet"), storage)


def markup_by_source(ranks: pa.Table) -> dict[str, str]:
    return dominant_markup(ranks.column("source").to_pylist(), ranks.column("markup").to_pylist())


def reference_steps(ranks: pa.Table, reference_source: str) -> dict[str, float]:
    ref = ranks.filter(pc.equal(ranks.column("source"), reference_source))
    if ref.num_rows == 0:
        sources = sorted(set(ranks.column("source").to_pylist()))
        raise ValueError(f"--reference-source {reference_source!r} is not in the data; sources: {sources}")
    sums: dict[str, list] = defaultdict(list)
    for pid, n in zip(ref.column("problem_id").to_pylist(), ref.column("n_steps").to_pylist()):
        sums[pid].append(n)
    return {pid: float(np.mean(v)) for pid, v in sums.items()}
