"""``px-hub`` entry point. Each subcommand lives in its own module exposing ``register(subparsers)``; the
subcommand's handler returns an exit code. Every ``PxHubError`` becomes one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMAND_MODULES = ("prune", "hub", "finetune", "analysis")


def build_parser() -> argparse.ArgumentParser:
    from px_hub import __version__

    parser = argparse.ArgumentParser(
        prog="px-hub",
        description="Find lottery tickets in Hub vision backbones with PX, fine-tune and publish them.",
    )
    parser.add_argument("--version", action="version", version=f"px-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(f"px_hub.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"px_hub.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from px_hub.errors import PxHubError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except PxHubError as e:
        print(f"px-hub {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"px-hub {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
