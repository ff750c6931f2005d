"""``px-hub finetune``: train a ticket (or a backbone + mask) with a recipe; thin over :func:`px_hub.finetune.finetune`.

    px-hub finetune --recipe cifar10_resnet20 --ticket px-ticket train.epochs=2 optim.lr=0.05
    accelerate launch -m px_hub.finetune --recipe cifar10_resnet20 --ticket px-ticket   # several processes
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="a shipped recipe name (see --list-recipes) or a YAML file")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ticket", help="a ticket folder or Hub repo id: model + mask; results are written into it")
    src.add_argument("--model", help="a backbone name (overrides model.name), with --mask or prune.method")
    p.add_argument("--mask", help="mask.safetensors for --model (or for the recipe's model)")
    p.add_argument("--output", help="run folder (default runs/<recipe>-<hash>)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set train.epochs=2 (repeatable; bare KEY=VALUE also works)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=0.05")
    p.add_argument("--no-resume", action="store_true", help="fail instead of continuing an existing run")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start over")
    p.add_argument("--no-progress", action="store_true")
    from px_hub.cli.hub import add_push_arguments

    add_push_arguments(p)  # --push [--repo-id ID] [--private] [--revision BRANCH], as on `px-hub prune`


def run(args: argparse.Namespace) -> int:
    from px_hub.finetune import finetune, load_recipe
    from px_hub.masking import Mask

    overrides = list(args.sets) + list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    recipe = load_recipe(args.recipe, overrides)
    mask = Mask.load(args.mask) if args.mask else None
    res = finetune(recipe, output_dir=args.output, ticket=args.ticket, mask=mask, resume=not args.no_resume,
                   overwrite=args.overwrite, progress=not args.no_progress)
    from px_hub.cli.hub import maybe_push
    from px_hub.distributed import is_main_process

    if is_main_process():
        shown = " ".join(f"{k}={v}" for k, v in res.metrics.items() if k not in ("epoch", "step", "seconds"))
        print(f"{res.output_dir}: {shown}" + (f" (ticket: {res.ticket_dir})" if res.ticket_dir else ""))
        if args.push:
            if not res.ticket_dir:
                from px_hub.errors import InvalidArgumentError

                raise InvalidArgumentError("--push needs a ticket: pass --ticket, or --model with a prune record")
            maybe_push(args, res.ticket_dir)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a ticket with a recipe (runs under accelerate launch too)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m px_hub.finetune`` (what ``accelerate launch -m`` runs)."""
    from px_hub.errors import PxHubError

    p = argparse.ArgumentParser(prog="python -m px_hub.finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except PxHubError as e:
        print(f"px-hub finetune: error: {e}", file=sys.stderr)
        return 2
