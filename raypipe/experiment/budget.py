"""Matched training budgets across arms, set between curation and SFT.

Every arm's curated rows are rendered and tokenized exactly as SFT will (raypipe.train.render: the student's
tokenizer, chat template, prompt, think tags, max_len and the over-long policy), in a seeded order (a stable hash of
seed, source and id, so the order does not depend on files or shards). Then, with `budget:`
  steps   every arm trains the same number of optimizer steps S = the smallest arm's (x epochs, capped by
          train.max_steps); larger arms stop at S;
  rows    every arm trains on the same number of rows N (the smallest arm's), a seeded sample, and S steps;
  tokens  every arm trains on the same number of supervised tokens T (the smallest arm's; a seeded sample, within
          one row) and S steps (packed rows, so that each step holds the same token slots);
  none    nothing is matched (counts are still recorded).
Epochs are scaled per arm so that none runs out of data before S. Over-long rows (longer than max_len) are counted
per arm before its filter (its verified-correct rows: curated + dropped by its rule) and after (curated), and the
p99 length of the paired data is compared with max_len. All of it goes to <output>/budget/budget.json.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.core.schema import hash64
from raypipe.core.settings import config_hash
from raypipe.core.stage import Stage

BUDGET_VERSION = 3  # what budget.json holds; another version is recomputed
HUGE = 1 << 40
PACK_BATCH = 4096  # rows packed together by SFT's data preparation (raypipe.train.data.pack_batch)
RENDER_FIELDS = ("model", "max_len", "overlong", "truncate_min_tokens", "template", "think_open", "think_close", "prompt_version", "pack",
                 "micro_batch_size", "grad_accum", "num_workers", "epochs", "max_steps", "seed")


def budget_uri(cfg) -> str:
    return io.join(cfg.output, "budget", "budget.json")


def read_budget(cfg, storage: io.Storage | None = None) -> dict | None:
    try:
        text = io.read_text(budget_uri(cfg), storage or cfg.storage())
    except OSError:
        return None
    return json.loads(text) if text else None


# --- pure: lengths -> matched budgets -----------------------------------------------------------------------


def packed_rows(seq_lens: list[int], train) -> int:
    """The training rows SFT makes of rows of these token lengths, read in this order (raypipe.train.data.prepare
    packs them PACK_BATCH at a time)."""
    if not train.pack:
        return len(seq_lens)
    from raypipe.train.packing import Doc, pack

    return sum(len(pack([Doc(range(n), []) for n in seq_lens[i:i + PACK_BATCH]], train.max_len))
               for i in range(0, len(seq_lens), PACK_BATCH))


def steps_per_epoch(seq_lens: list[int], train) -> int:
    """SFT's steps per epoch for rows of these token lengths (raypipe.train.run.plan_steps, after packing)."""
    return (packed_rows(seq_lens, train) // train.num_workers) // (train.micro_batch_size * train.grad_accum)


def prefix_for_tokens(supervised: list[int], target: int) -> int:
    """The number of leading rows whose supervised tokens come closest to target (within one row)."""
    cum = np.cumsum(supervised)
    k = int(np.searchsorted(cum, target, side="left"))  # cum[k] >= target
    if k >= len(cum):
        return len(cum)
    below = cum[k - 1] if k else 0
    return k + 1 if cum[k] - target <= target - below else max(k, 1)


def match_budgets(arms: dict[str, tuple[list[int], list[int]]], mode: str, train,
                  positions: dict[str, list[int]] | None = None) -> dict[str, dict]:
    """Per arm (sequence lengths, supervised tokens) of its usable rows in seeded order -> the rows it trains on
    (a prefix), its epochs, and the common number of optimizer steps. `positions`: each row's place in the order SFT
    reads them (packing depends on it); default: the seeded order."""
    take = {a: len(s) for a, (s, _) in arms.items()}
    if mode == "rows":
        n = min(take.values())
        take = {a: n for a in arms}
    elif mode == "tokens":
        target = min(int(sum(t)) for _, t in arms.values())
        take = {a: prefix_for_tokens(t, target) for a, (_, t) in arms.items()}
    spe = {a: steps_per_epoch(in_read_order(s[:take[a]], (positions or {}).get(a), take[a]), train)
           for a, (s, _) in arms.items()}
    if min(spe.values(), default=0) == 0:
        small = sorted(a for a, v in spe.items() if v == 0)
        raise ValueError(f"arms {small} have too few usable rows for one optimizer step ({train.num_workers} workers x "
                         f"{train.micro_batch_size} rows x {train.grad_accum} accumulation)")
    natural = {a: v * train.epochs for a, v in spe.items()}
    common = min(natural.values()) if mode != "none" else None
    if common is not None and train.max_steps:
        common = min(common, train.max_steps)
    out = {}
    for a, (seq, sup) in arms.items():
        steps = common if common is not None else min(natural[a], train.max_steps or natural[a])
        out[a] = {"rows": take[a], "supervised_tokens": int(sum(sup[:take[a]])),
                  "tokens": int(sum(seq[:take[a]])), "steps_per_epoch": spe[a], "steps": steps,
                  "epochs": max(1, math.ceil(steps / spe[a])) if mode != "none" else train.epochs}
    return out


def in_read_order(seq: list[int], positions: list[int] | None, n: int) -> list[int]:
    if positions is None:
        return list(seq)
    return [int(x) for x in np.asarray(seq)[np.argsort(np.asarray(positions[:n]), kind="stable")]]


# --- tokenizing the arms' curated rows ----------------------------------------------------------------------


def order_keys(table: pa.Table, seed: int) -> np.ndarray:
    """Each row's place in the seeded order: salted, so that it is independent of the random rule's pick (which
    hashes the same seed, source and id) and a budget sample never re-creates the A-drop-random arm."""
    return np.array([hash64("budget", str(seed), str(s), str(i)) for s, i in zip(table.column("source").to_pylist(),
                                                                              table.column("id").to_pylist())],
                    dtype=np.int64)


def lengths(table: pa.Table, tokenizer, train) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rendered length, length trained after the over-long policy, supervised tokens, usable) of every row, as
    SFT renders them."""
    from raypipe.train.data import canonical_parts
    from raypipe.train.render import render

    cols = table.select([c for c in ("problem", "thinking", "final", "response", "markup")
                         if c in table.column_names]).to_pydict()
    thinking, final = canonical_parts(cols)
    fmt = train.assistant_format()
    raw, seq, sup, ok = [], [], [], []
    for problem, t, f in zip(cols["problem"], thinking, final):
        r = render(tokenizer, problem or "", t, f, HUGE, "truncate", train.template, fmt)
        n = len(r.example.input_ids) if r.example else 0
        prompt = sum(1 for x in r.example.labels if x == -100) if r.example else 0
        raw.append(n)
        if r.example is not None and n <= train.max_len:
            seq.append(n), sup.append(n - prompt), ok.append(True)
        elif (r.example is not None and train.overlong == "truncate"
              and train.max_len - prompt >= max(2, train.truncate_min_tokens)):  # render()'s rule
            seq.append(train.max_len), sup.append(train.max_len - prompt), ok.append(True)
        else:
            seq.append(0), sup.append(0), ok.append(False)
    return tuple(np.array(x, dtype=np.int64) for x in (raw, seq, sup)) + (np.array(ok, dtype=bool),)


class Lengths(Stage):
    """Curated rows -> (source, id, seeded order key, raw, seq, sup, ok), tokenized as SFT renders them.
    `rule_only`: only the rows a rule dropped (reason rule:...), the arm's rows before its filter."""

    name = "budget-lengths"
    reads = ("problem", "thinking", "final", "response", "markup", "source", "id", "reason")
    writes = ("source", "id", "key", "raw", "seq", "sup", "ok")

    def __init__(self, model_path: str, train, seed: int, rule_only: bool = False):
        self.model_path, self.train, self.seed, self.rule_only = model_path, train, seed, rule_only

    def setup(self) -> None:
        from raypipe.tiny import load_tokenizer

        self.tokenizer = load_tokenizer(self.model_path)

    def process(self, batch: pa.Table) -> pa.Table:
        if self.rule_only:
            batch = batch.filter(pc.starts_with(pc.fill_null(batch.column("reason"), ""), "rule:"))
        raw, seq, sup, ok = lengths(batch, self.tokenizer, self.train)
        return pa.table({"source": batch.column("source").cast(pa.string()), "id": batch.column("id").cast(pa.string()),
                         "key": order_keys(batch, self.seed), "raw": raw, "seq": seq, "sup": sup, "ok": ok})


