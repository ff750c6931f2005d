"""DeepLabV3+ (Chen et al., ECCV 2018) on a timm ``features_only`` ResNet-50, and the probe px-hub prunes it with.

Why an own implementation instead of segmentation-models-pytorch: no new dependency, and the backbone *is* a
timm model (``timm.create_model(name, features_only=True, output_stride=16)``), so every backbone px-hub can load
(timm / Hub ImageNet weights, MoCo v2, DINO ResNet-50 checkpoints through :mod:`px_hub.backbones`) plugs in by
``state_dict`` and its parameter names are timm's (``backbone.layer1.0.conv1.weight``).

What is pruned: only the backbone's Conv2d weights (``backbone.*``), as in the paper. The ASPP, the decoder and
the classifier stay dense: they start from random init on the segmentation data, so there is no pretrained
network whose ticket they could hold, and the paper's question is which *backbone* paths a downstream task needs.
They are not small: with 21 classes they hold 16.8 M of the 40.3 M parameters (mostly the ASPP's 3×3 atrous convs
on 2048 channels), so a "98 % sparse" DeepLab here means 98 % of the backbone, and the card says so.

How the backbone is scored: PX needs an N×C output. :class:`BackboneProbe` is the same backbone module followed
by global average pooling of its last feature map and a seeded linear probe (2048→C); C = the segmentation
classes, and for the data-using baselines (SNIP, GraSP) the image's label is its dominant foreground class. We
chose the probe over "mean of the segmentation logits" because PX's path kernel K would otherwise route every
path through the randomly initialised ASPP/decoder (whose squared random weights then weight the backbone paths),
and because 100 rounds on the probe cost a backbone pass, not a 513-px decoder pass. The probe head is excluded
from the prunable targets and discarded after pruning.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgumentError
from ..masking import PruneTargets

HEAD_MODULES = ("aspp", "low_proj", "decoder", "classifier")


def _cbr(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPPPooling(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = _cbr(cin, cout)

    def forward(self, x):
        y = self.proj(F.adaptive_avg_pool2d(x, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int = 256, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout)] + [_cbr(cin, cout, 3, r) for r in rates]
                                      + [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(_cbr(cout * (len(rates) + 2), cout), nn.Dropout(0.1))

    def forward(self, x):
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def _timm_backbone(name: str, output_stride: int):
    import timm

    if output_stride not in (8, 16):
        raise InvalidArgumentError(f"output_stride must be 8 or 16 (DeepLabV3+), got {output_stride}")
    try:
        return timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 4),
                                 output_stride=output_stride)
    except RuntimeError as e:
        raise InvalidArgumentError(f"timm cannot build {name!r} as a dilated feature backbone ({e}); use a ResNet "
                                   "such as resnet50") from None


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+: dilated backbone (output stride 16 or 8) → ASPP (rates 6/12/18 at OS 16, doubled at OS 8) →
    decoder joining the stride-4 features (1×1 → 48 channels) → 1×1 classifier → bilinear upsampling to the input.

    ``backbone_state``: weights of the same architecture as a classifier (a timm model's ``state_dict``; its
    head keys are ignored), e.g. ``load_backbone("timm/resnet50.tv_in1k").model.state_dict()``."""

    def __init__(self, num_classes: int = 21, backbone: str = "resnet50", output_stride: int = 16,
                 backbone_state: dict | None = None):
        super().__init__()
        self.backbone = _timm_backbone(backbone, output_stride)
        if backbone_state is not None:
            self.load_backbone_state(backbone_state)
        low_c, high_c = self.backbone.feature_info.channels()
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.num_classes = num_classes
        self.aspp = ASPP(high_c, 256, rates)
        self.low_proj = _cbr(low_c, 48)
        self.decoder = nn.Sequential(_cbr(256 + 48, 256, 3), _cbr(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        for m in [self.aspp, self.low_proj, self.decoder]:
            for mod in m.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def load_backbone_state(self, state: dict) -> None:
        own = self.backbone.state_dict()
        picked = {k: v for k, v in state.items() if k in own}
        missing = [k for k in own if k not in picked]
        if missing:
            raise InvalidArgumentError(f"backbone weights lack {len(missing)} tensor(s) (e.g. {missing[0]}); pass the "
                                       "state_dict of the same architecture as model.name")
        self.backbone.load_state_dict(picked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        a = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classifier(self.decoder(torch.cat([a, self.low_proj(low)], dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.split(".")[0] in HEAD_MODULES]

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    @staticmethod
    def prune_targets() -> PruneTargets:
        """Only the backbone's conv weights (what the paper prunes)."""
        return PruneTargets(exclude=HEAD_MODULES)


class BackboneProbe(nn.Module):
    """``backbone`` (shared with a :class:`DeepLabV3Plus`, same parameter names) → global average pool of the last
    feature map → seeded Linear probe. Give it to :func:`px_hub.prune` with ``targets=BackboneProbe.prune_targets()``:
    the mask it yields has ``backbone.*`` keys and fits the DeepLabV3+ model directly."""

    def __init__(self, backbone: nn.Module, num_classes: int, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()[-1]
        g = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(channels, num_classes)
        with torch.no_grad():  # nn.Linear's default init, drawn from a fixed generator
            bound = 1.0 / channels**0.5
            self.head.weight.uniform_(-bound, bound, generator=g)
            self.head.bias.uniform_(-bound, bound, generator=g)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.backbone(x)[-1], 1).flatten(1))

    @staticmethod
    def prune_targets() -> PruneTargets:
        return PruneTargets(exclude_classifier=True)
