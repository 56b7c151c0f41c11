"""Measured eval throughput on this machine: grading stored outputs (replay of the 500 Sky-T1 MATH500 outputs)
and hf generation with the tiny model. Prints the numbers; nothing is asserted."""
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("RAYPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))

from raypipe.eval.config import EvalConfig  # noqa: E402
from raypipe.eval.runner import run_eval  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    r = run_eval(EvalConfig(model="sky-t1", backend="replay", benchmarks=["math500"], n=1, verify_workers=2,
                            responses=[str(DATA / "trajectories" / "skyt1_math-correct-5K-27B_math500.jsonl")],
                            data_dir=str(DATA / "benchmarks"), output=f"{tmp}/replay"), log=lambda *_: None)
    s = time.perf_counter() - t
    print(f"replay+grade: 500 Sky-T1 MATH500 outputs in {s:.1f} s ({500 / s:.1f} samples/s), "
          f"avg@1 = {r['metrics']['math500']['avg@n']:.3f}")
    t = time.perf_counter()
    r = run_eval(EvalConfig(model="tiny", backend="hf", benchmarks=["math500"], limit=8, n=4, max_tokens=64,
                            data_dir=str(DATA / "benchmarks"), output=f"{tmp}/hf"), log=lambda *_: None)
    s = time.perf_counter() - t
    print(f"hf tiny: 32 samples x 64 new tokens in {s:.1f} s ({r['run']['samples_per_s']} samples/s incl. grading)")
