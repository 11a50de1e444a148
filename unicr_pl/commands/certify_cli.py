"""`certify.py` / `unicr-certify`: radius, curve, certify, analyze and attack subcommands.

python certify.py radius --noise gennormal --beta 1.5 --sigma 1 --norm 2 --dim 3072 --pa 0.9
python certify.py curve --noise laplace --norm 1 2 inf --dim 3072 --out outputs/curves
"""

from __future__ import annotations

import argparse
import sys

from unicr_pl.commands import analyze, attack, curve, radius
from unicr_pl.commands.errors import guarded


def main(argv: list[str] | None = None) -> int:
    """Parses `argv` (default: the command line), runs the subcommand, returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "certify":  # Lightning-based: imported only when needed
        from unicr_pl.commands import certify_dataset

        return guarded("certify.py certify", lambda: certify_dataset.run(argv[1:]))
    parser = argparse.ArgumentParser(prog="certify.py", description="Certification command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("certify", help="certify a dataset from a train.py checkpoint (see --help)")
    radius.add_parser(sub)
    curve.add_parser(sub)
    analyze.add_parser(sub)
    attack.add_parser(sub)
    args = parser.parse_args(argv)
    return guarded(f"certify.py {args.command}", lambda: args.run(args))