READ_COLUMNS = Lengths.reads


def parquet_files(uri: str, storage: io.Storage) -> list[str]:
    """The Parquet files of a folder, in the order the budget reads and writes them."""
    return sorted(n for n in io.list_names(uri, storage) if n.endswith(".parquet"))


def measure(uri: str, model_path: str, train, seed: int, storage: io.Storage, ex, rule_only: bool = False) -> pa.Table:
    """Every row's lengths (Lengths) with its position `pos` in the folder read in file order (not for rule_only
    rows, which are only counted): a map over the rows on the executor `ex` (on Ray, the driver holds each row's
    source, id and a few integers, never its text)."""
    import pyarrow.dataset as pads

    from raypipe.executor import Pool

    files = parquet_files(uri, storage)
    empty = pa.table({"source": pa.array([], pa.string()), "id": pa.array([], pa.string()), "pos": pa.array([], pa.int64())})
    if not files:
        return empty
    fs, path = storage.filesystem(uri)
    paths = [f"{path.rstrip('/')}/{f}" for f in files]
    names = pads.dataset(paths, filesystem=fs, format="parquet").schema.names
    ds = ex.read_parquet(paths, fs, [c for c in READ_COLUMNS if c in names])
    out = ex.map_dataset(Lengths(model_path, train, seed, rule_only), ds, batch_size=256,
                         pool=Pool(1, max(1, int(2 * ex.cpus() - 1)), 0.5))
    measured = ex.tables(out)
    if not measured:
        return empty
    table = pa.concat_tables(measured)
    if rule_only:  # rows before the filter: their lengths are counted, never sampled, so they need no place
        return table
    # where each row sits when the folder is streamed file by file (write_sample's order)
    order = pa.concat_tables([io.read_parquet(io.join(uri, f), storage, columns=["source", "id"]) for f in files])
    order = order.cast(pa.schema([("source", pa.string()), ("id", pa.string())]))
    if len(set(zip(order.column("source").to_pylist(), order.column("id").to_pylist()))) != order.num_rows:
        raise ValueError(f"{uri}: (source, id) is not unique; the budget cannot place its rows")
    order = order.append_column("pos", pa.array(np.arange(order.num_rows), pa.int64()))
    return table.join(order, ["source", "id"]).sort_by([("key", "ascending"), ("pos", "ascending")])


