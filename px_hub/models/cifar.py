"""The paper's small models, registered in timm (``timm.create_model("cifar_resnet20", num_classes=10)`` once
``px_hub`` is imported). Parameter order and shapes follow the official PX code's layouts, so its checkpoints and
px-hub's reference fixtures load by order. Written from the architecture descriptions in px-spec.md."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models._registry import generate_default_cfgs
from torch import nn

from ..errors import InvalidArgumentError


class ChannelScale(nn.Module):
    """Identity shortcut with a per-channel scale initialised to 1 (the official ``Identity2d``: it carries a
    ``weight`` of shape (C, 1, 1) that is trained but never pruned)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class _TimmHeadMixin:
    """The parts of timm's classifier interface px-hub and timm's helpers rely on."""

    fc: nn.Linear
    num_features: int

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _kaiming_init(model: nn.Module, mode: str = "fan_in", linear: bool = True) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d) or (linear and isinstance(m, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu" if mode == "fan_out" else "leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- ResNet-20 (CIFAR, "lottery" layout) ----------------------------------------------------------------------
class _ShortcutConv(nn.Module):
    def __init__(self, f_in: int, f_out: int):
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel_size=1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x):
        return self.bn(self.conv(x))


class CifarBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = _ShortcutConv(f_in, f_out) if downsample or f_in != f_out else ChannelScale(f_in)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(_TimmHeadMixin, nn.Module):
    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_chans: int = 3, **_):
        super().__init__()
        if (depth - 2) % 6:
            raise InvalidArgumentError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        d = (depth - 2) // 6
        plan = [(width, d), (2 * width, d), (4 * width, d)]
        self.num_classes = num_classes
        self.conv = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, cur = [], width
        for seg, (filters, n) in enumerate(plan):
            for i in range(n):
                blocks.append(CifarBlock(cur, filters, downsample=seg > 0 and i == 0))
                cur = filters
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cur
        self.fc = nn.Linear(cur, num_classes)
        _kaiming_init(self)

    def forward_features(self, x):
        return self.blocks(F.relu(self.bn(self.conv(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = F.avg_pool2d(x, x.shape[-1]).flatten(1)  # the official op (bitwise-equal results matter, see tests)
        return x if pre_logits else self.fc(x)


# --- VGG-16-bn (CIFAR) -----------------------------------------------------------------------------------------
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class ConvBN(nn.Module):
    def __init__(self, f_in: int, f_out: int):
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, 3, padding=1)  # with bias, as the official layout
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CifarVGG(_TimmHeadMixin, nn.Module):
    def __init__(self, plan=VGG16_PLAN, num_classes: int = 100, in_chans: int = 3, **_):
        super().__init__()
        mods, f = [], in_chans
        for spec in plan:
            if spec == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods.append(ConvBN(f, spec))
                f = spec
        self.layers = nn.Sequential(*mods)
        self.num_classes = num_classes
        self.num_features = f
        self.fc = nn.Linear(f, num_classes)
        for m in self.modules():  # Kaiming-normal (fan_in) weights, default bias init, BN 1/0
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x):
        return self.layers(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = F.avg_pool2d(x, 2).flatten(1)
        return x if pre_logits else self.fc(x)


# --- ResNet-18 (Tiny-ImageNet, 64 px) --------------------------------------------------------------------------
class TinyBasicBlock(nn.Module):
    def __init__(self, f_in: int, f_out: int, stride: int):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(f_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(f_out, f_out, 3, padding=1, bias=False), nn.BatchNorm2d(f_out))
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out))
        else:
            self.shortcut = ChannelScale(f_in)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.residual_function(x) + self.shortcut(x))


class TinyImageNetResNet18(_TimmHeadMixin, nn.Module):
    def __init__(self, num_classes: int = 200, in_chans: int = 3, **_):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                                   nn.ReLU(inplace=True))
        stages, f = [], 64
        for i, w in enumerate((64, 128, 256, 512)):
            s = 1 if i == 0 else 2
            stages.append(nn.Sequential(TinyBasicBlock(f, w, s), TinyBasicBlock(w, w, 1)))
            f = w
        self.conv2_x, self.conv3_x, self.conv4_x, self.conv5_x = stages
        self.num_classes = num_classes
        self.num_features = f
        self.fc = nn.Linear(f, num_classes)
        _kaiming_init(self, mode="fan_out", linear=False)

    def forward_features(self, x):
        x = self.conv1(x)
        return self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(x))))

    def forward_head(self, x, pre_logits: bool = False):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)


def _cfg(size: int, num_classes: int, mean, std, **kw):
    return {"num_classes": num_classes, "input_size": (3, size, size), "pool_size": None, "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": mean, "std": std, "first_conv": kw.pop("first_conv"),
            "classifier": "fc", "license": "apache-2.0", **kw}


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
TINY_MEAN, TINY_STD = (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)

default_cfgs = generate_default_cfgs({
    "cifar_resnet20": _cfg(32, 10, CIFAR10_MEAN, CIFAR10_STD, first_conv="conv"),
    "cifar_vgg16_bn": _cfg(32, 100, CIFAR100_MEAN, CIFAR100_STD, first_conv="layers.0.conv"),
    "tinyimagenet_resnet18": _cfg(64, 200, TINY_MEAN, TINY_STD, first_conv="conv1.0"),
})


def _build(cls, variant: str, pretrained: bool, **kwargs):
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for 32 px inputs (He et al. 2016; open_lth/PX layout). 270,896 prunable weights at 10 classes."""
    return _build(CifarResNet, "cifar_resnet20", pretrained, depth=20, **kwargs)


@register_model
def cifar_vgg16_bn(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-16 with BatchNorm for 32 px inputs (PX layout: conv biases, 2x2 average pool, one Linear)."""
    return _build(CifarVGG, "cifar_vgg16_bn", pretrained, **kwargs)


@register_model
def tinyimagenet_resnet18(pretrained: bool = False, **kwargs) -> TinyImageNetResNet18:
    """ResNet-18 for 64 px Tiny-ImageNet (3x3 stem, no max-pool)."""
    return _build(TinyImageNetResNet18, "tinyimagenet_resnet18", pretrained, **kwargs)
