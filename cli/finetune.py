"""``px-hub finetune``: train a ticket (or a backbone + mask) with a recipe; thin over
:func:`px_hub.finetune.finetune`."""
from __future__ import annotations

import argparse

DESCRIPTION = """Fine-tune a ticket with a recipe (the paper's Table 3 rows and small offline ones; see
--list-recipes). The network comes from --ticket (a folder or Hub repo id; results are written into it), from
--model (+ --mask), or from the recipe (pruned first when the recipe sets prune.method). Recipe values are
overridden with KEY=VALUE arguments. An interrupted run continues from its last checkpoint.

examples:
  px-hub finetune --recipe cifar10_resnet20 --ticket px-ticket train.epochs=2 optim.lr=0.05
  accelerate launch -m px_hub.finetune --recipe cifar10_resnet20 --ticket px-ticket   # several processes"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from px_hub.cli.hub import add_push_arguments
    from px_hub.cli.main import add_common_arguments, add_deprecated_alias

    p.add_argument("--recipe", help="a shipped recipe name (see --list-recipes) or a YAML file (required)")
    p.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ticket", help="a ticket folder or Hub repo id: model + mask; results are written into it")
    src.add_argument("--model",
                     help="a backbone name (overrides model.name), with --mask or the recipe's prune.method")
    p.add_argument("--mask", help="mask.safetensors for --model (or for the recipe's model)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/RECIPE-HASH)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set train.epochs=2 (repeatable; bare KEY=VALUE also works)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. optim.lr=0.05")
    p.add_argument("--no-resume", action="store_true", help="fail instead of continuing an existing run")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start over")
    add_common_arguments(p)
    add_push_arguments(p)  # --push [--repo-id ID] ..., as on `px-hub prune`
    add_deprecated_alias(p, "--output", "out")
    add_deprecated_alias(p, "--no-progress", "quiet", action="store_true")


def check(args: argparse.Namespace) -> None:
    from px_hub.cli.hub import check_push
    from px_hub.errors import InvalidArgumentError

    if args.list_recipes:
        return
    if not args.recipe:
        raise InvalidArgumentError("--recipe is required; e.g. --recipe cifar10_resnet20 (see --list-recipes)")
    check_push(args)


def run(args: argparse.Namespace) -> int:
    from px_hub.distributed import is_main_process
    from px_hub.finetune import available_recipes, finetune, load_recipe
    from px_hub.masking import Mask

    if args.list_recipes:
        print("\n".join(available_recipes()))
        return 0
    overrides = list(args.sets) + list(args.overrides)
    if args.model:
        overrides.append(f"model.name={args.model}")
    recipe = load_recipe(args.recipe, overrides)
    mask = Mask.load(args.mask) if args.mask else None
    res = finetune(recipe, output_dir=args.out, ticket=args.ticket, mask=mask, resume=not args.no_resume,
                   overwrite=args.overwrite, progress=not args.quiet)
    from px_hub.cli.hub import maybe_push

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
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(handler=run, check=check)

