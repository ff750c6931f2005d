"""The one fine-tuning loop (classification and segmentation) on accelerate.

dataloaders → ``Accelerator`` → ``prepare`` → per epoch: train (``accumulate``, mask enforced at every optimizer
step) → evaluate through the shipped ``evaluate`` modules → ``save_state``. A run folder holds the resolved recipe,
``metrics.jsonl`` (one line per epoch), ``metrics.json``, ``curve.png``, the final ``model.safetensors`` and
``mask.safetensors``, and ``checkpoints/step_*`` (accelerate state + ``trainer_state.json``); an interrupted run
continues from its last checkpoint (``skip_first_batches`` inside the epoch) with the same results as an
uninterrupted one.

Mask under DDP: ``Mask.enforce`` zeroes gradients in post-accumulate-grad hooks. Measured with two gloo (CPU)
processes (``tests/test_finetune_ddp.py``): after ``accelerator.backward`` the pruned positions of the all-reduced
gradients are exactly zero, whether the hooks are attached before or after ``prepare`` wraps the model in DDP. The
loop still multiplies the gradients by the mask on synchronising steps (one multiply per weight) as a guard for
backends where DDP writes the reduced bucket back after the hooks ran (e.g. ``gradient_as_bucket_view`` on
NCCL), so momentum and weight decay never see a pruned position; ``enforcer.after_step()`` re-zeroes the weights
after every optimizer step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..distributed import cpu_requested
from ..errors import DataError, IntegrityError, InvalidArgumentError, OutputExistsError
from ..masking import Mask
from .datasets import IGNORE_INDEX, TrainSet, load_classification_data, load_segmentation_data, subset_indices
from .recipe import Recipe
from .transforms import SegmentationTransform, classification_transform

STATE_FILE = "trainer_state.json"
log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    output_dir: Path
    metrics: dict
    history: list[dict]
    model: nn.Module
    mask: Mask | None
    recipe: Recipe
    ticket_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    num_processes: int = 1


def resolve_mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def lr_at_epoch(base_lr: float, epoch: int, milestones, gamma: float) -> float:
    """Step decay: ``base_lr * gamma ** (number of milestones <= epoch)`` (the paper's "drops")."""
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


def mask_gradients(model: nn.Module, mask: Mask | None, cache: dict) -> None:
    """``grad *= mask`` on every masked parameter (after DDP's all-reduce wrote the averaged gradient)."""
    if mask is None:
        return
    if not cache:
        params = dict(model.named_parameters())
        cache.update({k: (params[k], m.to(params[k].device)) for k, m in mask.items()})
    for p, keep in cache.values():
        if p.grad is not None:
            p.grad.mul_(keep)


def finetune(recipe: Recipe, *, output_dir: str | os.PathLike | None = None, model: nn.Module | None = None,
             mask: Mask | None = None, ticket: str | os.PathLike | None = None, train_data=None, val_data=None,
             resume: bool = True, overwrite: bool = False, push_to: str | None = None, progress: bool = True,
             on_step: Callable[[int], None] | None = None, accelerator=None) -> FinetuneResult:
    """Train ``recipe`` and return the final metrics.

    The network comes from, in this order: ``ticket`` (a ticket folder or Hub repo id: model + mask, results are
    written back into it), ``model`` (+ optional ``mask``), or ``recipe.model.name`` (pruned first through
    :func:`px_hub.pipeline.run` when ``recipe.prune.method`` is set). ``train_data``/``val_data`` override
    ``recipe.data`` (ImageDataset, or SegmentationData for segmentation). ``on_step(global_step)`` is called after
    every optimizer step (tests use it to interrupt a run). Run under ``accelerate launch`` for several
    processes/GPUs. Stages: :func:`make_accelerator` -> :func:`load_data` -> :func:`load_network` (ticket, model,
    or the pruning pipeline) -> :func:`make_loaders` -> :func:`make_optimizer` -> :func:`train` -> results written
    (and the ticket updated, pushed with ``push_to``).
    """
    from accelerate.utils import set_seed

    recipe.validate()
    out = Path(output_dir or Path("runs") / f"{recipe.name}-{recipe.hash()}")
    accelerator = accelerator or make_accelerator(recipe)
    _prepare_output(out, recipe, accelerator, resume=resume, overwrite=overwrite)
    set_seed(recipe.train.seed)
    train_data, val_data, num_classes = load_data(recipe, train_data, val_data)
    net = load_network(recipe, out, num_classes, train_data, ticket=ticket, model=model, mask=mask,
                       progress=progress)
    train_loader, val_loader = make_loaders(recipe, train_data, val_data, net.data_config, accelerator.num_processes)
    optimizer = make_optimizer(recipe, net.model)
    t_start = time.time()
    state, bare = train(recipe, accelerator, net.model, net.mask, optimizer, train_loader, val_loader, out,
                        num_classes, resume=resume, progress=progress, on_step=on_step)
    final = dict(state["history"][-1]) if state["history"] else {}
    result = FinetuneResult(out, final, state["history"], bare, net.mask, recipe, net.ticket_dir,
                            num_processes=accelerator.num_processes)
    if accelerator.is_main_process:
        result.ticket_dir = _write_results(result, net.px_config, train_data, val_data, time.time() - t_start,
                                           push_to, net.data_config)
    accelerator.wait_for_everyone()
    return result


@dataclass
class Network:
    """What :func:`load_network` gives the training loop: the model, its mask (None: dense), the ticket's
    px_config (or the pruning record), the ticket folder (when training a ticket) and the preprocessing."""

    model: nn.Module
    mask: Mask | None
    px_config: dict | None
    ticket_dir: Path | None
    data_config: dict


def make_accelerator(recipe: Recipe):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    hp = recipe.train
    acc = Accelerator(cpu=cpu_requested(), mixed_precision=resolve_mixed_precision(hp.mixed_precision),
                      gradient_accumulation_steps=hp.grad_accum_steps,
                      dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True))
    micro = hp.batch_size // hp.grad_accum_steps
    if hp.batch_size % hp.grad_accum_steps or micro % acc.num_processes:
        raise InvalidArgumentError(f"train.batch_size={hp.batch_size} must split into grad_accum_steps="
                                   f"{hp.grad_accum_steps} micro-batches divisible by {acc.num_processes} processes; "
                                   "change train.batch_size")
    return acc


