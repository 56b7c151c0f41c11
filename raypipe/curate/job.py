"""The curation job on Ray Data, in three resumable phases.

1. score (actors): the inputs are split into chunks (raypipe.curate.chunks); each chunk is read one block at a
   time, normalised, verified and measured (raypipe.curate.score); a completion marker per chunk (datatrove
   style) lets a rerun skip what finished.
2. select: duplicates, then exact per-source thresholds over all scored records.
3. write (tasks): every scored chunk is split into `curated/` and `dropped/` under the one policy, one row group
   at a time. Then manifest.json and report.html.
"""
from __future__ import annotations

import json
import time


import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.core.errors import ConfigMismatch, LayoutError
from raypipe.core.policy import Policy
from raypipe.core.scoring import Scorer
from raypipe.curate.ablate import delete_steps_table
from raypipe.curate.aggregates import aggregate, merge
from raypipe.curate.chunks import Chunk, count_newlines, first_rows, needs_index, plan_chunks
from raypipe.curate.config import CurateConfig
from raypipe.curate.dedup import KEY_COLUMNS, apply_fixes
from raypipe.curate.groupby import chunk_policy, read_reference
from raypipe.curate.phase2 import reference_folder, select_policy
from raypipe.curate.progress import progress
from raypipe.ray_env import quiet_ray
from raypipe.curate.markup import expected_markup, fix_chunk, needs_fix, read_votes
from raypipe.curate.score import ScoreChunks, finish, marker_uri, scored_uri

# What phase 2 reads of every scored row beside what the policy's proxy and rule need: the dedup keys and the
# markup. The manifest and the report come from phase 3's per-chunk aggregates (raypipe.curate.aggregates).
PHASE2_COLUMNS = ["source", "verdict", "markup", *KEY_COLUMNS]
WRITE_WINDOW = 2  # phase-3 tasks in flight per CPU of the cluster


def rank_columns(config: CurateConfig) -> list[str]:
    """The scored columns phase 2 reads: the decision's (proxy and rule declare theirs), dedup's and the markup."""
    needed = config.policy().columns() + PHASE2_COLUMNS
    if config.reference_source or config.reference_input:
        needed += ["problem_id", "n_steps"]
    return list(dict.fromkeys(needed))


def _say(msg: str) -> None:
    print(f"[raypipe] {msg}", flush=True)


def write_shard(key: str, config: CurateConfig, policy: Policy, storage: io.Storage) -> dict:
    """Phase 3 for one chunk, one row group at a time: the decision for every record, then curated/ and dropped/.
    Returns the chunk's aggregate (raypipe.curate.aggregates) and its phase-1 marker (read here, by the worker, not by the driver)."""
    out = config.output
    fs, path = storage.filesystem(scored_uri(out, key))
    fixes_uri = io.join(out, "_work", "dedup", f"part-{key}.parquet")
    fixes = io.read_parquet(fixes_uri, storage) if io.exists(fixes_uri, storage) else None
    scorer = Scorer(config.scoring())
    reference = read_reference(out, storage, policy.reference_steps_file) if policy.reference_steps_file else None
    writers = {part: io.ParquetStream(io.join(out, part, f"part-{key}.parquet"), storage)
               for part in ("curated", "dropped")}
    parts = []
    with fs.open_input_file(path) as f:
        scored_file = pq.ParquetFile(f)
        for g in range(scored_file.metadata.num_row_groups):
            scored = apply_fixes(scored_file.read_row_group(g), fixes)
            # this block's problems joined on the run's reference steps (step-ratio proxy)
            block_policy = chunk_policy(policy, scored, reference) if reference is not None else policy
            decided = scorer.decide(scored, block_policy)
            kept = decided.filter(pc.equal(decided.column("decision"), "keep"))
            dropped = decided.filter(pc.equal(decided.column("decision"), "drop"))
            if config.delete_steps > 0 and kept.num_rows:
                kept = delete_steps_table(kept, config.delete_steps, config.seed, config.segmenter)
            for part, table in (("curated", kept), ("dropped", dropped)):
                if table.num_rows:
                    writers[part].write(table)
            parts.append(aggregate(decided, key))
    for w in writers.values():
        w.close()
    return {"key": key, "aggregate": json.dumps(merge(parts)), "marker": io.read_text(marker_uri(out, key), storage)}


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
    from raypipe.ray_env import ensure_ray

    t_start = time.time()
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    files = io.list_input_files(config.input, storage)
    _prepare_output(config, storage)
    ensure_ray(config.num_cpus, plugins=config.plugins)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar per phase, ours
    with quiet_ray():
        manifest = _run(config, storage, files, t_start)
    c = manifest["counts"]
    _say(f"done in {time.time() - t_start:.1f}s: {c['input_rows']} input rows gave {c['records']} records = "
         f"{c['kept']} kept + {c['dropped']} dropped + {c['rejected']} rejected")
    _say(f"curated data: {io.join(config.output, 'curated')}")
    _say(f"report:       {io.join(config.output, 'report.html')}")
    return manifest


