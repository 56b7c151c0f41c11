"""A reference input for `--proxy step-ratio`: trajectories scored only for their step counts per problem (the
paper's second proxy divides a trajectory's steps by the reference teacher's on the same problem). The reference
is read with the run's own format and scoring settings, its verified-correct rows are counted, and nothing of it
is written: an arm that curates source A alone can still be ranked against source B."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow.compute as pc

from raypipe.core import io
from raypipe.core.formats import make_format
from raypipe.core.scoring import Scorer
from raypipe.core.verify import CORRECT


def reference_input_steps(config, storage: io.Storage) -> dict[str, float]:
    """problem_id -> mean n_steps of the reference input's verified-correct rows (of reference_source, if set)."""
    from raypipe.curate.shard import load_shard

    scorer = Scorer(config.scoring()).setup()
    fmt = make_format(config.format, config.fields)
    steps: dict[str, list] = defaultdict(list)
    sources = set()
    try:
        for uri in io.list_inputs(config.reference_input, storage):
            records, _, _ = load_shard(uri, storage, config.max_response_chars, fmt)
            for start in range(0, records.num_rows, config.batch_rows):
                scored = scorer.score(records.slice(start, config.batch_rows))
                sources.update(scored.column("source").to_pylist())
                keep = pc.equal(scored.column("verdict"), CORRECT)
                if config.reference_source:
                    keep = pc.and_(keep, pc.equal(scored.column("source"), config.reference_source))
                scored = scored.filter(keep)
                for pid, n in zip(scored.column("problem_id").to_pylist(), scored.column("n_steps").to_pylist()):
                    steps[pid].append(n)
    finally:
        scorer.close()
    if not steps:
        raise ValueError(f"--reference-input {config.reference_input}: no verified-correct rows"
                         + (f" of source {config.reference_source!r} (sources: {sorted(sources)})"
                            if config.reference_source else ""))
    return {pid: float(np.mean(v)) for pid, v in steps.items()}
