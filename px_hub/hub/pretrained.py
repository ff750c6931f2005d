"""``px_hub.Ticket``: a ticket as one object, shaped like huggingface_hub's ``ModelHubMixin`` (``from_pretrained``,
``save_pretrained``, ``push_to_hub``), and ``px_hub.from_pretrained``, which gives a model ready to fine-tune with
its mask enforced.

A Ticket reads and writes the one ticket format (:mod:`px_hub.hub.format`) through the functions that already do
it: :func:`ticket.read_ticket` / :func:`ticket.verify_ticket` to load, :func:`ticket.save_ticket` to write (same
safe-overwrite rules), :func:`remote.push_ticket` to publish (one commit). Downloads stay in the standard Hub
cache (``snapshot_download``): a pulled ticket is read where huggingface_hub stored it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from ..errors import InvalidArgumentError
from ..masking import Mask
from . import format as fmt
from .remote import download_ticket, push_ticket, read_snapshot
from .ticket import data_config_of, read_ticket, save_ticket, update_ticket


class Ticket:
    """A PX lottery ticket: ``model`` (pruned weights are exact zeros), ``mask`` (:class:`px_hub.Mask`), ``spec``
    (the :class:`px_hub.PruneSpec` that made the mask; None for a record without a method), ``px_config`` (the
    record in ``px_config.json``), ``data_config`` (preprocessing, timm keys) and ``results`` (``results.json``:
    eval results and training summary, after fine-tuning).

    ``folder`` is where it was read from (a local folder or the Hub cache snapshot), ``repo_id`` / ``commit`` the
    Hub repo and commit it came from (None for a local folder or a Ticket built in memory).

    To fine-tune with the mask kept: ``enforcer = ticket.mask.enforce(ticket.model)`` (gradients of pruned weights
    are zeroed; call ``enforcer.after_step()`` after each optimizer step), or use :func:`px_hub.from_pretrained`.
    """

    def __init__(self, model: nn.Module, mask: Mask, px_config: dict | None = None, *,
                 data_config: dict | None = None, results: dict | None = None):
        from ..spec import PruneSpec

        mask = mask if isinstance(mask, Mask) else Mask(mask)
        mask.validate(model)
        self.model, self.mask = model, mask
        self.px_config = dict(px_config or {})
        self.spec = PruneSpec.from_px_config(self.px_config)
        self.data_config = dict(data_config or {})
        self.results = dict(results or {})
        self.folder: Path | None = None
        self.repo_id: str | None = None
        self.commit: str | None = None

    def __repr__(self) -> str:
        where = f"{self.repo_id}@{self.commit[:12]}" if self.repo_id and self.commit else (self.folder or "memory")
        method = self.spec.method if self.spec is not None else "?"
        return (f"Ticket({type(self.model).__name__}, sparsity={self.mask.sparsity():.4f}, method={method}, "
                f"from={where})")

    # -- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        token: str | None = None, cache_dir: str | os.PathLike | None = None,
                        force_download: bool = False, local_files_only: bool = False) -> Ticket:
        """Load a ticket from a local folder or a Hub repo (``USER/REPO``, ``USER/REPO@REV`` or ``revision=``: a
        branch, tag or commit), verified before anything is returned: the mask's checksum, the weights against
        the mask's ``weights_sha256``, exact zeros at every pruned position, ``px_config.json`` against the seal
        in the mask file, and the mask against the architecture. Hub downloads go to the standard Hub cache
        (``cache_dir``, ``force_download``, ``local_files_only`` as in ``snapshot_download``); with
        ``HF_HUB_OFFLINE=1`` a cached ticket loads without the network. A ticket that fails verification raises
        :class:`px_hub.errors.IntegrityError` (a downloaded one is also dropped from the cache)."""
        path = Path(os.path.expanduser(str(pretrained_model_name_or_path)))
        if path.is_dir():
            if revision is not None:
                raise InvalidArgumentError(f"{path} is a local folder; revision={revision!r} is for Hub repos only")
            folder = fmt.require_ticket_folder(path)
            model, mask, px_config = read_ticket(folder)
            ticket = cls._from_folder(folder, model, mask, px_config)
        else:
            kwargs = {"cache_dir": cache_dir, "force_download": force_download, "local_files_only": local_files_only}
            folder, where = download_ticket(str(pretrained_model_name_or_path), revision=revision, token=token,
                                            **kwargs)
            model, mask, px_config = read_snapshot(folder, where)
            ticket = cls._from_folder(folder, model, mask, px_config)
            ticket.repo_id, ticket.commit = where.split("@", 1)[0], folder.name
        return ticket

    @classmethod
    def _from_folder(cls, folder: Path, model: nn.Module, mask: Mask, px_config: dict) -> Ticket:
        results = fmt.read_json(folder / fmt.RESULTS_FILE) if (folder / fmt.RESULTS_FILE).exists() else {}
        ticket = cls(model, mask, px_config, data_config=data_config_of(folder, model), results=results)
        ticket.folder = folder
        return ticket

    # -- writing ------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False,
                        push_to_hub: bool = False, repo_id: str | None = None, **push_to_hub_kwargs) -> Path:
        """Write the ticket folder (:func:`px_hub.hub.save_ticket`: built aside and renamed into place; an
        existing folder is replaced only with ``overwrite=True`` and only if it holds a ticket). The current
        ``model`` weights are written with the mask applied (exact zeros); ``px_config``, preprocessing and
        ``results`` (eval results, training summary) are kept; other files of the folder it was read from (plots,
        recipes) are not copied. With ``push_to_hub=True`` the folder is then pushed to ``repo_id`` (default: the
        folder name under your user) with :meth:`push_to_hub`'s keyword arguments. Returns the folder."""
        out = save_ticket(save_directory, self.model, self.mask, self.px_config, data_config=self.data_config,
                          eval_results=self.results.get("eval_results") or None, overwrite=overwrite)
        if self.results.get("training"):
            update_ticket(out, training=self.results["training"])
        if push_to_hub:
            push_ticket(out, repo_id, **_push_kwargs(**push_to_hub_kwargs))
        return out

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool = False,
                    token: str | None = None, branch: str | None = None) -> str:
        """Publish the ticket to ``repo_id`` as ONE commit (:func:`px_hub.hub.push_ticket`: verified first, the
        card names the repo; ``branch`` is created from main if missing) and return the commit URL. The folder is
        written to a temporary directory first (:meth:`save_pretrained`)."""
        with tempfile.TemporaryDirectory(prefix="px-hub-push-") as tmp:
            folder = self.save_pretrained(Path(tmp) / str(repo_id).split("/")[-1])
            return push_ticket(folder, repo_id, **_push_kwargs(commit_message=commit_message, private=private,
                                                               token=token, branch=branch))