def _run(config: CurateConfig, storage: io.Storage, files: list[tuple[str, int]], t_start: float) -> dict:
    from raypipe.curate.report import build_manifest, write_report

    inputs = [u for u, _ in files]
    chunks = plan_chunks(files, storage, config.chunk_mb << 20)
    pending = unfinished(chunks, config.output, storage)
    _say(f"{len(inputs)} input files in {len(chunks)} chunks, {len(chunks) - len(pending)} already scored, "
         f"{len(pending)} to score -> {config.output}")
    scored = run_phase1(config, index_lines(chunks, pending, config, storage), storage) if pending else {}
    expected = harmonise_markup(config, chunks, scored, storage)
    reference = score_reference(config, storage) if config.reference_input else []

    policy, selected = select_policy(
        config, [{"key": c.key, "uri": c.uri, "order": c.order, "nbytes": c.nbytes} for c in chunks], storage,
        reference_chunks=reference)
    policy = policy.model_copy(update={"markup_by_source": expected})
    _say(f"phase 2/3 select: {selected['duplicates']} duplicates, {selected['renamed']} ids renamed, "
         f"{selected.get('passes', 0)} ranking passes")
    stats, merged = run_phase3(config, chunks, policy, storage)
    dedup = {"duplicates": selected["duplicates"], "renamed_ids": selected["renamed"]}
    manifest = build_manifest(config, inputs, stats, merged, dedup, policy, time.time() - t_start)
    io.write_text(json.dumps(manifest, indent=2, default=str), io.join(config.output, "manifest.json"), storage)
    write_report(manifest, merged, policy, io.join(config.output, "report.html"), storage)
    return manifest


def unfinished(chunks: list[Chunk], output: str, storage: io.Storage) -> list[Chunk]:
    """The chunks without a completion marker: one listing of the markers, not a request per chunk."""
    done = io.list_names(io.join(output, "_work", "done"), storage)
    return [c for c in chunks if f"{c.key}.json" not in done]


def index_lines(chunks: list[Chunk], pending: list[Chunk], config: CurateConfig, storage: io.Storage) -> list[Chunk]:
    """The pending chunks with their first row numbers: newline counts of the byte ranges before them, counted in
    parallel tasks once per file and kept in _work/index/."""
    import ray

    files = {c.uri for c in pending if c.first_row < 0}
    if not files:
        return pending
    counts: dict[str, tuple[int, bool]] = {}
    todo = []
    for uri in sorted(files):
        cached = io.read_text(io.join(config.output, "_work", "index", f"{io.shard_key(uri)}.json"), storage)
        ranges = needs_index([c for c in chunks if c.uri == uri])
        if cached is not None and {c.key for c in ranges} <= set(json.loads(cached)):
            counts.update({k: tuple(v) for k, v in json.loads(cached).items()})
        else:
            todo += ranges
    if todo:
        _say(f"line index: counting the newlines of {len(todo)} byte ranges")
        task = ray.remote(num_cpus=0.5)(count_newlines)
        got = ray.get([task.remote(c.uri, c.start, c.end, storage) for c in todo])
        new = {c.key: tuple(g) for c, g in zip(todo, got)}
        counts.update(new)
        for uri in {c.uri for c in todo}:
            mine = {k: list(v) for k, v in new.items() if any(c.key == k and c.uri == uri for c in todo)}
            io.write_text(json.dumps(mine), io.join(config.output, "_work", "index", f"{io.shard_key(uri)}.json"),
                          storage)
    placed = {c.key: c for c in first_rows([c for c in chunks if c.uri in files], counts)}
    return [placed.get(c.key, c) for c in pending]


def score_reference(config: CurateConfig, storage: io.Storage) -> list[str]:
    """Phase 1 over the --reference-input's chunks, into _work/reference/ (resumable the same way; never written
    to curated/ or dropped/); their keys."""
    ref = config.model_copy(update={"input": config.reference_input, "output": reference_folder(config.output)})
    chunks = plan_chunks(io.list_input_files(ref.input, storage), storage, config.chunk_mb << 20)
    pending = unfinished(chunks, ref.output, storage)
    _say(f"reference input: {len(chunks)} chunks, {len(pending)} to score -> {ref.output}")
    if pending:
        run_phase1(ref, index_lines(chunks, pending, ref, storage), storage, "phase 1/3 score the reference")
    return [c.key for c in chunks]


def run_phase1(config: CurateConfig, pending: list[Chunk], storage: io.Storage,
               label: str = "phase 1/3 score") -> dict[str, dict]:
    """Score the pending chunks; {chunk key: its markup votes}."""
    import ray

    lo, hi, cpus = scoring_pool(config, len(pending))
    _say(f"{label}: {lo}..{hi} actors x {cpus:g} CPU (incl. {config.verify_workers} verifier process(es))")
    results = ray.data.from_items([c.to_dict() for c in pending]).map_batches(
        ScoreChunks, fn_constructor_kwargs={"config": config.model_dump_json()}, batch_size=1,
        # Ray Data's defaults restart actors and retry their tasks without limit, which a lost node needs
        # (a capped budget is spent before the node is declared dead); a rescored chunk rewrites the same files.
        compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi), num_cpus=cpus,
    )
    errors, markups = [], {}
    with progress(label, sum(c.nbytes for c in pending), len(pending)) as bar:
        for row in results.iter_rows():
            if row["error"]:
                errors.append(row["error"])
            markups[row["key"]] = json.loads(row["markups"])
            bar.advance(int(row["nbytes"]), int(row["records"]))
    if errors:
        raise LayoutError("; ".join(errors))
    return markups