def write_sample(src: str, chosen: pa.Table, dst: str, storage: io.Storage) -> int:
    """The chosen (source, id) rows of the folder src, streamed one row group at a time in file order into one
    file (so SFT reads them in the order the budget packed them)."""
    import pyarrow.parquet as pq

    keys = set(zip(chosen.column("source").to_pylist(), chosen.column("id").to_pylist()))
    out = io.ParquetStream(io.join(dst, "part-00000.parquet"), storage)
    for name in parquet_files(src, storage):
        fs, path = storage.filesystem(io.join(src, name))
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            for g in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(g)
                mask = [(s, i) in keys for s, i in zip(t.column("source").cast(pa.string()).to_pylist(),
                                                       t.column("id").cast(pa.string()).to_pylist())]
                if any(mask):
                    out.write(t.filter(pa.array(mask)))
    return out.close()


@contextmanager
def budget_executor(train, folders: list[str], storage: io.Storage) -> Iterator:
    """The arms' curated data measured in this process when it is small (train's --in-process-below-mb) and there is
    no cluster to join; else on Ray: a submitted job joins its cluster, a local run starts Ray for the budget alone."""
    from raypipe.executor import LocalExecutor, RayExecutor, in_process
    from raypipe.ray_env import ray_session

    files = [io.join(f, part, n) for f in folders for part in ("curated", "dropped")
             for n in parquet_files(io.join(f, part), storage)]
    if in_process(io.total_size(files, storage), train.in_process_below_mb):
        yield LocalExecutor(train.num_cpus)
        return
    with ray_session(train.num_cpus):
        yield RayExecutor()


