"""raypipe diagnose: loss-probe and judge summaries of two sources side by side, next to the paper's figures."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("diagnose", help="compare two sources' diagnostics with the paper", description=__doc__)
    p.add_argument("--sources", required=True, help="A,B: A plays the paper's DeepSeek-R1, B its gpt-oss-120b")
    p.add_argument("--loss", default="", help="loss-probe output folder(s), comma-separated")
    p.add_argument("--judge", default="", help="judge output folder(s), comma-separated")
    p.add_argument("--output", required=True, help="HTML file to write (local or s3://)")
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-region")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from raypipe import io
    from raypipe.diagnostics.compare import write_compare

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if len(sources) != 2:
        print("raypipe diagnose: --sources takes exactly two names, A,B", file=sys.stderr)
        return 2
    loss = [u for u in args.loss.split(",") if u]
    judge = [u for u in args.judge.split(",") if u]
    if not loss and not judge:
        print("raypipe diagnose: give --loss and/or --judge output folders", file=sys.stderr)
        return 2
    try:
        rows = write_compare(sources[0], sources[1], loss, judge, args.output, io.Storage(args.s3_endpoint, args.s3_region))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"raypipe diagnose: {e}", file=sys.stderr)
        return 2
    for r in rows:
        print(f"{r['metric']:<28} A={r['a']!s:<24} B={r['b']!s:<24} same direction as paper: {r['same']}")
    print(f"[raypipe] compare page: {args.output}")
    return 0
