"""``px-hub push DIR`` and ``px-hub pull USER/REPO[@REV]``; plus the ``--push`` options the ``prune`` command reuses
(``add_push_arguments`` / ``maybe_push``). The token comes from HF_TOKEN or ``hf auth login``; there is no
``--token`` flag so it never lands in shell history or process listings."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "push", help="publish a ticket folder to the Hugging Face Hub (one commit)",
        description="Upload a ticket folder as one commit. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("folder", metavar="DIR", help="ticket folder written by `px-hub prune`")
    _add_repo_arguments(p)
    p.set_defaults(handler=_push)

    q = subparsers.add_parser(
        "pull", help="download a published ticket and verify it",
        description="Download USER/REPO[@REV] (the compact weights when present), rebuild and verify the dense "
                    "weights against the mask's hash, and print the ticket folder. Works offline from the cache.",
    )
    q.add_argument("repo", metavar="USER/REPO[@REV]")
    q.add_argument("--out", metavar="DIR", default=None,
                   help="where to write the ticket (default: $HF_HOME/px-hub/tickets/USER--REPO/COMMIT)")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    q.set_defaults(handler=_pull)


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """``--push [--repo-id ID] [--private] [--revision BRANCH]`` for commands that write a ticket."""
    parser.add_argument("--push", action="store_true", help="publish the ticket to the Hub when done (one commit)")
    _add_repo_arguments(parser)


def maybe_push(args: argparse.Namespace, folder: str | Path) -> str | None:
    """Push ``folder`` if ``args.push``; returns the commit URL (printed) or None. Raises HubError on failure;
    the local ticket is left as it was."""
    if not getattr(args, "push", False):
        if getattr(args, "repo_id", None) or getattr(args, "private", False) or getattr(args, "revision", None):
            print("px-hub: --repo-id/--private/--revision have no effect without --push", file=sys.stderr)
        return None
    from px_hub.hub import push_ticket

    url = push_ticket(folder, repo_id=args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {folder} -> {url}")
    return url


def _add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo-id", metavar="ID", default=None,
                        help="target repo USER/NAME (default: your user / the folder name)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="branch to commit to (created from main if missing; default main)")


def _push(args: argparse.Namespace) -> int:
    from px_hub.hub import push_ticket

    url = push_ticket(args.folder, repo_id=args.repo_id, private=args.private, revision=args.revision)
    print(url)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from px_hub.hub import pull_ticket
    from px_hub.hub.format import MASK_FILE, PX_CONFIG_FILE, read_json
    from px_hub.masking import Mask

    folder = pull_ticket(args.repo, out_dir=args.out, overwrite=args.overwrite)
    # pull_ticket verified px_config.json against the mask; the figures printed come from the mask itself
    cfg = read_json(folder / PX_CONFIG_FILE) if (folder / PX_CONFIG_FILE).exists() else {}
    mask = Mask.load(folder / MASK_FILE)
    print(f"verified: {mask.kept()}/{mask.total()} weights kept "
          f"(sparsity {mask.sparsity():.4f}, method {cfg.get('method', '?')})", file=sys.stderr)
    print(folder)
    return 0
