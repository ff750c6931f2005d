"""Training and evaluation transforms of the recipes (torchvision ``transforms.v2``).

Every random draw goes through the torch RNG, and :class:`TrainSet` seeds it per (seed, epoch, example), so an
example gets the same augmentation whichever process, worker or resumed run loads it: resume-equals-uninterrupted
then holds even though accelerate's loader prefetches one batch ahead of the loop.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from .recipe import AugmentHP

_INTERP = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]


def classification_transform(aug: AugmentHP, data_config: dict, train: bool) -> Callable:
    """PIL RGB image -> normalised float tensor 3×S×S (S = ``aug.input_size``), the paper's augmentation when
    ``train`` (cifar: pad-4 random crop + flip; tinyimagenet/imagenet: random resized crop at ``aug.scale`` + flip,
    imagenet adds grayscale p and colour jitter), else resize + centre crop."""
    size = aug.input_size
    interp = _INTERP.get(str(data_config.get("interpolation", "bilinear")), InterpolationMode.BILINEAR)
    mean, std = data_config["mean"], data_config["std"]
    crop_pct = aug.crop_pct if aug.crop_pct is not None else float(data_config.get("crop_pct") or 1.0)
    if not train or aug.policy in ("none", "voc"):
        if crop_pct >= 1.0:
            ops = [T.Resize((size, size), interpolation=interp, antialias=True)]
        else:
            ops = [T.Resize(int(round(size / crop_pct)), interpolation=interp, antialias=True), T.CenterCrop(size)]
        return T.Compose([*ops, *_normalize(mean, std)])
    if aug.policy == "cifar":
        ops = [T.Resize((size, size), interpolation=interp, antialias=True),  # no-op at the native size
               T.RandomCrop(size, padding=aug.crop_padding)]
    else:  # tinyimagenet, imagenet
        ops = [T.RandomResizedCrop(size, scale=tuple(aug.scale), interpolation=interp, antialias=True)]
    if aug.hflip:
        ops.append(T.RandomHorizontalFlip())
    if aug.policy == "imagenet":
        if aug.color_jitter > 0:
            j = aug.color_jitter
            ops.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
        if aug.grayscale_p > 0:
            ops.append(T.RandomGrayscale(p=aug.grayscale_p))
    return T.Compose([*ops, *_normalize(mean, std)])


class SegmentationTransform:
    """Joint image/label-map transform. Train (``policy: voc``): random scale in ``aug.scale`` (image bilinear,
    labels nearest), pad to the crop size (image with the mean, i.e. 0 after normalising; labels with
    ``ignore_index``), random crop ``aug.input_size``, horizontal flip. Eval: no rescaling, pad to the crop size
    (VOC images are at most 500 px, so 513 holds every one; pixels outside the image are ignored)."""

    def __init__(self, aug: AugmentHP, mean: Sequence[float], std: Sequence[float], train: bool,
                 ignore_index: int = 255):
        self.aug, self.train, self.ignore_index = aug, train, ignore_index
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image, target) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.to_dtype(F.to_image(image), torch.float32, scale=True)
        lab = tv_tensors.Mask(torch.as_tensor(np.asarray(target), dtype=torch.int64)[None])
        size = self.aug.input_size
        if self.train and self.aug.policy == "voc":
            lo, hi = self.aug.scale
            s = lo + (hi - lo) * float(torch.rand(()))
            h, w = img.shape[-2:]
            nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
            img = F.resize(img, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
            lab = F.resize(lab, [nh, nw], interpolation=InterpolationMode.NEAREST)
        img = F.normalize(img, self.mean, self.std)
        h, w = img.shape[-2:]
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:
            img = F.pad(img, [0, 0, pw, ph], fill=0.0)
            lab = F.pad(lab, [0, 0, pw, ph], fill=self.ignore_index)
        h, w = img.shape[-2:]
        if self.train:
            top = int(torch.randint(0, h - size + 1, ()))
            left = int(torch.randint(0, w - size + 1, ()))
            if self.aug.hflip and float(torch.rand(())) < 0.5:
                img, lab = F.horizontal_flip(img), F.horizontal_flip(lab)
        else:
            top = left = 0
        img = img[..., top:top + size, left:left + size]
        lab = lab[..., top:top + size, left:left + size]
        return img.as_subclass(torch.Tensor).contiguous(), lab[0].as_subclass(torch.Tensor).contiguous()
