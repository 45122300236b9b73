"""The ``scoresde`` command line.

    scoresde train      --data moons --sde vp --steps 3000 --out runs/moons
    scoresde sample     --run runs/moons --solver pc --steps 500 --num 5000 --out samples.png
    scoresde likelihood --run runs/moons --split test --trace exact
    scoresde inpaint    --run runs/digits --mask right --out inpainted.png
    scoresde demo

One module per command (``demo``, ``train``, ``sample``, ``likelihood``), each with
``add_parser(subparsers)`` and ``run(args)``; what they share is in ``arguments`` (flag
types), ``runs`` (run directories, tensor files), ``plots`` (pictures) and ``errors``.

Error policy: a user error (bad flag or value, missing or corrupt run directory, unknown
data set or solver, an option the solver does not take, a failed solve) exits with status 2
and one line ``scoresde <command>: error: ...`` on stderr. Only the library's error types
are caught, so a bug still shows its traceback; ``SCORESDE_TRACEBACK=1`` shows it for user
errors too. See docs/cli.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Optional, Sequence

from solvers.errors import SolverError

from .. import __version__, distributed
from ..checkpoint import CheckpointError
from . import demo, inpaint, likelihood, sample, train
from .errors import _Fail

COMMANDS = {"train": train, "sample": sample, "likelihood": likelihood, "inpaint": inpaint,
            "demo": demo}

# What the library raises for bad input or a solve that cannot finish (CheckpointError is a
# ValueError, listed for clarity), another rank's failure under torchrun (RankError), the trainer's non-finite loss (FloatingPointError), and
# files or directories that cannot be read or written.
USER_ERRORS = (_Fail, ValueError, TypeError, ImportError, CheckpointError, SolverError,
               distributed.RankError,
               FloatingPointError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``<prog>: error: <message>``, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``scoresde`` and its sub-commands."""
    parser = _Parser(
        prog="scoresde",
        description="Continuous-time score-based diffusion models: train, sample, likelihood.")
    parser.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line on ``argv`` (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a parse error (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        # under torchrun: join the process group; only rank 0 prints (docs/distributed.md)
        if distributed.init() and not distributed.is_main():
            sys.stdout = open(os.devnull, "w")
        COMMANDS[args.command].run(args)
    except USER_ERRORS as err:
        if os.environ.get("SCORESDE_TRACEBACK"):
            raise
        print(f"scoresde {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scoresde {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly
        _silence_stdout()
        return 1
    return 0


def _silence_stdout() -> None:
    """Point stdout at devnull so that the interpreter's final flush does not fail again
    (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured)
        pass


__all__ = ["main", "build_parser", "COMMANDS"]
