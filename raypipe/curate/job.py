"""The curation job on Ray (or in this process, for a small input), in three resumable phases.

0. check (driver, before any work): every Parquet footer and each JSONL file's first rows
   (raypipe.curate.precheck); a file found unusable stops the job with one line, or is one reject.
1. score (actors): the inputs are split into chunks (raypipe.curate.chunks); each chunk is read one block at a
   time, normalised, verified and measured (raypipe.curate.score); a completion marker per chunk (datatrove
   style) lets a rerun skip what finished.
2. select: duplicates, the audit of the references, then exact per-source thresholds over all scored records
   (or, with --policy-from, an earlier run's policy).
3. write (tasks): every scored chunk is split into `curated/` and `dropped/` under the one policy, one row group
   at a time. Then manifest.json, report.html and the dataset card README.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time


import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.core import io
from raypipe.core.errors import ConfigMismatch, LayoutError
from raypipe.core.formats import make_format
from raypipe.core.html import pyplot
from raypipe.core.policy import DECISION_CHAIN, Policy
from raypipe.core.scoring import Scorer
from raypipe.curate import fingerprint, policy_from
from raypipe.curate.ablate import delete_steps_table
from raypipe.curate.aggregates import aggregate, merge
from raypipe.curate.card import dataset_card
from raypipe.curate.chunks import Chunk, count_newlines, first_rows, needs_index, plan_chunks
from raypipe.curate.config import CurateConfig
from raypipe.curate.dedup import apply_fixes
from raypipe.curate.hints import account, closing_lines
from raypipe.curate.groupby import chunk_policy, read_reference
from raypipe.curate.phase2 import reference_folder, select_policy
from raypipe.curate.precheck import DEADLINE_S, check_inputs
from raypipe.core.registry import load_plugins
from raypipe.core.stage import Stage
from raypipe.executor import Executor, LocalExecutor, Pool, executor
from raypipe.ray_env import quiet_ray
from raypipe.curate.markup import expected_markup, fix_chunk, needs_fix, read_votes
from raypipe.curate.score import ScoreChunk, finish, marker_uri, scored_uri

WRITE_WINDOW = 2  # phase-3 tasks in flight per CPU of the cluster


def _say(msg: str) -> None:
    print(f"[raypipe] {msg}", flush=True)


def write_shard(key: str, config: CurateConfig, policy: Policy, storage: io.Storage) -> dict:
    """Phase 3 for one chunk, one row group at a time: the decision for every record, then curated/ and dropped/.
    Returns the chunk's aggregate (raypipe.curate.aggregates), its phase-1 marker (read here, by the worker, not by
    the driver) and its input hash (raypipe.curate.fingerprint)."""
    out = config.output
    fs, path = storage.filesystem(scored_uri(out, key))
    fixes_uri = io.join(out, "_work", "dedup", f"part-{key}.parquet")
    fixes = io.read_parquet(fixes_uri, storage) if io.exists(fixes_uri, storage) else None
    scorer = Scorer(config.scoring())
    reference = read_reference(out, storage, policy.reference_steps_file) if policy.reference_steps_file else None
    writers = {part: io.ParquetStream(io.join(out, part, f"part-{key}.parquet"), storage)
               for part in ("curated", "dropped")}
    parts = []
    rejects_uri = io.join(out, "rejects", f"part-{key}.parquet")
    digest = fingerprint.rejects_hash(io.read_parquet(rejects_uri, storage, columns=["raw"])
                                      if io.exists(rejects_uri, storage) else None)
    with fs.open_input_file(path) as f:
        scored_file = pq.ParquetFile(f)
        for g in range(scored_file.metadata.num_row_groups):
            scored = scored_file.read_row_group(g)
            digest += fingerprint.records_hash(scored)
            scored = apply_fixes(scored, fixes)
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
            parts.append(aggregate(decided, key, block_policy))
    for w in writers.values():
        w.close()
    return {"key": key, "aggregate": json.dumps(merge(parts)), "marker": io.read_text(marker_uri(out, key), storage),
            "fingerprint": fingerprint.chunk_hex(digest)}


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
    t_start = time.time()
    storage = io.Storage(config.s3_endpoint, config.s3_region)
    earlier = None
    if config.policy_from:
        config, earlier = policy_from.apply(config, storage)
        for line in earlier.describe():
            _say(line)
    chunks = plan_inputs(config, config.input, storage)  # stops here, before any work, at an unusable file
    reference = plan_inputs(config, config.reference_input, storage) if config.reference_input and not earlier else None
    _prepare_output(config, storage)
    ex = executor(sum(c.nbytes for c in chunks + (reference or [])), config.in_process_below_mb, config.num_cpus,
                  config.plugins)
    if isinstance(ex, LocalExecutor):
        if "verify_workers" not in config.model_fields_set:  # this process waits while they grade: one per CPU
            config = config.model_copy(update={"verify_workers": max(1, int(config.num_cpus or os.cpu_count() or 1))})
        _say(f"in this process (input under --in-process-below-mb {config.in_process_below_mb:g}; no Ray started; "
             f"{config.verify_workers} verifier processes)")
        manifest = _run(config, storage, chunks, t_start, ex, reference, earlier)
    else:
        with quiet_ray():
            manifest = _run(config, storage, chunks, t_start, ex, reference, earlier)
    c = manifest["counts"]
    n_damage = len(manifest["damage"])
    damaged = f" ({n_damage} of the rejects for damaged input: manifest.json 'damage')" if n_damage else ""
    _say(f"done in {time.time() - t_start:.1f}s: {c['input_rows']} input rows gave {c['records']} records = "
         f"{c['kept']} kept + {c['dropped']} dropped + {c['rejected']} rejected{damaged}")
    for line in closing_lines(manifest, config.output):
        _say(line)
    return manifest


def plan_inputs(config: CurateConfig, uri: str, storage: io.Storage) -> list[Chunk]:
    """The chunks of an input, once it passed the pre-check: a file found unusable stops the job here
    (UnusableInput: one line naming it and the fix) or, with --skip-unreadable, is one chunk rejected whole."""
    files = io.list_input_files(uri, storage)
    checked = check_inputs(files, storage, make_format(config.format, config.fields))
    if checked.unusable and not config.skip_unreadable:
        raise checked.error()
    for bad, reason in sorted(checked.unusable.items()):
        _say(f"--skip-unreadable: {bad} is one reject: {reason}")
    if checked.unchecked:
        _say(f"pre-check: the first rows of {len(checked.unchecked)} file(s) were not read within {DEADLINE_S:g}s; "
             "phase 1 checks them as it reads them")
    return plan_chunks(files, storage, config.chunk_mb << 20, checked.footers, checked.unusable)


def _run(config: CurateConfig, storage: io.Storage, chunks: list[Chunk], t_start: float,
         ex: Executor, reference_chunks: list[Chunk] | None = None, earlier: policy_from.Earlier | None = None) -> dict:
    from raypipe.curate.report import build_manifest, write_report

    inputs = list(dict.fromkeys(c.uri for c in chunks))
    pending = unfinished(chunks, config.output, storage)
    _say(f"{len(inputs)} input files in {len(chunks)} chunks, {len(chunks) - len(pending)} already scored, "
         f"{len(pending)} to score -> {config.output}")
    scored = run_phase1(config, index_lines(chunks, pending, config, storage, ex), ex) if pending else {}
    summaries = chunk_summaries(config, chunks, scored, storage)
    expected = harmonise_markup(config, chunks, {k: s["markups"] for k, s in summaries.items()}, storage, ex)
    reference = score_reference(config, storage, ex, reference_chunks) if reference_chunks else []
    frozen = earlier.policy() if earlier else None

    records = sum(s["records"] for s in summaries.values())
    in_driver = not isinstance(ex, LocalExecutor) and records < config.select_in_driver_below_rows
    select_ex = LocalExecutor(ex.cpus(), threads=2) if in_driver else ex
    if in_driver:  # phase 3's worker processes start and import while the driver selects
        for _ in range(min(int(ex.cpus()), len(chunks))):
            ex.submit(_warm_writer, config.model_dump_json(), cpus=1)
    try:
        policy, selected = select_policy(
            config, [{"key": c.key, "uri": c.uri, "order": c.order, "nbytes": c.nbytes} for c in chunks], storage,
            select_ex, reference_chunks=reference, frozen=frozen)
    finally:
        if in_driver:
            select_ex.close()
    if earlier:
        policy = policy_from.reference_steps(earlier, policy, config.output, storage)
    policy = policy.model_copy(update={"markup_by_source": expected})
    suspects = selected["suspect_references"]
    _say(f"phase 2/3 select: {selected['duplicates']} duplicates, {selected['renamed']} ids renamed, "
         f"{len(suspects)} suspect references found, {len(policy.suspect_references)} kept out, "
         f"{selected.get('passes', 0)} ranking passes"
         + (f" (in the driver: {records:,} records)" if in_driver else ""))
    if not isinstance(ex, LocalExecutor):  # the report's plotting library loads while the cluster writes
        threading.Thread(target=pyplot, daemon=True).start()
    stats, merged = run_phase3(config, chunks, policy, storage, ex)
    dedup = {"duplicates": selected["duplicates"], "renamed_ids": selected["renamed"]}
    manifest = build_manifest(config, inputs, stats, merged, dedup, policy, time.time() - t_start)
    manifest["stages"] = {name: dataclasses.asdict(s) for name, s in ex.stats.items()}  # the executor's counts
    manifest["decision_rules"] = [rule.name for rule in DECISION_CHAIN]  # the order a row's reason is found in
    # in the order of the files (stats come in the order the phase-3 tasks finish)
    manifest["damage"] = [{"uri": s["uri"], "chunk": s["key"], "rejected_as": reason}
                          for s in sorted(stats, key=lambda s: (s["uri"], s.get("start") or 0, s["key"]))
                          for reason in s.get("damage", [])]
    manifest["row_numbers"] = ("a record's or reject's `row` is its line in the input file as an editor shows it, "
                               "from 1 (blank lines counted; in Parquet its position, from 1); null for a file "
                               "rejected whole")
    manifest.update(account(merged, config.answer_from))  # drop reasons, and hints such as --answer-from
    manifest["input_fingerprint"] = fingerprint.combine([s["fingerprint"] for s in stats])
    manifest["suspect_reference"] = {"on_suspect_reference": config.on_suspect_reference,
                                     "min_samples": config.suspect_min_samples, "problems": suspects,
                                     "kept_out": [list(x) for x in policy.suspect_references]}
    if earlier:
        manifest["policy_from"] = earlier.record(manifest["input_fingerprint"])
        if manifest["policy_from"]["fingerprint_matches"] is False:
            _say(f"--policy-from: this input (fingerprint {manifest['input_fingerprint']}) is not the one the policy "
                 f"was measured on ({earlier.fingerprint}): its thresholds were applied as they are")
    io.write_text(json.dumps(manifest, indent=2, default=str), io.join(config.output, "manifest.json"), storage)
    write_report(manifest, merged, policy, io.join(config.output, "report.html"), storage)
    write_card(config, manifest, storage)
    return manifest


def write_card(config: CurateConfig, manifest: dict, storage: io.Storage) -> None:
    """README.md, the dataset card (raypipe.curate.card), with the schema of the first split file there is."""
    schema = None
    for part in ("curated", "dropped"):
        names = sorted(n for n in io.list_names(io.join(config.output, part), storage) if n.endswith(".parquet"))
        if names:
            fs, path = storage.filesystem(io.join(config.output, part, names[0]))
            schema = pq.read_schema(path, filesystem=fs)
            break
    io.write_text(dataset_card(manifest, schema, config.output), io.join(config.output, "README.md"), storage)


def unfinished(chunks: list[Chunk], output: str, storage: io.Storage) -> list[Chunk]:
    """The chunks without a completion marker: one listing of the markers, not a request per chunk."""
    done = io.list_names(io.join(output, "_work", "done"), storage)
    return [c for c in chunks if f"{c.key}.json" not in done]


def index_lines(chunks: list[Chunk], pending: list[Chunk], config: CurateConfig, storage: io.Storage,
                ex: Executor) -> list[Chunk]:
    """The pending chunks with their first row numbers: newline counts of the byte ranges before them, counted in
    parallel tasks once per file and kept in _work/index/."""
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
        got = ex.get([ex.submit(count_newlines, c.uri, c.start, c.end, storage) for c in todo])
        new = {c.key: tuple(g) for c, g in zip(todo, got)}
        counts.update(new)
        for uri in {c.uri for c in todo}:
            mine = {k: list(v) for k, v in new.items() if any(c.key == k and c.uri == uri for c in todo)}
            io.write_text(json.dumps(mine), io.join(config.output, "_work", "index", f"{io.shard_key(uri)}.json"),
                          storage)
    placed = {c.key: c for c in first_rows([c for c in chunks if c.uri in files], counts)}
    return [placed.get(c.key, c) for c in pending]


def score_reference(config: CurateConfig, storage: io.Storage, ex: Executor,
                    chunks: list[Chunk] | None = None) -> list[str]:
    """Phase 1 over the --reference-input's chunks (planned here unless given), into _work/reference/ (resumable
    the same way; never written to curated/ or dropped/); their keys."""
    ref = config.model_copy(update={"input": config.reference_input, "output": reference_folder(config.output)})
    chunks = chunks if chunks is not None else plan_inputs(ref, ref.input, storage)
    pending = unfinished(chunks, ref.output, storage)
    _say(f"reference input: {len(chunks)} chunks, {len(pending)} to score -> {ref.output}")
    if pending:
        run_phase1(ref, index_lines(chunks, pending, ref, storage, ex), ex, "phase 1/3 score the reference")
    return [c.key for c in chunks]


def run_phase1(config: CurateConfig, pending: list[Chunk], ex: Executor,
               label: str = "phase 1/3 score") -> dict[str, dict]:
    """Score the pending chunks (the ScoreChunk stage in an autoscaling actor pool); {chunk key: {"markups": its
    markup votes, "records": its record count}}."""
    pool = scoring_pool(config, len(pending), ex.cpus())
    _say(f"{label}: {pool.min_size}..{pool.max_size} actors x {pool.cpus:g} CPU (incl. {config.verify_workers} "
         "verifier process(es))")
    errors, summaries = [], {}
    for row in ex.map(ScoreChunk(config), [c.to_dict() for c in pending], pool=pool, label=label,
                      size=lambda c: c["nbytes"], records=lambda r: int(r["records"])):
        if row["error"]:
            errors.append(row["error"])
        summaries[row["key"]] = {"markups": json.loads(row["markups"]), "records": int(row["records"])}
    if errors:
        more = f" ({len(errors) - 1} more chunk(s) like it)" if len(errors) > 1 else ""
        raise LayoutError(f"{errors[0]}{more}, or pass --skip-unreadable to reject such rows and curate the rest")
    return summaries


def chunk_summaries(config: CurateConfig, chunks: list[Chunk], known: dict[str, dict],
                    storage: io.Storage) -> dict[str, dict]:
    """{chunk key: {"markups", "records"}} of every chunk: phase 1's, and for the chunks scored by an earlier run,
    their markers'."""
    from concurrent.futures import ThreadPoolExecutor

    def from_marker(c: Chunk) -> dict:
        marker = json.loads(io.read_text(marker_uri(config.output, c.key), storage) or "{}")
        markups = marker["markups"] if "markups" in marker else \
            json.loads(read_votes(scored_uri(config.output, c.key), storage))  # a marker from before votes
        return {"markups": markups, "records": marker.get("records", float("inf"))}  # unknown: not small

    earlier = [c for c in chunks if c.key not in known]
    with ThreadPoolExecutor(16) as pool:
        return {**known, **dict(zip((c.key for c in earlier), pool.map(from_marker, earlier)))}