def ensure_budget(cfg, train_stages: dict, storage: io.Storage) -> dict:
    """budget.json for the arms' curated data (reused when its inputs are unchanged), with each arm's train
    settings: data (a seeded sample under budget/<digest>/<arm>/ for rows and tokens), max_steps and epochs.
    `train_stages`: each arm's train stage as it is before the budget."""
    from raypipe.train.worker import local_model_path

    if not train_stages:
        return {"mode": cfg.budget, "arms": {}}
    first = next(iter(train_stages.values())).settings
    manifests = {a: json.loads(io.read_text(io.join(s.settings.data, "manifest.json"), storage) or "{}")
                 for a, s in train_stages.items()}
    digest = config_hash({"version": BUDGET_VERSION, "mode": cfg.budget, "train": {k: getattr(first, k) for k in RENDER_FIELDS},
                          "curated": {a: [m.get("config_hash"), m.get("counts")] for a, m in manifests.items()}})
    previous = read_budget(cfg)
    if previous and previous.get("digest") == digest:
        return previous
    with budget_executor(first, [s.settings.data for s in train_stages.values()], storage) as ex:
        model_path = local_model_path(first.model, storage)
        per_arm, usable, before_lens, chosen_pos, rows = {}, {}, {}, {}, {}
        for arm, stage in train_stages.items():
            curated = measure(io.join(stage.settings.data, "curated"), model_path, first, cfg.seed, storage, ex)
            if not curated.num_rows:
                raise ValueError(f"arm {arm}: curation kept no rows ({stage.settings.data})")
            dropped = measure(io.join(stage.settings.data, "dropped"), model_path, first, cfg.seed, storage, ex,
                              rule_only=True)
            full = curated.column("raw").to_numpy()
            ok = curated.column("ok").to_numpy(zero_copy_only=False)
            before = np.concatenate([full, dropped.column("raw").to_numpy() if dropped.num_rows else np.array([])])
            before_lens[arm] = before
            rows[arm] = curated.filter(pa.array(ok))
            usable[arm] = (rows[arm].column("seq").to_pylist(), rows[arm].column("sup").to_pylist())
            chosen_pos[arm] = rows[arm].column("pos").to_pylist()
            per_arm[arm] = {"curated_rows": curated.num_rows, "usable_rows": int(ok.sum()),
                            "overlong_before": int((before > first.max_len).sum()), "rows_before": int(len(before)),
                            "overlong_after": int((full > first.max_len).sum()), "rows_after": curated.num_rows,
                            "dropped_overlong": int((~ok).sum()),
                            # truncated rows train reasoning without its answer (the final part comes last)
                            "truncated_without_answer": int((ok & (full > first.max_len)).sum()),
                            "tokens_cut": int(np.maximum(full[ok] - first.max_len, 0).sum())}
        matched = match_budgets(usable, cfg.budget, first, chosen_pos)
        for arm, m in matched.items():
            data = train_stages[arm].settings.data
            if cfg.budget in ("rows", "tokens"):
                data = io.join(cfg.output, "budget", digest, arm)  # a new budget is new data: finished SFT is not reused
                io.remove_tree(data, storage)
                write_sample(io.join(train_stages[arm].settings.data, "curated"), rows[arm].slice(0, m["rows"]), data,
                             storage)
            train = {"data": data, "max_steps": m["steps"], "epochs": m["epochs"]} if cfg.budget != "none" else {}
            per_arm[arm].update(m, train=train)
    reference = [before_lens[a] for a in ("A-all", "B-all") if a in before_lens] or list(before_lens.values())
    p99 = float(np.percentile(np.concatenate(reference), 99)) if reference else None
    warning = (f"max_len {first.max_len} is below the paired data's p99 length ({p99:.0f} tokens): the over-long "
               f"rows are {'cut' if first.overlong == 'truncate' else 'dropped'}, and they are the longest (likely the most branching) traces"
               if p99 is not None and first.max_len < p99 else None)
    budget = {"mode": cfg.budget, "digest": digest, "max_len": first.max_len, "overlong": first.overlong,
              "p99_length": p99, "warning": warning, "arms": per_arm,
              "common_steps": len({m["steps"] for m in matched.values()}) == 1,
              "supervised_tokens_spread": spread([m["supervised_tokens"] for m in matched.values()])}
    io.write_text(json.dumps(budget, indent=1), budget_uri(cfg), storage)
    print(f"[experiment] budget ({cfg.budget}): " + ", ".join(f"{a} {m['rows']} rows / {m['supervised_tokens']} "
                                                              f"tokens / {m['steps']} steps" for a, m in matched.items())
          + (f"\n[experiment] WARNING: {warning}" if warning else ""), flush=True)
    return budget


def spread(values: list[int]) -> float | None:
    """(max - min) / min: how far apart the arms are."""
    return (max(values) - min(values)) / min(values) if values and min(values) > 0 else None
