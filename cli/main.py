"""``px-hub`` entry point. Each subcommand lives in its own module exposing ``register(subparsers)``; a subcommand
sets ``handler`` (returns an exit code) and optionally ``check`` (cheap argument checks that run before the library
is imported, so argument errors come back at once). Every ``PxHubError`` becomes one line on stderr and exit
code 2. Nothing heavy (torch, timm, huggingface_hub) is imported until the arguments are known to be valid."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

SUBCOMMAND_MODULES = ("prune", "methods", "hub", "finetune", "analysis")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``-v/--verbose``, the same on every subcommand."""
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, tables or notes; errors only")
    parser.add_argument("--verbose", "-v", action="count", default=0,
                        help="more log output: what each stage does and how long it took")


def add_deprecated_alias(parser: argparse.ArgumentParser, flag: str, dest: str, **kwargs) -> None:
    """An old spelling of an option, accepted but not shown in --help."""
    parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from px_hub import __version__

    parser = argparse.ArgumentParser(
        prog="px-hub",
        description="Find lottery tickets in Hub vision backbones with PX, fine-tune and publish them.",
        epilog="Run `px-hub COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"px-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"px_hub.cli.{name}").register(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each message (it may be swapped after set-up)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(args: argparse.Namespace) -> None:
    """Library messages (logger ``px_hub``) to stderr: warnings only with --quiet, notes by default, stage details
    with -v."""
    verbose = getattr(args, "verbose", 0) or 0
    level = logging.WARNING if getattr(args, "quiet", False) else logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("px_hub")
    logger.setLevel(level)
    if not any(getattr(h, "_px_hub", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("px-hub: %(message)s"))
        handler._px_hub = True
        logger.addHandler(handler)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from px_hub.errors import PxHubError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    setup_logging(args)
    try:
        if getattr(args, "check", None):
            args.check(args)
        import px_hub

        px_hub._load()
        from px_hub._alloc import keep_freed_memory

        keep_freed_memory()  # this process only: PX rounds reuse freed buffers (px_hub/_alloc.py)
        return int(args.handler(args) or 0)
    except PxHubError as e:
        print(f"px-hub {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"px-hub {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
