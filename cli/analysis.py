"""``px-hub report`` and ``px-hub compare``: thin over :mod:`px_hub.analysis`."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from px_hub.cli.main import add_common_arguments, add_deprecated_alias
    from px_hub.spec import DEFAULT_METHOD

    p = sub.add_parser(
        "report", help="per-layer density/width, NTK spectrum vs dense, collapse warnings of a ticket",
        description="Analyze a ticket (folder or Hub repo id): write layer_density.png, alive_outputs.png, "
                    "ntk_spectrum.png and analysis.json, and add them to a local ticket's card.")
    p.add_argument("ticket", metavar="TICKET_OR_REPO", help="ticket folder, or USER/REPO[@REVISION] on the Hub")
    p.add_argument("--data", help="dataset for the NTK sample (default: the ticket's recorded pruning data)")
    p.add_argument("--out", metavar="DIR", help="folder for the figures and analysis.json (default: TICKET-report)")
    p.add_argument("--samples", type=int, default=20,
                   help="examples of the pruning split in the NTK; the NTK is (samples*outputs)^2 (default: 20)")
    p.add_argument("--max-outputs", type=int, default=10,
                   help="logits differentiated, evenly spaced when the model has more (default: 10)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense reference spectrum")
    p.add_argument("--no-card", action="store_true", help="do not add the figures to the ticket and its card")
    add_common_arguments(p)
    p.set_defaults(handler=_report)

    c = sub.add_parser(
        "compare", help="prune one model with several methods on the same split and compare the tickets",
        description="Prune MODEL on the same class-balanced split of DATA with each method; write compare.md "
                    "(per-method and per-layer table), compare.json and overlaid figures.")
    c.add_argument("--model", required=True, help="backbone (e.g. cifar_resnet20, timm/resnet50.a1_in1k)")
    c.add_argument("--data", required=True, help="dataset (e.g. digits, animal-mnist, cifar10, imagefolder:DIR)")
    c.add_argument("--sparsity", type=float, required=True, help="fraction of prunable weights removed, e.g. 0.982")
    methods = f"{DEFAULT_METHOD},px,synflow,snip"
    c.add_argument("--methods", default=methods,
                   help=f"comma-separated methods, see `px-hub methods` (default: {methods})")
    c.add_argument("--examples-per-class", type=int, default=10, metavar="K",
                   help="pruning split: K examples of each class (default: 10)")
    c.add_argument("--seed", type=int, default=0, help="seed of the split, the new head and random methods "
                                                       "(default: 0)")
    c.add_argument("--rounds", type=int, help="rounds for every method (default: each method's own)")
    c.add_argument("--batch-size", type=int, default=100, help="pruning batch size (default: 100)")
    c.add_argument("--no-pretrained", action="store_true",
                   help="prune the architecture at a random init drawn with --seed (the paper's setting)")
    c.add_argument("--samples", type=int, default=20, help="examples in the NTK (default: 20)")
    c.add_argument("--max-outputs", type=int, default=10,
                   help="logits differentiated in the NTK (default: 10)")
    c.add_argument("--finetune", metavar="RECIPE", help="also fine-tune each ticket with RECIPE and add accuracy")
    c.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for --finetune, repeatable (e.g. train.epochs=2)")
    c.add_argument("--out", default="compare", metavar="DIR", help="output folder (default: ./compare)")
    add_common_arguments(c)
    add_deprecated_alias(c, "--k", "examples_per_class", type=int)
    c.set_defaults(handler=_compare)


def _report(args) -> int:
    from px_hub.analysis.report import report_ticket

    s = report_ticket(args.ticket, out_dir=args.out, data=args.data, samples=args.samples,
                      max_outputs=args.max_outputs, dense=not args.no_dense, update_card=not args.no_card)
    print(f"sparsity {s['sparsity']:.4f}: {s['kept']}/{s['total']} weights kept, "
          f"{s['alive_outputs']}/{s['outputs']} output units alive")
    from px_hub.masking import TicketHealth

    if s.get("health"):
        print(f"health: {TicketHealth.from_dict(s['health']).summary()}")
    for w in s["warnings"]:
        print(f"warning: collapsed layer {w}")
    ntk = s.get("ntk") or {}
    if ntk:
        t = ntk["ticket"]
        print(f"NTK ({t['samples']} samples x {len(t['outputs'])} outputs, {t['seconds']} s): "
              f"trace {t['trace']:.4g}, top eigenvalue {t['top_eigenvalue']:.4g}")
        if "ticket_vs_dense" in ntk:
            r = ntk["ticket_vs_dense"]
            print(f"vs dense: trace ratio {r['trace_ratio']:.4g}, "
                  f"top eigenvalue ratio {r['top_eigenvalue_ratio']:.4g}")
    print(s["dense_reference"])
    print(f"wrote {', '.join(sorted(s['written'].values()))}")
    if s["card_updated"]:
        print(f"card updated: {s['ticket']['path']}/README.md")
    return 0


def _compare(args) -> int:
    from px_hub.analysis.compare import run_compare

    s = run_compare(args.model, args.data, args.sparsity, args.methods.split(","), k=args.examples_per_class,
                    seed=args.seed, rounds=args.rounds, batch_size=args.batch_size, pretrained=not args.no_pretrained,
                    ntk_samples=args.samples, max_outputs=args.max_outputs, out_dir=args.out,
                    finetune=args.finetune, finetune_overrides=args.finetune_set, progress=not args.quiet)
    print(open(s["written"]["table"]).read())
    print(f"wrote {', '.join(sorted(s['written'].values()))}")
    return 0


