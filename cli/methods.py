"""``px-hub methods``: the scoring methods of the registry, one line each."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("methods", help="list the pruning methods (`px-hub prune --method NAME`)",
                              description="List the registered scoring methods with their defaults.")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(methods_table())
    return 0


def methods_table() -> str:
    from px_hub.methods import list_methods
    from px_hub.spec import DEFAULT_METHOD

    infos = list_methods()
    w = max(len(m.name) for m in infos)
    lines = []
    for m in infos:
        kind = f"{m.default_rounds} rounds" if m.iterative else "1 round"
        data = "data" if m.needs_data else "no data"
        opts = f"; options: {', '.join(f'{k}={v}' for k, v in m.options.items())}" if m.options else ""
        default = "; the default" if m.name == DEFAULT_METHOD else ""
        lines.append(f"{m.name:<{w}}  {m.display_name}: {m.description} ({kind}, {data}{opts}{default})")
    return "\n".join(lines)