def harmonise_markup(config: CurateConfig, chunks: list[Chunk], known: dict[str, dict],
                     storage: io.Storage, ex: Executor) -> dict[str, str]:
    """The dataset's markup per source (`known`: each chunk's votes), with the records it makes unfinished fixed
    in their chunks (see raypipe.curate.markup)."""
    expected = expected_markup([known[c.key] for c in chunks])
    todo = [c for c in chunks if needs_fix(known[c.key], expected)]
    if todo:
        n = sum(ex.get([ex.submit(_fix_markup, config.model_dump_json(), c.key, expected) for c in todo]))
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


def _warm_writer(config: str) -> None:
    cfg = CurateConfig.model_validate_json(config)
    load_plugins(cfg.plugins)
    Scorer(cfg.scoring())


class WriteChunk(Stage):
    """Phase 3 as a stage: a chunk key in; its curated/ and dropped/ parts written under the one policy, its
    aggregate and marker out. Idempotent: run again, it rewrites the same files."""

    name = "write"
    reads = ("key",)
    writes = ("key", "aggregate", "marker", "fingerprint")

    def __init__(self, config: CurateConfig, policy: Policy):
        self.config, self.policy = config, policy

    def setup(self) -> None:
        load_plugins(self.config.plugins)

    def process(self, item: dict) -> dict:
        return io.retried(write_shard, item["key"], self.config, self.policy, self.config.storage(), attempts=3)