def _push_kwargs(commit_message: str | None = None, private: bool = False, token: str | None = None,
                 branch: str | None = None) -> dict:
    return {"commit_message": commit_message, "private": private, "token": token, "revision": branch}


def from_pretrained(pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                    token: str | None = None, **kwargs) -> nn.Module:
    """The model of a ticket (a local folder or ``USER/REPO[@REV]``), verified like
    :meth:`Ticket.from_pretrained`, **with its mask enforced while training**: a gradient hook on every masked
    parameter zeroes the gradients of pruned weights, so optimizers (SGD with momentum and weight decay, Adam,
    AdamW) leave them at exactly zero. The model is returned in eval mode (call ``model.train()`` to fine-tune).

    ``model.px_ticket`` is the :class:`Ticket` (mask, spec, px_config, preprocessing) and
    ``model.px_mask_enforcer`` the hook handle: ``.after_step()`` re-zeroes the pruned weights after a step that
    wrote weights directly (e.g. an optimizer with its own parameter copy), ``.remove()`` detaches the hooks.
    Another module built from these weights (a copy, a state dict loaded elsewhere) is not enforced: call
    ``ticket.mask.enforce(that_model)`` there."""
    ticket = Ticket.from_pretrained(pretrained_model_name_or_path, revision=revision, token=token, **kwargs)
    model = ticket.model
    model.px_ticket = ticket
    model.px_mask_enforcer = ticket.mask.enforce(model)
    return model
