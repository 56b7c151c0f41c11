"""raypipe make-sample: write a small synthetic sample (labelled as such) for a demo without real data."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("make-sample", help="write a small synthetic sample of trajectories", description=__doc__)
    p.add_argument("--output", required=True)
    p.add_argument("--rows", type=int, default=200, help="rows per source")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from raypipe.synthetic import write_sample

    for path in write_sample(args.output, args.rows, args.seed):
        print(path)
    return 0