def run_phase3(config: CurateConfig, chunks: list[Chunk], policy: Policy, storage: io.Storage,
               ex: Executor) -> tuple[list, dict]:
    """Every chunk written by a task of its own (one CPU each, at most WRITE_WINDOW per CPU in flight), the results
    folded in as they finish: the driver never holds a row. Tasks, not an actor pool: a Ray Data map's resource
    budget ran one 0.5-CPU task at a time here."""
    for part in ("curated", "dropped"):  # rewritten whole under the one policy
        io.remove_tree(io.join(config.output, part), storage)
    stats, merged = [], merge([])
    window = max(2, int(WRITE_WINDOW * ex.cpus()))
    nbytes = {c.key: c.nbytes for c in chunks}
    for row in ex.map(WriteChunk(config, policy), [{"key": c.key} for c in chunks], window=window,
                      label="phase 3/3 write", size=lambda c: nbytes[c["key"]],
                      records=lambda r: sum(x["records"] for x in json.loads(r["aggregate"])["chunks"].values())):
        stats.append({**json.loads(row["marker"]), "fingerprint": row["fingerprint"]})
        merged = merge([merged, json.loads(row["aggregate"])])
    return stats, merged


def scoring_pool(config: CurateConfig, n_chunks: int, cpus: float) -> Pool:
    """The phase-1 pool: a copy's CPUs count its verifier worker processes; by default it starts with what the
    cluster holds now and grows with it (up to one actor per chunk)."""
    per_copy = ScoreChunk(config).resources.total_cpus
    if config.actors:
        return Pool(config.actors, config.actors, per_copy)
    hi = max(1, min(config.max_actors or n_chunks, n_chunks))
    lo = min(hi, config.min_actors or max(1, min(int(cpus), n_chunks)))
    # On a small machine the pool leaves room for other tasks (Ray Data's, where a stage reads a dataset).
    return Pool(lo, hi, min(per_copy, max(0.25, (cpus - 0.5) / lo)))
