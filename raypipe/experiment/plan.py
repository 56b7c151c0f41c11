"""`raypipe experiment plan CONFIG`: every stage with its inputs, row and token counts, and GPU-hours, before
anything runs (and the same numbers on the results page).

Counts come from the best evidence there is, and each row says which: the budget (budget.json: every arm's rows and
tokens as SFT renders them), the arms' curation manifests, a sample of each source (the first records, read within
`cost.read_timeout_s`; tokens ~ characters / 4), or the stated assumptions (`cost.assumed_*`) when a source cannot be
read. GPU-hours (the step judge's rows count the trajectories and prompt tokens it is sent, not GPU-hours):
  training   tokens x epochs x 6 x parameters / (cost.mfu x cost.peak_tflops)
  evaluation 2 x parameters x generated tokens / (cost.eval_mfu x cost.peak_tflops), generated tokens =
             problems x n x max_tokens x cost.generated_share (the upper bound: x 1.0)
"""
from __future__ import annotations

import json
import threading

from raypipe.core import io

CHARS_PER_TOKEN = 4.0


def count_parameters(config: dict) -> float | None:
    """Parameters of a decoder-only transformer from its config.json (Llama / Qwen2 / Mistral layout)."""
    try:
        d, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        ffn = config.get("intermediate_size", 4 * d)
        heads = config["num_attention_heads"]
        kv = config.get("num_key_value_heads", heads) * config.get("head_dim", d // heads)
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    attention = d * (d + 2 * kv) + (d + 2 * kv) + d * d  # q, k, v with biases (Qwen2), o
    per_layer = attention + 3 * d * ffn + 2 * d
    embeddings = vocab * d * (1 if config.get("tie_word_embeddings") else 2)
    return float(layers * per_layer + embeddings + d)


def model_parameters(cfg) -> tuple[float | None, str]:
    if cfg.cost.parameters:
        return cfg.cost.parameters, "cost.parameters"
    path = cfg.model
    if path == "tiny":
        from raypipe.tiny import build_tiny

        path = build_tiny()
    text, error = with_timeout(lambda: io.read_text(io.join(path, "config.json"), probe_storage(cfg)),
                               cfg.cost.read_timeout_s)
    n = count_parameters(json.loads(text)) if text else None
    if n is None and cfg.task is not None:  # the student the task stage will build
        from raypipe.organism.student import student_config

        return count_parameters(student_config(cfg.task.student, cfg.task.max_number())), "task.student"
    if n:
        return n, f"{path}/config.json"
    return n, "unknown: set cost.parameters" + (f" ({path}/config.json: {error})" if error else "")


def probe_storage(cfg) -> io.Storage:
    """The experiment's storage for the plan's reads: a short connect timeout, so that an unreachable endpoint
    answers in seconds (with its reason), not after the S3 client's retries."""
    return cfg.storage().probing()


def probes(cfg) -> str:
    """What the plan reads before it prices anything (printed first: the reads can take a while)."""
    model = "" if cfg.cost.parameters or cfg.model == "tiny" else f"{cfg.model}/config.json, "
    return (f"reading {model}a sample of source A ({cfg.source_a}) and B ({cfg.source_b}) and what {cfg.output} "
            f"holds; each read gives up after {cfg.cost.read_timeout_s:g} s")


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def with_timeout(fn, seconds: float) -> tuple:
    """(fn(), None) run in a daemon thread; (None, why) when it fails (the error) or takes longer than `seconds`."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except Exception as e:  # noqa: BLE001 - an unreadable source falls back to the assumptions
            box["error"] = _reason(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if "value" in box:
        return box["value"], None
    return None, box.get("error") or f"no answer within {seconds:g} s"


def sample_source(uri: str, cfg) -> dict:
    """{records, tokens_per_record} estimated from the first records of the first file and the files' sizes."""
    storage = probe_storage(cfg)
    files = io.list_inputs(uri, storage)
    fs, _ = storage.filesystem(files[0])
    sizes = [fs.get_file_info(storage.filesystem(f)[1]).size or 0 for f in files]
    chars = rows = 0
    nbytes = 0
    for r in io.iter_raw_rows(files[0], storage):
        text = r.raw or json.dumps(r.value, ensure_ascii=False, default=str)
        chars, rows, nbytes = chars + len(text), rows + 1, nbytes + len(text.encode())
        if rows >= cfg.cost.sample_records:
            break
    if not rows:
        raise ValueError(f"{uri}: no records")
    compressed = files[0].endswith((".gz", ".zst"))
    records = rows if rows < cfg.cost.sample_records and len(files) == 1 else \
        int(sum(sizes) / (nbytes / rows) * (4 if compressed else 1))
    return {"records": records, "tokens_per_record": chars / rows / CHARS_PER_TOKEN,
            "basis": f"sample of {rows} records" + (" (compressed: x4 assumed)" if compressed else "")}


def source_counts(cfg) -> dict[str, dict]:
    """Both sources sampled at once, each within cost.read_timeout_s; an unreadable one falls back to the assumptions."""
    found: dict[str, dict | None] = {}
    errors: dict[str, str] = {}

    def sample(name: str, uri: str) -> None:
        value, error = with_timeout(lambda: sample_source(uri, cfg), cfg.cost.read_timeout_s)
        found[name] = value
        if error:
            errors[name] = error

    threads = [threading.Thread(target=sample, args=(n, u), daemon=True)
               for n, u in (("A", cfg.source_a), ("B", cfg.source_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg.cost.read_timeout_s + 1)
    if cfg.task is not None and not all(found.get(n) for n in ("A", "B")):  # the task stage writes them
        from raypipe.organism.make import estimate_sources

        for name, estimate in estimate_sources(cfg.task, cfg.cost.sample_records).items():
            found[name] = found.get(name) or estimate
    out = {}
    for name, uri in (("A", cfg.source_a), ("B", cfg.source_b)):
        out[name] = found.get(name) or {"records": cfg.cost.assumed_records,
                                        "tokens_per_record": float(cfg.cost.assumed_tokens_per_record),
                                        "basis": "assumed (source not readable)",
                                        "error": errors.get(name) or "no answer in time"}
        out[name]["input"] = uri
    return out


def read_outputs(cfg, stages) -> tuple[dict, dict | None, dict]:
    """(budget, pairing, curation manifests by arm) of an experiment folder, when it can be read in time."""
    from raypipe.experiment.budget import read_budget

    def read():
        storage = probe_storage(cfg)
        manifests = {s.arm: _json(s.marker, storage) for s in stages(cfg, {}) if s.stage == "curate"}
        return read_budget(cfg, storage) or {}, _json(io.join(cfg.output, "paired", "pairing.json"), storage), manifests

    return with_timeout(read, cfg.cost.read_timeout_s)[0] or ({}, None, {})


def _json(uri: str, storage) -> dict | None:
    try:
        text = io.read_text(uri, storage)
    except OSError:
        return None
    return json.loads(text) if text else None


def estimate(cfg, stages, sample: bool = True) -> dict:
    """Every stage's rows, tokens and GPU-hours; `stages(cfg, budget)` lists the stages (raypipe.experiment.runner);
    `sample=False` reads no source (the results page, after the run)."""
    from raypipe.eval.benchmarks import REGISTRY

    params, params_from = model_parameters(cfg)
    peak = cfg.cost.peak_tflops * 1e12
    box: dict = {}
    reader = threading.Thread(target=lambda: box.update(sources=source_counts(cfg)), daemon=True)
    if sample:
        reader.start()
    budget, pairing, manifests = read_outputs(cfg, stages)
    if sample:
        reader.join(cfg.cost.read_timeout_s + 5)
    sources = box.get("sources", {})
    share = cfg.cost.assumed_paired_share
    if pairing and pairing.get("union"):
        share = pairing["paired"] / pairing["union"]
    rows_out: list[dict] = []
    if cfg.pair_by != "none":
        for name, s in sources.items():
            rows_out.append({"stage": "pair", "arm": name, "input": s["input"], "rows": s["records"],
                             "tokens": s["records"] * s["tokens_per_record"], "gpu_hours": 0.0,
                             "basis": s["basis"] + " (CPU: verify + structure)"})
    for stage in stages(cfg, budget):
        if stage.stage in ("pair", "make-task"):  # CPU only, counted above or negligible
            continue
        row = {"stage": stage.stage, "arm": stage.arm, "input": getattr(stage.settings, "input", None)
               or getattr(stage.settings, "data", None) or stage.settings.model, "gpu_hours": 0.0}
        src = sources.get("B" if stage.arm.startswith("B-") else "A")
        if stage.stage == "curate":
            manifest = manifests.get(stage.arm)
            if manifest:
                row.update(rows=manifest["counts"]["kept"], basis="curated (manifest.json)")
            elif src:
                row.update(rows=int(src["records"] * share), basis=src["basis"] + f", x paired share {share:.2f}")
            if src and "rows" in row:
                row["tokens"] = row["rows"] * src["tokens_per_record"]
        elif stage.stage == "train":
            arm = (budget.get("arms") or {}).get(stage.arm)
            t = stage.settings
            if arm:
                tokens = arm["tokens"] * arm["steps"] / max(arm["steps_per_epoch"], 1)
                row.update(rows=arm["rows"], tokens=tokens, steps=arm["steps"], basis=f"budget ({budget['mode']})")
            elif src:
                kept = src["records"] * share * (1 - (cfg.drop if "drop" in stage.arm else 0))
                tokens = kept * min(src["tokens_per_record"], t.max_len) * t.epochs
                row.update(rows=int(kept), tokens=tokens, basis=src["basis"] + f", {t.epochs} epochs")
            if params and "tokens" in row:
                row["gpu_hours"] = row["tokens"] * 6 * params / (cfg.cost.mfu * peak) / 3600
        elif stage.stage == "judge":
            row.update(judge_row(stage.settings, sources.get(stage.arm[-1]), share))
        elif stage.stage == "eval":
            e = stage.settings
            generated = {"organism": cfg.task.test_problems, "organism_hard": cfg.task.hard_problems} if cfg.task else {}
            problems = sum(min(generated.get(b) or (REGISTRY[b].size if b in REGISTRY else None)
                               or cfg.cost.assumed_problems, e.limit or 10**9) for b in e.benchmarks)
            upper = problems * e.n * e.max_tokens
            row.update(rows=problems * e.n, tokens=upper * cfg.cost.generated_share, tokens_upper=upper,
                       basis=f"{problems} problems x n={e.n} x max_tokens={e.max_tokens} x {cfg.cost.generated_share}")
            if params:
                flops = 2 * params / (cfg.cost.eval_mfu * peak) / 3600
                row.update(gpu_hours=row["tokens"] * flops, gpu_hours_upper=upper * flops)
        rows_out.append(row)
    trains = [r for r in rows_out if r["stage"] == "train" and "tokens" in r and not r["basis"].startswith("budget")]
    if trains and cfg.budget != "none":  # matched budgets: every arm trains what the smallest one has
        floor = min(r["tokens"] for r in trains)
        for r in trains:
            r["gpu_hours"] *= floor / r["tokens"] if r["tokens"] else 1
            r.update(tokens=floor, basis=r["basis"] + f", matched ({cfg.budget})")
    total = sum(r["gpu_hours"] for r in rows_out)
    upper = sum(r.get("gpu_hours_upper", r["gpu_hours"]) for r in rows_out)
    unreadable = {name: {"input": src["input"], "error": src["error"]} for name, src in sources.items()
                  if src.get("error")}
    return {"parameters": params, "parameters_from": params_from, "cost": cfg.cost.model_dump(),
            "unreadable_sources": unreadable,
            "paired_share": share, "stages": rows_out, "gpu_hours": total, "gpu_hours_upper": upper}


def judge_row(j, src: dict | None, share: float) -> dict:
    """The step judge of one source: trajectories and prompt tokens sent (steps cut to max_step_chars are not
    counted as cut). Its hardware is not priced: the keyword judge runs on CPU, the openai one on its endpoint."""
    where = {"keyword": "keyword lexicon on CPU", "openai": f"endpoint {j.endpoint}, not priced here",
             "vllm": "vLLM engines of the cluster, not priced here"}.get(j.backend, j.backend)
    if not src:
        return {"basis": where}
    rows = int(src["records"] * share)
    rows = min(rows, j.limit) if j.limit else rows
    return {"rows": rows, "tokens": rows * src["tokens_per_record"],
            "basis": src["basis"] + f", x paired share {share:.2f}" + (f", limit {j.limit}" if j.limit else "")
            + f"; {where}"}


def _num(x) -> str:
    if x is None:
        return "-"
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def to_text(plan: dict) -> str:
    c = plan["cost"]
    lines = [f"student parameters {_num(plan['parameters'])} ({plan['parameters_from']}); training MFU {c['mfu']}, "
             f"generation MFU {c['eval_mfu']}, peak {c['peak_tflops']} TFLOP/s per GPU; paired share "
             f"{plan['paired_share']:.2f}",
             *(f"source {name} ({u['input']}) not readable: {u['error']}; its rows below assume "
               f"cost.assumed_records and cost.assumed_tokens_per_record" for name, u in
               plan.get("unreadable_sources", {}).items()), "",
             f"{'stage':7s} {'arm':22s} {'rows':>9s} {'tokens':>9s} {'GPU-h':>9s} {'(upper)':>9s}  basis / input"]
    for r in plan["stages"]:
        lines.append(f"{r['stage']:7s} {r['arm']:22s} {_num(r.get('rows')):>9s} {_num(r.get('tokens')):>9s} "
                     f"{r['gpu_hours']:9.2f} {r.get('gpu_hours_upper', r['gpu_hours']):9.2f}  "
                     f"{r.get('basis', '-')}; {r['input']}")
    lines += ["", f"total: {plan['gpu_hours']:.1f} GPU-hours (upper bound {plan['gpu_hours_upper']:.1f}; curation and "
              "pairing run on CPU, the step judge where its row says)"]
    return "\n".join(lines)
