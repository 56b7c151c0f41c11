"""A tiny model's SFT step with torch's two threads, alone and beside a busy process, with OpenMP's idle threads
spinning (the default) or sleeping (OMP_WAIT_POLICY=PASSIVE): why `make test` sets PASSIVE for its two streams.

    .venv/bin/python benchmarks/omp_contention.py [--steps 15]

Each case runs in its own process (the policy is read when torch loads); the busy process is one Python loop,
stopped when the case ends. Prints seconds and CPU-seconds per step.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def step_time(threads: int, steps: int) -> tuple[float, float]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randint(0, 64, (8, 512))

    def step():
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def case(threads: int, policy: str | None, busy: bool, steps: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--one", str(threads), "--steps", str(steps)], env=env,
                             capture_output=True, text=True, timeout=600, check=True).stdout.split()
    finally:
        if burner:
            burner.kill()
            burner.wait()
    return (f"threads {threads}, {'beside a busy process' if busy else 'alone':22}, OMP_WAIT_POLICY "
            f"{policy or '(default)':9}: {float(out[0]):.3f} s/step, {float(out[1]):.3f} CPU-s/step")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the measuring child: this many threads
    args = ap.parse_args()
    if args.one:
        print(*step_time(args.one, args.steps))
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    for threads, policy, busy in [(2, None, False), (2, "PASSIVE", False), (1, None, False),
                                  (2, None, True), (2, "PASSIVE", True), (1, None, True)]:
        print(case(threads, policy, busy, args.steps), flush=True)


if __name__ == "__main__":
    main()
