"""A small generated sample of trajectories (for a demo where no real data is at hand). Labelled synthetic."""
from __future__ import annotations

import json
import os
import random

OPENERS = ["Perhaps", "Alternatively,", "Another approach:", "Wait,", "Hmm,"]
PLAIN = ["Compute the sum step by step.", "Substitute the values.", "Simplify the expression.",
         "Check the arithmetic.", "Combine like terms."]


def trajectory(rng: random.Random, a: int, b: int, branchiness: float, fmt: str) -> dict:
    steps = []
    for _ in range(rng.randint(4, 14)):
        text = rng.choice(PLAIN) + f" {a} + {b} is considered."
        if rng.random() < branchiness:
            text = rng.choice(OPENERS) + " " + text
        steps.append(text)
    right = rng.random() < 0.8
    answer = a + b if right else a + b + 1
    thinking = "\n\n".join(steps)
    problem = f"What is {a} + {b}?"
    final = f"The answer is $\\boxed{{{answer}}}$."
    if fmt == "think":
        return {"problem": problem, "answer": str(a + b), "response": f"<think>\n{thinking}\n</think>\n{final}"}
    if fmt == "sky":
        response = f"<|begin_of_thought|>\n{thinking}\n<|end_of_thought|>\n<|begin_of_solution|>\n{final}\n<|end_of_solution|>"
        return {"messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": response}],
                "answer": str(a + b)}
    response = f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant<|channel|>final<|message|>{final}<|return|>"
    return {"conversations": [{"from": "human", "value": problem}, {"from": "gpt", "value": response}],
            "reference_answer": str(a + b)}


def write_sample(out_dir: str, rows_per_source: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for source, branchiness, fmt in (("synthetic-divergent", 0.35, "think"), ("synthetic-convergent", 0.08, "sky"),
                                     ("synthetic-harmony", 0.15, "harmony")):
        path = os.path.join(out_dir, f"{source}.jsonl")
        with open(path, "w") as f:
            for i in range(rows_per_source):
                row = trajectory(rng, rng.randint(1, 500), rng.randint(1, 500), branchiness, fmt)
                row.update({"id": f"{source}-{i}", "source": source, "synthetic": True})
                f.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths
