"""Publish a ticket folder in one Hub commit, and pull a published ticket back with its weights verified.

The token is whatever ``huggingface_hub`` finds (``token=``, ``HF_TOKEN``, ``hf auth login``); px-hub never
writes it anywhere and scrubs it from every error message it raises."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from torch import nn

from .._fs import build_atomically, check_output
from ..errors import HubError, IntegrityError, InvalidArgumentError, PxHubError, WeightsUnavailableError
from ..masking import Mask
from . import format as fmt
from .layouts import to_file_names
from .ticket import read_ticket, verify_ticket

TICKET_FILES_DOWNLOAD_IGNORE = [fmt.WEIGHTS_FILE]  # the dense file is rebuilt from the compact copy + mask


# -- push -------------------------------------------------------------------------------------------------------

def push_ticket(
    folder: str | os.PathLike,
    repo_id: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload a ticket folder as ONE commit (``HfApi.create_commit``; not ``upload_folder``, which may split a
    large folder into several commits when hf_xet is installed) and return the commit URL.

    The ticket is verified before anything is sent. ``repo_id`` defaults to ``<your user>/<folder name>``;
    ``revision`` is a branch, created from main if missing. The card is re-rendered with the repo id (so its usage
    snippet works) in a staging copy; the local folder is updated with that card only after the commit succeeded.
    A failure raises HubError naming the cause; nothing partial becomes visible on the Hub (the commit is atomic)."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    folder = fmt.require_ticket_folder(folder)
    # never publish a ticket whose files disagree: both weight files, the mask, px_config.json, config.json
    verify_ticket(folder, every_file=True, remedy="nothing was pushed; re-create the ticket (px-hub prune) or "
                                                  "pull a good copy")
    if constants.is_offline_mode():
        raise HubError(f"cannot push with HF_HUB_OFFLINE=1; unset it and push again (the local ticket at {folder} "
                       "is intact)")
    token = token or get_token()
    if not token:
        raise HubError(
            f"no Hugging Face token found: set HF_TOKEN or run `hf auth login`, then push again "
            f"(the local ticket at {folder} is intact)"
        )
    if repo_id is not None:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as e:
            raise InvalidArgumentError(f"--repo-id {repo_id!r} is not a valid repo id ({e}); use USER/NAME") from None
        if "/" not in repo_id:
            raise InvalidArgumentError(f"--repo-id {repo_id!r} needs a namespace; use USER/{repo_id}")
    api = HfApi(token=token)
    with _hub_errors("push", repo_id or folder.name, token, folder):
        if repo_id is None:
            repo_id = f"{api.whoami()['name']}/{_repo_name(folder.name)}"
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".px-push-", dir=folder.parent) as staging:
            staging = Path(staging)
            _stage(folder, staging, repo_id)
            ops = [CommitOperationAdd(path_in_repo=p.relative_to(staging).as_posix(), path_or_fileobj=str(p))
                   for p in sorted(staging.rglob("*")) if p.is_file()]
            info = api.create_commit(
                repo_id, ops, revision=revision,
                commit_message=commit_message or f"Upload px-hub ticket ({folder.name})",
            )
            for name in (fmt.CARD_FILE, fmt.PX_CONFIG_FILE, fmt.DENSITY_PLOT_FILE):
                if (staging / name).exists():
                    os.replace(staging / name, folder / name)
    return str(info.commit_url)


def _stage(folder: Path, staging: Path, repo_id: str) -> None:
    """A copy of ``folder`` (hard links where possible) whose card names ``repo_id``; every rewrite replaces a
    file (never writes through a link), so the original stays untouched."""
    from .card import render_card

    for src in folder.rglob("*"):
        rel = src.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        dst = staging / rel
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    cfg = fmt.read_json(staging / fmt.PX_CONFIG_FILE) if (staging / fmt.PX_CONFIG_FILE).exists() else {}
    cfg.setdefault("ticket", {})["repo_id"] = repo_id
    fmt.write_json(staging / fmt.PX_CONFIG_FILE, cfg)
    render_card(staging, repo_id=repo_id)


# -- pull -------------------------------------------------------------------------------------------------------

def pull_ticket(repo_id_at_rev: str, out_dir: str | os.PathLike | None = None, *, overwrite: bool = False,
                token: str | None = None) -> Path:
    """Download a published ticket (``USER/REPO`` or ``USER/REPO@REVISION``) into the standard Hub cache
    (``snapshot_download``; the compact weights when present, not the dense file), verify it there (mask checksum,
    weights hash, exact zeros, the mask fits the architecture) and return its folder: the cached snapshot, or
    ``out_dir`` when given, a complete copy with the dense ``model.safetensors`` rebuilt. Works from the cache with
    ``HF_HUB_OFFLINE=1`` once pulled."""
    if out_dir is not None:  # before any download: --out must be a folder px-hub may write (and replace)
        check_output(Path(out_dir), overwrite)
    snap, where = download_ticket(repo_id_at_rev, token=token)
    model, mask, _ = read_snapshot(snap, where)
    if out_dir is None:
        return snap
    out = Path(out_dir)
    tensors = fmt.masked_state_dict(model, mask)
    meta = Mask.load_with_metadata(snap / fmt.MASK_FILE)[1]

    def build(tmp: Path) -> None:
        for src in snap.rglob("*"):
            if src.is_file():
                dst = tmp / src.relative_to(snap)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src.resolve(), dst)  # cache entries are symlinks into blobs/
        if not (tmp / fmt.WEIGHTS_FILE).exists():  # in the ticket's layout (transformers: save_pretrained names)
            fmt.save_weights(to_file_names(tensors, meta), tmp / fmt.WEIGHTS_FILE)
        verify_ticket(tmp, where=str(out))

    build_atomically(out, build, replace=overwrite)
    return out


PULL_REMEDY = ("the cached download was removed: pull again; if it fails the same way, the published ticket "
               "itself is damaged and its owner must push it again")


def download_ticket(repo_id_at_rev: str, *, revision: str | None = None, token: str | None = None,
                    **download_kwargs) -> tuple[Path, str]:
    """Download a ticket into the standard Hub cache and return ``(snapshot folder, "REPO@REV (commit C)")``.
    The dense ``model.safetensors`` is skipped when the compact copy exists (it is rebuilt from compact + mask).
    ``download_kwargs`` go to ``snapshot_download`` (``cache_dir``, ``force_download``, ``local_files_only``)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    repo_id, at_rev = parse_repo_ref(repo_id_at_rev)
    if revision and at_rev and revision != at_rev:
        raise InvalidArgumentError(f"{repo_id_at_rev!r} names revision {at_rev!r} but revision={revision!r} was "
                                   "given; give the revision once")
    revision = revision or at_rev
    with _hub_errors("pull", repo_id_at_rev, token, None):
        snap = Path(snapshot_download(repo_id, revision=revision, ignore_patterns=TICKET_FILES_DOWNLOAD_IGNORE,
                                      token=token, **download_kwargs))
        if not (snap / fmt.COMPACT_FILE).is_file():  # a ticket without the compact copy: take the dense file
            hf_hub_download(repo_id, fmt.WEIGHTS_FILE, revision=snap.name, token=token,
                            **{k: v for k, v in download_kwargs.items() if k != "allow_patterns"})
    return snap, f"{repo_id}@{revision or 'main'} (commit {snap.name[:12]})"


