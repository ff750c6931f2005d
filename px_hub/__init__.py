"""px-hub: lottery tickets for Hub vision backbones with PX (Path eXclusion, Iurada et al., CVPR 2024)."""
from . import _compat  # noqa: F401  (must run before anything imports torchvision)
from . import models  # noqa: F401  (registers cifar_resnet20, cifar_vgg16_bn, tinyimagenet_resnet18 in timm)
from .errors import PxHubError
from .masking import Mask, PruneTargets, TicketHealth, ticket_health
from .methods import available_methods, get_method, register_method
from .prune import PruneResult, prune, prune_with_record, score

__version__ = "0.1.0"

__all__ = ["Mask", "PruneTargets", "TicketHealth", "ticket_health", "PruneResult", "PxHubError", "score", "prune", "prune_with_record",
           "register_method", "get_method", "available_methods", "from_pretrained", "__version__"]


def from_pretrained(repo_or_path: str, **kwargs):
    """Load a published px-hub ticket (Hub repo id ``USER/REPO[@REV]`` or a local ticket folder) with its mask
    verified and enforced. See :func:`px_hub.hub.from_pretrained`."""
    from .hub import from_pretrained as _fp

    return _fp(repo_or_path, **kwargs)
