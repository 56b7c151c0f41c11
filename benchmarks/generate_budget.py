"""What the branch budget saves on real traces, and what it costs: the 630 real traces of ../shared/data (Sky-T1 on
MATH500, AMC23 and AIME 2024, DeepSeek-R1 on AIME 2024) replayed by an OpenAI-compatible server that streams them as
a model writes (raypipe.eval.replay_server: a few tokens per event at --rate tokens/s per stream), through the real
`raypipe generate` (openai backend, streaming, --abort-when), against generating everything and then curating.

For each setting: the share of the tokens the server streamed that the aborts saved (server-side counts), and the
false aborts: stopped traces that the finished-text filter keeps (the baseline run's curation, same settings), as a
share of all kept traces. Ends with one line `RESULT setting=… tokens_saved=0.xx false_aborts=0.xxx` for the
default setting.

    .venv/bin/python benchmarks/generate_budget.py [--rate 2000] [--concurrency 32]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))

from raypipe.eval.replay_server import replay_app, serve_in_thread  # noqa: E402
from raypipe.generate.abort import DEFAULT_ABORT  # noqa: E402

SETTINGS = ["markers>=21", "markers>=30", "branch_steps>=20", DEFAULT_ABORT, "branch_ratio>=threshold after 30 steps"]


def real_traces() -> tuple[list[dict], list[dict]]:
    """(problems, stored responses): a problem's text carries its source's tag, so each has one stored response."""
    files = sorted(glob.glob(str(SHARED / "trajectories" / "*.jsonl"))) + [str(SHARED / "r1" / "deepseek-r1_aime24.jsonl")]
    problems, stored = [], []
    for f in files:
        tag = Path(f).stem
        for line in open(f):
            r = json.loads(line)
            text = f"[{tag}] {r['problem']}"
            problems.append({"id": f"{tag}/{r['id']}", "problem": text, "answer": r["answer"]})
            stored.append({"problem": text, "response": r["response"]})
    return problems, stored


def run(setting: str, problems_file: Path, stored: list[dict], out: Path, args, reference: Path | None) -> dict:
    with serve_in_thread(replay_app(stored, tokens_per_s=args.rate, tokens_per_event=args.tokens_per_event)) as url:
        cmd = [sys.executable, "-m", "raypipe.cli", "generate", "--input", str(problems_file), "--backend", "openai",
               "--model", url, "--output", str(out), "--abort-when", setting, "--answer-from", "final-or-thinking",
               "--concurrency", str(args.concurrency), "--workers", "1", "--num-cpus", "2",
               "--max-tokens", "100000", "--request-timeout-s", "3600"]
        if reference is not None:
            cmd += ["--reference-manifest", str(reference)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{setting}: raypipe generate failed:\n{p.stderr[-3000:]}")
        time.sleep(1.0)  # the server's last stopped streams are counted once their tasks are cancelled
        stats = httpx.get(url[: -len("/v1")] + "/stats").json()
    manifest = json.loads((out / "manifest.json").read_text())
    aborted = {json.loads(line)["id"] for f in (out / "generation" / "aborted").glob("*.jsonl") for line in open(f)}
    return {"stats": stats, "manifest": manifest, "aborted": aborted, "seconds": seconds}


def kept_ids(out: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {r["id"] for f in (out / "curated").glob("*.parquet") for r in pq.read_table(f, columns=["id"]).to_pylist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="tokens per second of each stream")
    ap.add_argument("--tokens-per-event", type=int, default=4, help="tokens per server-sent event")
    ap.add_argument("--concurrency", type=int, default=32, help="streams in flight")
    ap.add_argument("--settings", nargs="*", default=SETTINGS)
    args = ap.parse_args()
    problems, stored = real_traces()
    work = Path(tempfile.mkdtemp(prefix="generate-budget-"))
    problems_file = work / "problems.jsonl"
    problems_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    print(f"{len(problems)} real traces, {sum(len(s['response']) for s in stored) / 1e6:.1f}M characters; "
          f"replayed at {args.rate:g} tokens/s per stream, {args.concurrency} streams; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    base = run("none", problems_file, stored, work / "none", args, None)
    kept = kept_ids(work / "none")
    total = base["stats"]["streamed_tokens"]
    print(f"generate everything, then curate: {total:,} tokens streamed, {len(kept)} of {len(problems)} kept "
          f"({base['seconds']:.0f} s)\n", flush=True)
    print(f"{'--abort-when':42s} {'stopped':>8s} {'tokens saved':>13s} {'false aborts':>13s} {'kept':>6s} "
          f"{'kept / M tokens':>16s}")
    results = {}
    for setting in args.settings:
        ref = work / "none" / "manifest.json" if "threshold" in setting else None
        r = run(setting, problems_file, stored, work / f"s{len(results)}", args, ref)
        saved = 1 - r["stats"]["streamed_tokens"] / total
        false = len(r["aborted"] & kept) / max(1, len(kept))
        g = r["manifest"]["generation"]
        results[setting] = (saved, false)
        print(f"{setting:42s} {len(r['aborted']):8d} {saved:13.3f} {false:13.4f} {g['kept']:6d} "
              f"{g['kept'] / max(1, r['stats']['streamed_tokens']) * 1e6:16.1f}", flush=True)
    print(f"\n(the baseline keeps {len(kept) / max(1, total) * 1e6:.1f} traces per million streamed tokens; load "
          f"average {os.getloadavg()[0]:.1f})")
    saved, false = results.get(DEFAULT_ABORT, (float("nan"), float("nan")))
    print(f"RESULT setting={DEFAULT_ABORT} tokens_saved={saved:.2f} false_aborts={false:.3f}")


if __name__ == "__main__":
    main()
