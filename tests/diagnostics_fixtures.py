"""Small real inputs for the diagnostics tests, written to a temp folder (never into the repo)."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import R1, TRAJECTORIES

SKY = TRAJECTORIES / "skyt1_math-correct-5K-14B_aime24.jsonl"


def first_rows(path: Path, n: int) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def write_two_sources(folder: Path, n: int = 3, garbage: bool = True) -> Path:
    """n real R1 rows and n real Sky-T1 rows on the same problems, plus one unreadable line."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "r1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first_rows(R1 / "deepseek-r1_aime24.jsonl", n)))
    lines = [json.dumps(r) for r in first_rows(SKY, n)] + (["{not json"] if garbage else [])
    (folder / "sky.jsonl").write_text("\n".join(lines) + "\n")
    return folder