def harmonise_markup(config: CurateConfig, chunks: list[Chunk], known: dict[str, dict],
                     storage: io.Storage) -> dict[str, str]:
    """The dataset's markup per source, with the records it makes unfinished fixed in their chunks (see
    raypipe.curate.markup). Chunks scored by an earlier run give their votes from their markers."""
    import ray
    from concurrent.futures import ThreadPoolExecutor

    def marker_votes(c: Chunk) -> dict:
        marker = json.loads(io.read_text(marker_uri(config.output, c.key), storage) or "{}")
        if "markups" in marker:
            return marker["markups"]
        return json.loads(read_votes(scored_uri(config.output, c.key), storage))  # a marker from before votes

    earlier = [c for c in chunks if c.key not in known]
    with ThreadPoolExecutor(16) as pool:
        known = {**known, **dict(zip((c.key for c in earlier), pool.map(marker_votes, earlier)))}
    expected = expected_markup([known[c.key] for c in chunks])
    todo = [c for c in chunks if needs_fix(known[c.key], expected)]
    if todo:
        fix = ray.remote(num_cpus=0.5)(_fix_markup)
        n = sum(ray.get([fix.remote(config.model_dump_json(), c.key, expected) for c in todo]))
        _say(f"markup: {n} records in {len(todo)} chunks have no markup where their source uses it (unfinished "
             "reasoning): normalised and scored again")
    return expected


def _fix_markup(config: str, key: str, expected: dict[str, str]) -> int:
    cfg = CurateConfig.model_validate_json(config)
    scorer = Scorer(cfg.scoring()).setup()
    try:
        return fix_chunk(scored_uri(cfg.output, key), expected, scorer, finish,
                         io.Storage(cfg.s3_endpoint, cfg.s3_region))
    finally:
        scorer.close()


def run_phase3(config: CurateConfig, chunks: list[Chunk], policy: Policy, storage: io.Storage) -> tuple[list, dict]:
    """Every chunk written by a Ray task (one CPU each, at most WRITE_WINDOW per CPU in flight), the results folded
    in as they finish. Plain tasks, not a Ray Data map: its resource budget ran one 0.5-CPU task at a time here."""
    import ray

    for part in ("curated", "dropped"):  # rewritten whole under the one policy
        io.remove_tree(io.join(config.output, part), storage)
    # a lost worker or node: the task again (it rewrites the same files)
    task = ray.remote(num_cpus=1, max_retries=-1)(_write_chunk)
    args = (config.model_dump_json(), policy.model_dump_json())
    window = max(2, int(WRITE_WINDOW * ray.cluster_resources().get("CPU", 1)))
    todo, running = list(reversed(chunks)), {}
    stats, merged = [], merge([])  # merged as they arrive: the driver never holds a row
    with progress("phase 3/3 write", sum(c.nbytes for c in chunks), len(chunks)) as bar:
        while todo or running:
            while todo and len(running) < window:
                c = todo.pop()
                running[task.remote(c.key, *args)] = c
            done, _ = ray.wait(list(running), num_returns=1)
            c = running.pop(done[0])
            row = ray.get(done[0])
            stats.append(json.loads(row["marker"]))
            part = json.loads(row["aggregate"])
            merged = merge([merged, part])
            bar.advance(c.nbytes, sum(x["records"] for x in part["chunks"].values()))
    return stats, merged


def scoring_pool(config: CurateConfig, n_chunks: int) -> tuple[int, int, float]:
    """(min actors, max actors, CPUs per actor). An actor's CPUs count its verifier worker processes; the default
    pool starts with what the cluster holds now and grows with it (up to one actor per chunk)."""
    import ray

    verifiers = config.verify_workers * config.verifier_cpus
    if config.actors:
        return config.actors, config.actors, 1.0 + verifiers
    cpus = ray.cluster_resources().get("CPU", 1)
    hi = max(1, min(config.max_actors or n_chunks, n_chunks))
    lo = min(hi, config.min_actors or max(1, min(int(cpus), n_chunks)))
    # On a small machine the pool must leave room for Ray Data's own tasks: a pool holding every CPU deadlocks.
    per_actor = min(1.0 + verifiers, max(0.25, (cpus - 0.5) / lo))
    return lo, hi, per_actor


def _write_chunk(key: str, config: str, policy: str) -> dict:
    cfg = CurateConfig.model_validate_json(config)
    storage = io.Storage(cfg.s3_endpoint, cfg.s3_region)
    return io.retried(write_shard, key, cfg, Policy.model_validate_json(policy), storage, attempts=3)