def load_data(recipe: Recipe, train_data=None, val_data=None):
    """``(train, val, num_classes)``: the recipe's datasets unless given."""
    d, seg = recipe.data, recipe.task == "segmentation"
    load = load_segmentation_data if seg else load_classification_data
    train_data = train_data if train_data is not None else load(d.dataset, d.train_split, d.image_column,
                                                                d.label_column)
    val_data = val_data if val_data is not None else load(d.dataset, d.val_split, d.image_column, d.label_column)
    num_classes = recipe.model.num_classes or (len(train_data.segmentation_classes) if seg
                                               else train_data.num_classes)
    return train_data, val_data, num_classes


def load_network(recipe: Recipe, out: Path, num_classes: int, train_data, *, ticket=None, model=None, mask=None,
                 progress: bool = True) -> Network:
    """The network to train: a ticket, the given model (+ mask), or the recipe's model, pruned through
    :func:`px_hub.pipeline.run` when ``recipe.prune.method`` is set and no mask is given."""
    ticket_dir, px_config = None, None
    if ticket is not None:
        model, mask, px_config, ticket_dir = _from_ticket(ticket, out)
    elif model is None:
        model, _ = build_model(recipe, num_classes)
    if mask is None and recipe.prune.method:
        mask, px_config = prune_for_recipe(recipe, model, train_data, num_classes, progress=progress)
    _check_head(model, num_classes, recipe.task == "segmentation")
    if mask is not None:
        mask = mask if isinstance(mask, Mask) else Mask(mask)
        mask.validate(model)
    return Network(model, mask, px_config, ticket_dir, _data_config(model, recipe))


def make_loaders(recipe: Recipe, train_data, val_data, data_config: dict, world: int):
    hp, d, seg = recipe.train, recipe.data, recipe.task == "segmentation"
    if seg:
        train_tf = SegmentationTransform(recipe.augment, data_config["mean"], data_config["std"], train=True)
        val_tf = SegmentationTransform(recipe.augment, data_config["mean"], data_config["std"], train=False)
    else:
        train_tf = classification_transform(recipe.augment, data_config, train=True)
        val_tf = classification_transform(recipe.augment, data_config, train=False)
    train_set = TrainSet(train_data, train_tf, seed=hp.seed,
                         indices=subset_indices(len(train_data), d.train_subset, hp.seed))
    val_set = TrainSet(val_data, val_tf, seed=hp.seed,
                       indices=subset_indices(len(val_data), d.val_subset, hp.seed + 1))
    micro = hp.batch_size // hp.grad_accum_steps
    if len(train_set) < micro:
        raise DataError(f"{len(train_set)} training examples is fewer than one batch ({micro}); "
                        "lower train.batch_size")
    eval_bs = hp.eval_batch_size or hp.batch_size
    eval_bs = max(world, eval_bs - eval_bs % world)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=micro, shuffle=True, num_workers=d.num_workers,
                                               drop_last=seg)  # BatchNorm in the ASPP pooling needs >1 sample
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=eval_bs, shuffle=False, num_workers=d.num_workers)
    return train_loader, val_loader


