"""Backbone loaders behind one front door, :func:`load_backbone` (see :mod:`px_hub.backbones.registry`)."""
# importing the loader modules registers them
from . import builtin, local, open_clip_loader, ssl, timm_loader, transformers_loader  # noqa: F401
from ._common import HEAD_INIT
from .builtin import map_efficientnet_lite_keys
from .local import is_ticket_folder
from .open_clip_loader import ClipImageClassifier
from .registry import LoadedModel, available_loaders, load_backbone, register_loader
from .ssl import remap_ssl_resnet50, remap_ssl_vit

__all__ = ["LoadedModel", "load_backbone", "register_loader", "available_loaders", "HEAD_INIT",
           "ClipImageClassifier", "map_efficientnet_lite_keys", "remap_ssl_resnet50", "remap_ssl_vit",
           "is_ticket_folder"]
