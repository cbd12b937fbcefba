"""The `near` command line.

Each command group lives in `near/commands/<group>.py` and exposes `register(subparsers)`;
heavy imports (torch, hydra, pandas) happen inside the handlers so that `near --help` is instant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys

from near.exitcodes import EXIT_STOPPED
from near.errors import NearError


def build_parser() -> argparse.ArgumentParser:
    """Assemble the full parser from the command modules."""
    from near.commands import render, report, slurm, sweep, train

    parser = argparse.ArgumentParser(
        prog="near",
        description="Sweeps for imitation-learning experiments: spec -> job table -> executors -> figures.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{sweep,train,report,render}")
    sweep_parser = groups.add_parser("sweep", help="add, run, submit and inspect sweeps")
    sweep_commands = sweep_parser.add_subparsers(dest="command", required=True)
    sweep.register(sweep_commands)
    slurm.register(sweep_commands)
    train.register(groups)
    report.register(groups)
    render.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `near` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        return code
    except NearError as err:
        print(f"near: error: {err}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as err:  # a read the job table did not name its file for
        print(f"near: error: job table: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("near: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """The reader of our output went away (``near sweep status | head``): stop quietly, with the
    status a command killed by SIGPIPE has, as other Unix tools do."""
    # Python flushes stdout again at exit, into the same closed pipe: point it at /dev/null first
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
