"""Fine-tuning of tickets on accelerate: declarative recipes (``recipes/*.yaml``), one training loop for
classification and segmentation (DeepLabV3+), metrics through px-hub's shipped ``evaluate`` modules, results
written into the ticket.

    from px_hub.finetune import load_recipe, finetune
    result = finetune(load_recipe("cifar10_resnet20", ["train.epochs=2"]), ticket="px-ticket")

From the shell: ``px-hub finetune --recipe cifar10_resnet20 --ticket px-ticket train.epochs=2`` or, on several
processes, ``accelerate launch -m px_hub.finetune --recipe cifar10_resnet20 --ticket px-ticket``.
"""
from .deeplab import BackboneProbe, DeepLabV3Plus
from .recipe import (
                     AugmentHP,
                     DataHP,
                     ModelHP,
                     OptimHP,
                     PruneHP,
                     Recipe,
                     TrainHP,
                     available_recipes,
                     load_recipe,
                     recipe_from_dict,
)
from .trainer import FinetuneResult, finetune, latest_checkpoint, lr_at_epoch, prune_for_recipe

__all__ = ["Recipe", "DataHP", "ModelHP", "OptimHP", "TrainHP", "AugmentHP", "PruneHP", "load_recipe",
           "recipe_from_dict", "available_recipes", "finetune", "FinetuneResult", "latest_checkpoint",
           "lr_at_epoch", "prune_for_recipe", "DeepLabV3Plus", "BackboneProbe"]
