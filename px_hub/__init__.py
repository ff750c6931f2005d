"""px-hub: lottery tickets for Hub vision backbones with PX (Path eXclusion, Iurada et al., CVPR 2024).

``import px_hub`` loads the public API (and registers the paper's models in timm). The ``px-hub`` command starts
without it (``px-hub --help`` and argument errors must not wait for torch): the console script imports this
package in lazy mode and calls :func:`_load` once the arguments are known to be valid; any public name touched
before that loads it too.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

__all__ = ["Mask", "PruneTargets", "TicketHealth", "ticket_health", "PruneResult", "PruneSpec", "PxHubError", "score",
           "prune", "prune_with_record",
           "register_method", "get_method", "available_methods", "list_methods", "Ticket", "from_pretrained",
           "__version__"]


def _load() -> None:
    """Import the public API (idempotent)."""
    from . import (
        _compat,  # noqa: F401  (must run before anything imports torchvision)
        models,  # noqa: F401  (registers cifar_resnet20, cifar_vgg16_bn, tinyimagenet_resnet18 in timm)
    )
    from .errors import PxHubError
    from .hub.pretrained import Ticket
    from .masking import Mask, PruneTargets, TicketHealth, ticket_health
    from .methods import available_methods, get_method, list_methods, register_method
    from .prune import PruneResult, prune, prune_with_record, score
    from .spec import PruneSpec

    globals().update(PxHubError=PxHubError, Mask=Mask, PruneTargets=PruneTargets, TicketHealth=TicketHealth,
                     ticket_health=ticket_health,
                     available_methods=available_methods, get_method=get_method, list_methods=list_methods,
                     register_method=register_method, PruneResult=PruneResult, prune=prune,
                     prune_with_record=prune_with_record, score=score, PruneSpec=PruneSpec, Ticket=Ticket)


def from_pretrained(pretrained_model_name_or_path, *, revision=None, token=None, **kwargs):
    """A ticket's model (local folder or Hub ``USER/REPO[@REV]``), verified, in eval mode, **with its mask enforced
    while training** (gradient hooks keep pruned weights at exact zero); ``model.px_ticket`` is the
    :class:`Ticket` (mask, spec, px_config). For the Ticket itself: ``px_hub.Ticket.from_pretrained``.
    See :func:`px_hub.hub.pretrained.from_pretrained`."""
    from .hub.pretrained import from_pretrained as _fp

    return _fp(pretrained_model_name_or_path, revision=revision, token=token, **kwargs)


def __getattr__(name: str):
    if name in __all__:
        _load()
        return globals()[name]
    raise AttributeError(f"module 'px_hub' has no attribute {name!r}")


if _os.path.basename(_sys.argv[0] if _sys.argv else "") != "px-hub":  # not the console script: load now
    _load()
