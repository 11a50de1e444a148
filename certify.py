"""Certification command line.

python certify.py radius --noise gennormal --beta 1.5 --sigma 1 --norm 2 --dim 3072 --pa 0.9
python certify.py curve --noise laplace --norm 1 2 inf --dim 3072 --out outputs/curves
"""

from __future__ import annotations

import argparse
import sys

from unicr_pl.commands import analyze, attack, curve, radius


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "certify":  # Lightning-based: imported only when needed
        from unicr_pl.commands import certify_dataset

        return guarded("certify", lambda: certify_dataset.run(argv[1:]))
    parser = argparse.ArgumentParser(prog="certify.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("certify", help="certify a dataset from a train.py checkpoint (see --help)")
    radius.add_parser(sub)
    curve.add_parser(sub)
    analyze.add_parser(sub)
    attack.add_parser(sub)
    args = parser.parse_args(argv)
    return guarded(args.command, lambda: args.run(args))


def guarded(command: str, work) -> int:
    """The error boundary of a subcommand: expected failures (bad input as ValueError, and the
    OS's refusals: disk full, permission denied, missing file) become one line
    `certify.py <command>: error: <what> (<file>)` and exit code 2; anything else keeps its
    traceback."""
    try:
        work()
    except ValueError as err:
        message = str(err)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        message = f"{err.strerror or err}{where}"
    else:
        return 0
    print(f"certify.py {command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