def make_optimizer(recipe: Recipe, model: nn.Module):
    o = recipe.optim
    if recipe.task == "segmentation" and hasattr(model, "head_parameters"):
        groups = [{"params": model.backbone_parameters(), "base_lr": o.lr},
                  {"params": model.head_parameters(), "base_lr": o.lr * o.head_lr_mult}]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "base_lr": o.lr}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)


def train(recipe: Recipe, accelerator, model, mask, optimizer, train_loader, val_loader, out: Path, num_classes: int,
          *, resume: bool, progress: bool, on_step=None):
    """The epoch loop (resumable from ``out/checkpoints``); returns ``(state, unwrapped model)``."""
    hp, o, seg = recipe.train, recipe.optim, recipe.task == "segmentation"
    train_set = train_loader.dataset  # its .epoch seeds the augmentation
    enforcer = mask.enforce(model) if mask is not None else None  # on the bare model: same Parameter objects
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    bare = accelerator.unwrap_model(model)
    grad_cache: dict = {}

    state = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "history": [], "recipe_hash": recipe.hash()}
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        load_checkpoint(accelerator, ckpt)
        state.update(json.loads((ckpt / STATE_FILE).read_text()))
        if accelerator.is_main_process:
            log.info("finetune: resuming from %s (epoch %d, batch %d)", ckpt, state["epoch"],
                     state["batches_in_epoch"])
        if enforcer is not None:
            enforcer.after_step()

    metric = _load_metric(seg) if accelerator.is_main_process else None
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    steps_per_epoch = len(train_loader)
    if hp.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, hp.max_steps_per_epoch * hp.grad_accum_steps)

    for epoch in range(state["epoch"], hp.epochs):
        for g in optimizer.param_groups:
            g["lr"] = lr_at_epoch(g["base_lr"], epoch, o.milestones, o.gamma)
        train_set.epoch = epoch
        train_loader.set_epoch(epoch)
        skip = state["batches_in_epoch"] if epoch == state["epoch"] else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        model.train()
        t0, loss_sum, loss_n = time.time(), 0.0, 0
        if skip:  # the loss of the batches trained before the checkpoint, so the epoch's train_loss is exact
            loss_sum, loss_n = (state.get("partial_loss") or {}).get(str(accelerator.process_index), [0.0, 0])
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{hp.epochs}", leave=False,
                   disable=not (progress and accelerator.is_local_main_process))
        batch_idx = skip
        for x, y in loader:
            if batch_idx >= steps_per_epoch:
                break
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = loss_fn(model(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    mask_gradients(bare, mask, grad_cache)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients and enforcer is not None:
                    enforcer.after_step()
            batch_idx += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
            if accelerator.sync_gradients:
                state["global_step"] += 1
                state["batches_in_epoch"] = batch_idx
                due = hp.checkpoint_every and state["global_step"] % hp.checkpoint_every == 0
                if due and batch_idx < steps_per_epoch:
                    state["partial_loss"] = _gather_loss(accelerator, loss_sum, loss_n)
                    _save_checkpoint(accelerator, out, state, hp.keep_checkpoints)
                if on_step is not None:
                    on_step(state["global_step"])
        bar.close()
        train_loss = accelerator.reduce(torch.tensor(loss_sum / max(loss_n, 1), device=accelerator.device), "mean")
        row = {"epoch": epoch + 1, "step": state["global_step"], "lr": optimizer.param_groups[0]["lr"],
               "train_loss": round(float(train_loss), 6)}
        row.update(evaluate_model(model, val_loader, accelerator, metric, loss_fn, seg, num_classes))
        row["seconds"] = round(time.time() - t0, 2)
        state["history"].append(row)
        state["epoch"], state["batches_in_epoch"], state["partial_loss"] = epoch + 1, 0, None
        if accelerator.is_main_process:
            log.info("finetune: epoch %d/%d %s", epoch + 1, hp.epochs,
                     " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
        if accelerator.is_main_process:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        _save_checkpoint(accelerator, out, state, hp.keep_checkpoints)

    accelerator.wait_for_everyone()
    bare = accelerator.unwrap_model(model)
    if enforcer is not None:
        enforcer.after_step()
        enforcer.remove()
    return state, bare


# -- pieces -----------------------------------------------------------------------------------------------------
def build_model(recipe: Recipe, num_classes: int) -> tuple[nn.Module, dict]:
    """The recipe's network: DeepLabV3+ for segmentation, else a classifier from :mod:`px_hub.backbones`."""
    m = recipe.model
    pretrained = m.pretrained or names_weights(m.name)  # a source that names a weights file is always read
    if recipe.task == "segmentation":
        from .deeplab import DeepLabV3Plus

        arch, state = "resnet50", None
        if pretrained:
            loaded = _load_backbone(m.name, None, True)
            arch = getattr(loaded.model, "default_cfg", {}).get("architecture", "resnet50")
            state = loaded.model.state_dict()
        elif not m.name.startswith(("timm/", "hf-hub:")):
            arch = m.name
        net = DeepLabV3Plus(num_classes, backbone=arch, output_stride=m.output_stride, backbone_state=state)
        return net, {}
    loaded = _load_backbone(m.name, num_classes, pretrained)
    return loaded.model, dict(loaded.data_config)


WEIGHT_FILE_PREFIXES = ("dino:", "moco:", "local:")


def names_weights(name: str) -> bool:
    """Whether a model spec names a weights file (``dino:FILE``, ``moco:FILE``, ``local:...``, a path): such a
    source is loaded whatever ``model.pretrained`` says (a recipe's ``pretrained: false`` means "no stock
    weights", never "ignore the file the user named"); a file that cannot be read stops the run."""
    return name.startswith(WEIGHT_FILE_PREFIXES) or os.path.exists(os.path.expanduser(name))


def _load_backbone(name: str, num_classes: int | None, pretrained: bool):
    from ..backbones import load_backbone

    return load_backbone(name, num_classes=num_classes, pretrained=pretrained)


def _data_config(model: nn.Module, recipe: Recipe) -> dict:
    if recipe.task == "segmentation":
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
    from timm.data import resolve_data_config

    return dict(resolve_data_config(model=model))


def _check_head(model: nn.Module, num_classes: int, seg: bool) -> None:
    n = getattr(model, "num_classes", None)
    if n is not None and n != num_classes:
        raise InvalidArgumentError(f"the model has {n} outputs but the data has {num_classes} classes; set "
                                   f"model.num_classes={n} or use a ticket made for this dataset")


def prune_for_recipe(recipe: Recipe, model: nn.Module, train_data, num_classes: int, progress: bool = True):
    """Prune ``model`` with ``recipe.prune`` through :func:`px_hub.pipeline.run` on a class-balanced split of the
    training data (segmentation: the backbone through a :class:`BackboneProbe`). Returns ``(mask, record)``."""
    from .. import pipeline
    from ..spec import DataSpec, ModelSpec, PruneSpec, TargetsSpec

    p, d, seg = recipe.prune, recipe.data, recipe.task == "segmentation"
    size = recipe.augment.input_size if seg else None
    spec = PruneSpec(
        model=ModelSpec(name=recipe.model.name, pretrained=recipe.model.pretrained, num_classes=num_classes,
                        head_seed=p.seed),
        data=DataSpec(dataset=d.dataset, split=d.train_split, examples_per_class=p.per_class, seed=p.seed,
                      image_column=d.image_column, label_column=d.label_column, batch_size=p.batch_size,
                      input_size=size),
        method=p.method, sparsity=p.sparsity, rounds=p.rounds, seed=p.seed,
        targets=TargetsSpec(exclude_classifier=seg))
    if seg:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        from .deeplab import BackboneProbe

        # probe outputs: the image-level (foreground) classes of the pruning split
        net = BackboneProbe(model.backbone, train_data.num_classes, seed=p.seed)
        data_config = {"input_size": (3, size, size), "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                       "crop_pct": 1.0}
    else:
        net, data_config = model, _data_config(model, recipe)
    res = pipeline.run(spec, model=net, data_config=data_config, dataset=train_data, progress=progress)
    return res.mask, res.record


def evaluate_model(model, loader, accelerator, metric, loss_fn, seg: bool, num_classes: int) -> dict:
    """Validation loss + top-1/top-5 (classification) or mean IoU (segmentation) through the shipped
    ``evaluate`` modules; computed on the main process and broadcast, so every rank logs the same numbers."""
    from accelerate.utils import broadcast_object_list

    model.eval()
    k = min(5, num_classes)
    loss_sum, n = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    with torch.no_grad():
        for x, y in loader:
            with accelerator.autocast():
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            valid = (y != IGNORE_INDEX).sum() if seg else torch.tensor(len(y), device=y.device)
            loss_sum += loss * valid
            n += valid
            pred = logits.argmax(1) if seg else logits.topk(k, dim=1).indices
            pred, ref = accelerator.gather_for_metrics((pred, y))
            if metric is not None:
                metric.add_batch(predictions=pred.cpu().numpy(), references=ref.cpu().numpy())
    loss_sum, n = accelerator.reduce(loss_sum, "sum"), accelerator.reduce(n, "sum")
    out = [None]
    if accelerator.is_main_process:
        if seg:
            r = metric.compute(num_labels=num_classes, ignore_index=IGNORE_INDEX)
            res = {"mean_iou": r["mean_iou"], "pixel_accuracy": r["overall_accuracy"]}
        else:
            res = metric.compute(k=[1, k] if k > 1 else [1])
        res["val_loss"] = float(loss_sum / n.clamp(min=1))
        out = [{k_: (round(v, 6) if isinstance(v, float) and not math.isnan(v) else v) for k_, v in res.items()}]
    broadcast_object_list(out)
    return out[0]


def _load_metric(seg: bool):
    from ..evaluate_metrics import load_metric

    return load_metric("mean_iou" if seg else "top_k_accuracy")


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (``trainer_state.json`` is written last)."""
    d = out / "checkpoints"
    done = sorted(p for p in d.glob("step_*") if (p / STATE_FILE).is_file()) if d.is_dir() else []
    return done[-1] if done else None


def _gather_loss(accelerator, loss_sum: float, loss_n: int) -> dict[str, list]:
    """Every process's running loss sum and count in the current epoch ({rank: [sum, n]}, float64: exact)."""
    t = torch.tensor([[loss_sum, float(loss_n)]], dtype=torch.float64, device=accelerator.device)
    rows = accelerator.gather(t).cpu().tolist() if accelerator.num_processes > 1 else t.cpu().tolist()
    return {str(r): [row[0], int(row[1])] for r, row in enumerate(rows)}


def load_checkpoint(accelerator, ckpt: Path) -> None:
    """``accelerator.load_state`` with its files read as weights only; a file holding other Python objects is
    refused in one line that says why (torch's own message suggests unpickling it, which can run any code)."""
    import pickle

    try:
        accelerator.load_state(str(ckpt))
    except (pickle.UnpicklingError, RuntimeError) as e:
        if "weights_only" not in str(e) and "Weights only load failed" not in str(e):
            raise
        names = [p.name for p in sorted(ckpt.iterdir()) if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        culprit = next((n for n in names if n.startswith("optimizer")), None) or (names[0] if names else "a file")
        raise IntegrityError(
            f"checkpoint {ckpt} is refused: it holds Python objects beyond tensors (e.g. in {culprit}), and "
            "unpickling those can run arbitrary code, so px-hub reads checkpoints as weights only; delete "
            f"{ckpt.name} to resume from an older checkpoint, or pass --overwrite to start over") from None


def _save_checkpoint(accelerator, out: Path, state: dict, keep: int) -> None:
    path = out / "checkpoints" / f"step_{state['global_step']:09d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        tmp = path / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path / STATE_FILE)
        others = sorted(p for p in (out / "checkpoints").glob("step_*") if p != path)
        for old in others[:max(0, len(others) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _prepare_output(out: Path, recipe: Recipe, accelerator, resume: bool, overwrite: bool) -> None:
    from .._fs import check_writable, folder_kind

    saved = out / "recipe.yaml"
    if accelerator.is_main_process:
        # --overwrite deletes only a run folder px-hub made; files px-hub did not write are never mixed in either
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise OutputExistsError(f"--out {out} exists and is not a folder; choose a folder path")
        kind = folder_kind(out) if out.exists() else "absent"
        if kind not in ("absent", "empty", "run"):
            if overwrite:
                raise OutputExistsError(f"--out {out} is not a px-hub run folder, so --overwrite will not delete "
                                        "it; remove it yourself or choose another --out")
            raise OutputExistsError(f"--out {out} holds files px-hub did not write; choose an empty or new "
                                    "--out")
        check_writable(out, "--out")
        if kind == "run" and overwrite:
            shutil.rmtree(out)
        if saved.exists():
            import yaml

            old = yaml.safe_load(saved.read_text()).get("hash")
            if old != recipe.hash():
                raise OutputExistsError(f"{out} holds a run of another recipe (hash {old}, this one {recipe.hash()}); "
                                        "pass --overwrite or another --out")
            if not resume:
                raise OutputExistsError(f"{out} already holds this run; pass --overwrite to start over")
        out.mkdir(parents=True, exist_ok=True)
        recipe.save(saved)
    accelerator.wait_for_everyone()


def _from_ticket(ticket, out: Path):
    from ..hub import load_ticket

    folder = Path(ticket)
    if not folder.is_dir():
        from ..hub import pull_ticket

        folder = Path(pull_ticket(str(ticket), out / "ticket"))
    model, mask, px_config = load_ticket(folder)
    return model, mask, px_config, folder


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    keys = [k for k in ("top_1_accuracy", "top_5_accuracy", "mean_iou", "pixel_accuracy") if k in history[0]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot(ep, [r["train_loss"] for r in history], label="train loss")
    a1.plot(ep, [r["val_loss"] for r in history], label="val loss")
    a1.set_xlabel("epoch"), a1.legend(), a1.set_title("loss")
    for k in keys:
        a2.plot(ep, [r[k] for r in history], marker="o", label=k.replace("_", " "))
    a2.set_xlabel("epoch"), a2.legend(), a2.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_results(res: FinetuneResult, px_config, train_data, val_data, seconds: float, push_to, data_config):
    from .._fs import save_safetensors

    out, recipe = res.output_dir, res.recipe
    model = res.model.to("cpu")
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(sd, out / "model.safetensors", metadata={"recipe": recipe.name, "recipe_hash": recipe.hash()})
    files = {"recipe": out / "recipe.yaml", "model": out / "model.safetensors"}
    if res.mask is not None:
        res.mask.save(out / "mask.safetensors", {"recipe_hash": recipe.hash()})
        files["mask"] = out / "mask.safetensors"
    summary = {"recipe": recipe.name, "recipe_hash": recipe.hash(), "final": res.metrics, "history": res.history,
               "train_examples": len(train_data), "val_examples": len(val_data), "seconds": round(seconds, 1),
               "num_processes": res.num_processes, "sparsity": res.mask.sparsity() if res.mask is not None else 0.0}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    files["metrics"] = out / "metrics.json"
    if res.history:
        plot_curve(res.history, out / "curve.png", f"{recipe.name} on {train_data.name}")
        files["curve"] = out / "curve.png"
    res.files = files

    ticket_dir = res.ticket_dir
    if ticket_dir is None and res.mask is not None and recipe.task == "classification" and px_config is not None:
        from ..hub import save_ticket

        ticket_dir = save_ticket(out / "ticket", model, res.mask, px_config, data_config=data_config, overwrite=True)
    if ticket_dir is not None and res.history:
        from ..hub import update_ticket

        update_ticket(ticket_dir, model=model, eval_results=eval_results_for(res, train_data, val_data),
                      extra_files={f"finetune/{p.name}": p for k, p in files.items()
                                   if k in ("recipe", "metrics", "curve")},
                      training={"recipe": recipe.name, "recipe_hash": recipe.hash(), "epochs": recipe.train.epochs,
                                "batch_size": recipe.train.batch_size, "optimizer": recipe.optim.name,
                                "lr": recipe.optim.lr, "milestones": list(recipe.optim.milestones),
                                "weight_decay": recipe.optim.weight_decay, "augment": recipe.augment.policy,
                                "seconds": round(seconds, 1)})
        if push_to:
            from ..hub import push_ticket

            push_ticket(ticket_dir, push_to)
    return ticket_dir


def eval_results_for(res: FinetuneResult, train_data, val_data) -> list[dict]:
    """Final metrics as ticket ``eval_results`` (rendered into the card's ``model-index``)."""
    task = "image-segmentation" if res.recipe.task == "segmentation" else "image-classification"
    names = {"top_1_accuracy": ("accuracy", "Top-1 accuracy"), "top_5_accuracy": ("top_5_accuracy", "Top-5 accuracy"),
             "mean_iou": ("mean_iou", "Mean IoU")}
    return [{"task": task, "dataset": val_data.name, "dataset_name": val_data.name, "split": val_data.split,
             "metric": names[k][0], "name": names[k][1], "value": float(v)}
            for k, v in res.metrics.items() if k in names and v is not None]
