"""Curated Parquet -> tokenized, masked and (optionally) packed rows, on Ray Data; workers read them with
ray.train.get_dataset_shard. Row order is preserved so that a resumed run sees the same batches."""
from __future__ import annotations

import logging
from collections import Counter

import pyarrow as pa

from raypipe.core.stage import Stage
from raypipe.train.render import ReasoningDropped, parts_from_response, render

log = logging.getLogger("raypipe.train")

COLUMNS = ("problem", "thinking", "final", "source", "decision")
LEGACY_COLUMNS = ("response", "markup")  # curated data written before the thinking / final columns
# Rendered kinds (render.AssistantFormat.text) -> the summary's counts of the rows used.
KINDS = {"thinking": "rows_with_thinking", "final_only": "rows_without_thinking", "unmarked": "rows_unmarked"}


def resolve_data(uri: str, storage) -> str:
    """A curation output folder means its curated/ part."""
    from raypipe.core.io import exists, join

    if exists(join(uri, "curated"), storage):
        return join(uri, "curated")
    if not exists(uri, storage):
        raise FileNotFoundError(f"training data not found: {uri}")
    return uri


def source_names(uri: str, storage) -> list[str]:
    import pyarrow.dataset as pads

    fs, path = storage.filesystem(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    if "source" not in dataset.schema.names:
        return ["all"]
    return sorted(str(s) for s in dataset.to_table(columns=["source"]).column("source").unique().to_pylist())


def canonical_parts(batch: dict) -> tuple[list, list]:
    """(thinking, final) of a batch: its columns, else split from `response` (older curated data)."""
    if "thinking" in batch and "final" in batch:
        return list(batch["thinking"]), list(batch["final"])
    markups = batch["markup"] if "markup" in batch else [None] * len(batch["response"])
    parts = [parts_from_response(r, m) for r, m in zip(batch["response"], markups)]
    return [t for t, _ in parts], [f for _, f in parts]


TOKENIZED = pa.schema([("input_ids", pa.list_(pa.int64())), ("labels", pa.list_(pa.int64())), ("source", pa.int64()),
                       ("status", pa.string()), ("kind", pa.string()), ("cut", pa.int64())])


class Tokenize(Stage):
    """One curated row -> input_ids, labels (-100 on the prompt), source index, status, kind, tokens cut; rendered
    as the run's RenderSettings say (raypipe.train.render)."""

    name = "tokenize"
    reads = COLUMNS + LEGACY_COLUMNS
    writes = ("input_ids", "labels", "source", "status", "kind", "cut")

    def __init__(self, cfg, model_path: str, sources: list[str]):
        self.model_path = model_path
        self.args = (cfg.max_len, cfg.overlong, cfg.template, cfg.assistant_format(), cfg.truncate_min_tokens)
        self.sources = {s: i for i, s in enumerate(sources)}

    def setup(self) -> None:
        from raypipe.tiny import load_tokenizer

        self.tokenizer = load_tokenizer(self.model_path)

    def process(self, batch: dict) -> dict:
        out = {"input_ids": [], "labels": [], "source": [], "status": [], "kind": [], "cut": []}
        n = len(batch["problem"])
        srcs = batch["source"] if "source" in batch else ["all"] * n
        thinking, final = canonical_parts(batch)
        for problem, t, f, src in zip(batch["problem"], thinking, final, srcs):
            try:
                r = render(self.tokenizer, problem or "", t, f, *self.args)
            except ReasoningDropped:
                raise  # never train on trajectories whose reasoning the template removed
            except Exception as e:  # a row the tokenizer cannot take: counted, never a crash
                log.warning("row not tokenized: %s", e)
                out["input_ids"].append([]), out["labels"].append([]), out["source"].append(0)
                out["status"].append("error"), out["kind"].append(""), out["cut"].append(0)
                continue
            ex = r.example
            out["input_ids"].append(ex.input_ids if ex else [])
            out["labels"].append(ex.labels if ex else [])
            out["source"].append(self.sources.get(src, 0))
            out["status"].append(r.status)
            out["kind"].append(r.kind)
            out["cut"].append(r.tokens_cut)
        return out


def pack_batch(batch: dict, max_len: int, pack: bool) -> dict:
    from raypipe.train.packing import Doc, pack as pack_docs, row_record

    docs = [Doc(list(i), list(l), int(s)) for i, l, s in zip(batch["input_ids"], batch["labels"], batch["source"])]
    groups = pack_docs(docs, max_len) if pack else [[d] for d in docs]
    rows = [row_record(g) for g in groups]
    return {k: [r[k] for r in rows] for k in ("input_ids", "labels", "doc_lens", "doc_sources")}


def _tokenize_here(tokenize: Tokenize, files: list[str], fs, columns: list[str], has_decision: bool):
    """A small input tokenized in the driver (no actor to start), then handed to Ray Data as the pool's output."""
    import pyarrow.compute as pc
    import ray

    from raypipe.executor import LocalExecutor

    ex = LocalExecutor()
    tables = ex.read_parquet(files, fs, columns)
    if has_decision:
        tables = [t.filter(pc.fill_null(pc.equal(t.column("decision"), "keep"), True)) for t in tables]
    out = ex.map_dataset(tokenize, tables, batch_size=256, batch_format="default") or [TOKENIZED.empty_table()]
    out = [t.cast(TOKENIZED) for t in out]
    pairs, cut = Counter(), 0
    for t in out:
        pairs.update(zip(t.column("status").to_pylist(), t.column("kind").to_pylist()))
        cut += pc.sum(t.column("cut")).as_py() or 0
    return ray.data.from_arrow(out), pairs, cut


def prepare(cfg, model_path: str, storage, sources: list[str], num_cpus_per_actor: float = 0.5):
    """(dataset of training rows, data stats). Materialized, so the row count fixes the step count."""
    import numpy as np
    import pyarrow.dataset as pads
    import ray
    import ray.data

    from raypipe.executor import Pool, RayExecutor

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the training prints its own progress
    uri = resolve_data(cfg.data, storage)
    fs, path = storage.filesystem(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    names = dataset.schema.names
    legacy = not {"thinking", "final"} <= set(names)  # an older curated folder: split the raw response
    missing = {"problem", *(["response"] if legacy else [])} - set(names)
    if missing:
        raise ValueError(f"{uri}: not curated trajectories (missing columns {sorted(missing)})")
    wanted = [c for c in COLUMNS + (LEGACY_COLUMNS if legacy else ()) if c in names]
    tokenize = Tokenize(cfg, model_path, sources)
    files = dataset.files
    if sum(int(i.size or 0) for i in fs.get_file_info(files)) < cfg.in_process_below_mb * (1 << 20):
        tokenized, pairs, tokens_cut = _tokenize_here(tokenize, files, fs, wanted, "decision" in names)
    else:
        ds = ray.data.read_parquet(path, filesystem=fs, columns=wanted)
        if "decision" in names:
            ds = ds.filter(lambda r: r["decision"] in (None, "keep"))
        tokenized = RayExecutor().map_dataset(tokenize, ds, batch_size=256, batch_format="default",
                                              pool=Pool(1, 1, num_cpus_per_actor)).materialize()
        pairs, tokens_cut = Counter(), 0
        for b in tokenized.select_columns(["status", "kind", "cut"]).iter_batches(batch_size=4096,
                                                                                  batch_format="numpy"):
            pairs.update(zip(b["status"].tolist(), b["kind"].tolist()))
            tokens_cut += int(b["cut"].sum())
    status, used = Counter(), Counter()
    for (s, k), n in pairs.items():
        status[s] += n
        used[k] += n if s in ("ok", "truncated") else 0
    usable = tokenized.filter(lambda r: r["status"] in ("ok", "truncated"))
    rows = usable.map_batches(pack_batch, fn_kwargs={"max_len": cfg.max_len, "pack": cfg.pack},
                              batch_size=4096 if cfg.pack else 256, num_cpus=num_cpus_per_actor)
    rows = rows.random_shuffle(seed=cfg.seed).materialize()
    n_rows = rows.count()
    tokens = sum(int(np.sum(x)) for b in rows.select_columns(["doc_lens"]).iter_batches(
        batch_size=4096, batch_format="numpy") for x in b["doc_lens"])
    stats = {"input_rows": sum(status.values()), "rows_used": status["ok"] + status["truncated"],
             "truncated": status["truncated"], "tokens_cut": tokens_cut,
             "rows_with_answer": status["ok"], "dropped_overlong": status["dropped_overlong"],
             "dropped_empty": status["empty"], "errors": status["error"], "train_rows": n_rows,
             "tokens": tokens, "data": uri,
             "rendered": {name: used[k] for k, name in KINDS.items()},
             "parts_from": "response (split: curated data without thinking/final columns)" if legacy else
             "thinking/final columns"}
    log.info("data: %s", stats)
    return rows, stats
