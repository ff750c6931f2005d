"""``px-hub push`` and ``px-hub pull``; plus the ``--push`` options that ``prune`` and ``finetune`` reuse
(``add_push_arguments`` / ``check_push`` / ``maybe_push``). The token comes from ``--token``, HF_TOKEN or
``hf auth login``; px-hub never writes or logs it."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("px_hub.cli")


def register(subparsers) -> None:
    from px_hub.cli.main import add_common_arguments

    p = subparsers.add_parser(
        "push", help="publish a ticket folder to the Hugging Face Hub (one commit)",
        usage="px-hub push [-h] [options] REPO_ID DIR  |  px-hub push [options] DIR [--repo-id REPO_ID]",
        description="Upload a ticket folder as one commit, in `hf upload` order (REPO_ID then DIR), or DIR with "
                    "--repo-id (default repo: your user / the folder name). The token comes from --token, HF_TOKEN "
                    "or `hf auth login`.")
    p.add_argument("targets", nargs="+", metavar="REPO_ID DIR",
                   help="the repo (USER/NAME) and the ticket folder written by `px-hub prune`; or just the folder")
    _add_repo_arguments(p)
    add_common_arguments(p)
    p.set_defaults(handler=_push, check=_check_push_command)

    q = subparsers.add_parser(
        "pull", help="download a published ticket and verify it",
        description="Download USER/REPO[@REV] into the Hub cache (the compact weights when present), verify the "
                    "weights against the mask's hash, and print the ticket folder (the cached snapshot, or --out "
                    "with the dense weights rebuilt). Works offline from the cache.")
    q.add_argument("repo", metavar="USER/REPO[@REV]", help="the ticket on the Hub, at a branch, tag or commit")
    q.add_argument("--out", metavar="DIR", default=None,
                   help="also write a complete copy of the ticket here (default: none, it stays in the Hub cache)")
    q.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    q.add_argument("--token", default=None, metavar="TOKEN",
                   help="Hugging Face token for a private repo (default: HF_TOKEN or `hf auth login`)")
    add_common_arguments(q)
    q.set_defaults(handler=_pull)


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """``--push [--repo-id ID] [--private] [--revision BRANCH] [--token T] [--commit-message M]``."""
    parser.add_argument("--push", action="store_true", help="publish the ticket to the Hub when done (one commit)")
    _add_repo_arguments(parser)


def _add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo-id", metavar="ID", default=None,
                        help="target repo USER/NAME (default: your user / the folder name)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="branch to commit to, created from main if missing (default: main)")
    parser.add_argument("--token", default=None, metavar="TOKEN",
                        help="Hugging Face token with write access (default: HF_TOKEN or `hf auth login`); "
                             "never written or logged")
    parser.add_argument("--commit-message", default=None, metavar="TEXT",
                        help="commit message (default: 'Upload px-hub ticket (FOLDER)')")


def check_push(args: argparse.Namespace) -> None:
    """Before any work: a command run with --push must be able to push (valid repo id, Hub reachable in principle,
    a token). Without --push, the repo options are pointless: say so."""
    if not getattr(args, "push", False):
        if any(getattr(args, k, None) for k in ("repo_id", "private", "revision", "token", "commit_message")):
            log.warning("--repo-id/--private/--revision/--token/--commit-message have no effect without --push")
        return
    _check_can_push(args)


def _check_can_push(args: argparse.Namespace) -> None:
    from px_hub.errors import HubError

    _check_repo_id(args)
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise HubError("--push needs the Hub but HF_HUB_OFFLINE is set; unset it, or drop --push and run "
                       "`px-hub push` later")
    if not (args.token or _stored_token()):  # get_token: HF_TOKEN, then `hf auth login`
        raise HubError("--push needs a Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token")


def _check_repo_id(args: argparse.Namespace) -> None:
    from px_hub.errors import InvalidArgumentError

    if args.repo_id is not None:
        name = args.repo_id
        parts = name.split("/")
        if len(parts) != 2 or not all(parts) or any(c.isspace() for c in name):
            raise InvalidArgumentError(f"--repo-id {name!r} is not a repo id; use USER/NAME")


def _stored_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def maybe_push(args: argparse.Namespace, folder: str | Path) -> str | None:
    """Push ``folder`` if ``args.push``; returns the commit URL (printed) or None. Raises HubError on failure;
    the local ticket is left as it was."""
    if not getattr(args, "push", False):
        return None
    from px_hub.hub import push_ticket

    url = push_ticket(folder, repo_id=args.repo_id, private=args.private, revision=args.revision, token=args.token,
                      commit_message=args.commit_message)
    print(f"pushed {folder} -> {url}")
    return url


def _push_target(args: argparse.Namespace) -> tuple[str | None, str]:
    """(repo id, folder) from ``REPO_ID DIR`` (hf upload order) or ``DIR [--repo-id ID]``."""
    from px_hub.errors import InvalidArgumentError

    t = args.targets
    if len(t) == 2:
        repo_id, folder = t
        if args.repo_id and args.repo_id != repo_id:
            raise InvalidArgumentError(f"two repo ids: {repo_id} and --repo-id {args.repo_id}; give one")
        if Path(repo_id).is_dir() and not Path(folder).is_dir():
            raise InvalidArgumentError(f"the order is `px-hub push REPO_ID DIR` (as `hf upload`); "
                                       f"try: px-hub push {folder} {repo_id}")
        return repo_id, folder
    if len(t) == 1:
        return args.repo_id, t[0]
    raise InvalidArgumentError("push takes REPO_ID DIR (or DIR --repo-id REPO_ID); got "
                               f"{len(t)} positional arguments")


def _check_push_command(args: argparse.Namespace) -> None:
    from px_hub.hub import verify_ticket
    from px_hub.hub.format import require_ticket_folder

    args.repo_id, args.folder = _push_target(args)
    _check_repo_id(args)
    # a damaged or edited ticket is the first thing to hear about
    verify_ticket(require_ticket_folder(args.folder), every_file=True)
    _check_can_push(args)


def _push(args: argparse.Namespace) -> int:
    from px_hub.hub import push_ticket

    url = push_ticket(args.folder, repo_id=args.repo_id, private=args.private, revision=args.revision,
                      token=args.token, commit_message=args.commit_message)
    print(url)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from px_hub.hub import pull_ticket
    from px_hub.hub.format import MASK_FILE, PX_CONFIG_FILE, read_json
    from px_hub.masking import Mask

    folder = pull_ticket(args.repo, out_dir=args.out, overwrite=args.overwrite, token=args.token)
    # pull_ticket verified px_config.json against the mask; the figures printed come from the mask itself
    cfg = read_json(folder / PX_CONFIG_FILE) if (folder / PX_CONFIG_FILE).exists() else {}
    mask = Mask.load(folder / MASK_FILE)
    log.info("verified: %d/%d weights kept (sparsity %.4f, method %s)", mask.kept(), mask.total(), mask.sparsity(),
             cfg.get("method", "?"))
    print(folder)
    return 0