def read_snapshot(snap: Path, where: str) -> tuple[nn.Module, Mask, dict]:
    """:func:`ticket.read_ticket` of a downloaded ticket in the Hub cache: ``(model in eval mode, mask,
    px_config)``, verified. A ticket that fails is evicted from the cache (so the next pull fetches it again) and
    raises one line naming the repo and revision."""
    try:
        fmt.require_ticket_folder(snap)
        return read_ticket(snap, where=where, remedy=PULL_REMEDY)
    except PxHubError as e:
        _evict_snapshot(snap)
        if isinstance(e, IntegrityError) and str(e).startswith(where):
            raise
        text = str(e).replace(f"{snap}/", "").replace(str(snap), "the ticket")
        raise type(e)(f"{where}: {text}; {PULL_REMEDY}") from None


def _evict_snapshot(snap: Path) -> None:
    for link in snap.rglob("*"):
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            target.unlink(missing_ok=True)
    shutil.rmtree(snap, ignore_errors=True)


def parse_repo_ref(ref: str) -> tuple[str, str | None]:
    """``USER/REPO[@REV]`` (also ``hf-hub:`` prefixed) → (repo_id, revision or None)."""
    ref = str(ref).removeprefix("hf-hub:")
    repo_id, _, rev = ref.partition("@")
    if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id):
        raise InvalidArgumentError(f"{ref!r} is not a Hub ticket id; use USER/REPO or USER/REPO@REVISION")
    return repo_id, rev or None


# -- errors -----------------------------------------------------------------------------------------------------

class _hub_errors:
    """Turn huggingface_hub / network failures into one-line HubError messages that name the cause and never
    contain the token."""

    def __init__(self, action: str, what: str, token: str | None, folder: Path | None):
        self.action, self.what, self.token, self.folder = action, what, token, folder

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (HubError, KeyboardInterrupt)) or not isinstance(exc, Exception):
            return False
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        from ..errors import PxHubError

        if isinstance(exc, PxHubError):
            return False
        kept = f"; the local ticket at {self.folder} is intact and nothing was committed" if self.folder else ""
        if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and self.action == "pull":
            raise WeightsUnavailableError(
                f"{self.what} is not in the local cache and the Hub cannot be reached (HF_HUB_OFFLINE="
                f"{os.environ.get('HF_HUB_OFFLINE', '0')}); pull it once online"
            ) from None
        http = exc
        while http is not None and not isinstance(http, HfHubHTTPError):  # e.g. RuntimeError from an LFS upload
            http = http.__cause__ or http.__context__
        if isinstance(exc, RevisionNotFoundError):
            msg = f"revision not found for {self.what}; check the @REVISION (a branch, tag or commit)"
        elif isinstance(exc, RepositoryNotFoundError):
            msg = (f"{self.what} not found (or private and your token cannot read it); check the id and that "
                   "HF_TOKEN / `hf auth login` is set")
        elif http is not None:
            status = http.response.status_code if http.response is not None else None
            server = (http.server_message or "").strip().splitlines()
            reason = server[0] if server else str(http).strip().splitlines()[0]
            if status == 401:
                reason = "the token was rejected (401); set a valid HF_TOKEN or run `hf auth login`"
            elif status == 403:
                reason = f"forbidden (403): {reason}; check the token's write access to this repo"
            where = f" while {str(exc).strip().splitlines()[0][:120]}" if http is not exc and str(exc).strip() else ""
            msg = f"the Hub answered {status}: {reason}{where}"
        else:
            text = str(exc).strip().splitlines()
            msg = f"{type(exc).__name__}: {text[0] if text else 'no details'}"
        raise HubError(_scrub(f"{self.action} {self.what} failed: {msg}{kept}", self.token)) from None


def _scrub(text: str, token: str | None) -> str:
    text = text.replace("\n", " ")
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)


def _repo_name(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "-", name).strip("-.") or "px-ticket"
