"""``PruneSpec``: everything that decides a mask, as a frozen dataclass tree (in the style of open_lth's hparams),
with a canonical string and a short hash.

    spec = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False), data=DataSpec("digits"), sparsity=0.9)
    spec.canonical()   # sorted JSON of the resolved spec (method default rounds/options filled in)
    spec.hash()        # 12 hex digits of sha256(canonical): the key of a resumable run and of px_config.json

Two specs with the same hash make the same mask on the same device, process layout and threads per process (see
README, "PX is chaotic in float rounding"). The environment (device, threads, processes) is recorded next to the
spec in ``px_config.json`` but is not part of it. ``px_config.json`` is ``{"spec": spec.to_dict(), "spec_hash":
..., **results}``; :meth:`PruneSpec.from_px_config` reads it back (also from tickets written before the spec
existed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError, require_sparsity

# The method px-hub prunes with when none is named (API, CLI, compare): PX as first published, the variant the
# tickets study (benchmarks/study_tickets.py, README "Study: tickets that train") found to train best.
DEFAULT_METHOD = "px_2024"

SPEC_VERSION = 1
SCOPES = ("global", "local")
SCHEDULES = ("exponential", "linear")


@dataclass(frozen=True)
class ModelSpec:
    """The network to prune: a :func:`px_hub.backbones.load_backbone` name, pretrained or at a seeded random init,
    with a new classifier of ``num_classes`` outputs (``None``: the dataset's number of classes) drawn with
    ``head_seed``."""

    name: str = "builtin:efficientnet_lite0"
    pretrained: bool = True
    num_classes: int | None = None
    head_seed: int = 0


@dataclass(frozen=True)
class DataSpec:
    """The pruning data: ``examples_per_class`` (k) examples of each class of ``dataset``/``split`` drawn with
    ``seed`` (class-interleaved ``order``), preprocessed with the model's data config (``input_size``, a square
    side in pixels, overrides its size) and cut into batches of ``batch_size`` (PX's J view normalises each batch
    with its own statistics, so the batch size changes the mask)."""

    dataset: str = "digits"
    split: str = "train"
    examples_per_class: int = 10
    seed: int | None = 0  # None: the first k of each class in dataset order (the official code's rule)
    order: str = "interleaved"
    image_column: str | None = None
    label_column: str | None = None
    batch_size: int = 100
    input_size: int | None = None

    def validate(self) -> DataSpec:
        if not self.dataset:
            raise InvalidArgumentError("no pruning dataset given; pass --data (e.g. --data digits)")
        if self.examples_per_class < 1:
            raise InvalidArgumentError(f"--examples-per-class must be >= 1, got {self.examples_per_class}")
        if self.batch_size < 1:
            raise InvalidArgumentError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.input_size is not None and self.input_size < 1:
            raise InvalidArgumentError(f"--input-size must be >= 1, got {self.input_size}")
        return self


@dataclass(frozen=True)
class TargetsSpec:
    """Which weights are prunable: every Conv/Linear weight except these."""

    exclude_first: bool = False
    exclude_classifier: bool = False
    exclude: tuple[str, ...] = ()

    def to_targets(self):
        from .masking import PruneTargets

        return PruneTargets(exclude_first=self.exclude_first, exclude_classifier=self.exclude_classifier,
                            exclude=tuple(self.exclude))


@dataclass(frozen=True)
class PruneSpec:
    """Model + data + method: see the module docstring. ``rounds=None`` and omitted ``method_options`` mean the
    method's defaults; :meth:`resolved` fills them in (the hash is taken over the resolved spec, so
    ``rounds=None`` and ``rounds=100`` for PX hash alike). ``seed`` seeds random methods (random, NTK-SAP);
    ``guard`` is the pruning guard option of :func:`px_hub.prune` where this px-hub has one."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    method: str = DEFAULT_METHOD
    method_options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs; see .options
    sparsity: float = 0.982
    rounds: int | None = None
    schedule: str = "exponential"
    scope: str = "global"
    seed: int = 0
    targets: TargetsSpec = field(default_factory=TargetsSpec)
    guard: bool = True

    def __post_init__(self):
        opts = self.method_options
        if isinstance(opts, dict):
            opts = tuple(sorted(opts.items()))
        object.__setattr__(self, "method_options", tuple((str(k), v) for k, v in opts))
        if isinstance(self.targets.exclude, list):
            object.__setattr__(self, "targets", dataclasses.replace(self.targets, exclude=tuple(self.targets.exclude)))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.method_options)

    # -- checks and defaults ------------------------------------------------------------------------------------
    def validate(self) -> PruneSpec:
        """Cheap checks (no model or data loaded); raises InvalidArgumentError naming the flag to fix."""
        from .methods import get_method

        require_sparsity(self.sparsity)
        info = get_method(self.method)
        info.resolve_options(self.options)
        if self.rounds is not None and (isinstance(self.rounds, bool) or int(self.rounds) < 1):
            raise InvalidArgumentError(f"--rounds must be >= 1, got {self.rounds}")
        if self.schedule not in SCHEDULES:
            raise InvalidArgumentError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.scope not in SCOPES:
            raise InvalidArgumentError(f"--scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        self.data.validate()
        if self.model.num_classes is not None and self.model.num_classes < 1:
            raise InvalidArgumentError(f"--num-classes must be >= 1, got {self.model.num_classes}")
        return self

    def resolved(self) -> PruneSpec:
        """The same spec with the method's canonical name, its default rounds and every option filled in."""
        from .methods import get_method

        info = get_method(self.method)
        return dataclasses.replace(
            self, method=info.name, sparsity=float(self.sparsity),
            rounds=info.default_rounds if self.rounds is None else int(self.rounds),
            method_options=tuple(sorted(info.resolve_options(self.options).items())))

    # -- canonical form -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["method_options"] = dict(self.method_options)
        d["targets"]["exclude"] = list(self.targets.exclude)
        d["version"] = SPEC_VERSION
        return d

    def canonical(self) -> str:
        """Sorted, compact JSON of the resolved spec."""
        return json.dumps(self.resolved().to_dict(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """12 hex digits of sha256(:meth:`canonical`)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> PruneSpec:
        d = dict(d)
        d.pop("version", None)
        model = ModelSpec(**_known(ModelSpec, d.pop("model", None) or {}))
        data = DataSpec(**_known(DataSpec, d.pop("data", None) or {}))
        t = dict(d.pop("targets", None) or {})
        targets = TargetsSpec(**{**_known(TargetsSpec, t), "exclude": tuple(t.get("exclude") or ())})
        return cls(model=model, data=data, targets=targets, **_known(cls, d))

    @classmethod
    def from_px_config(cls, px: dict) -> PruneSpec | None:
        """The spec a ticket's ``px_config.json`` records; for tickets written before the spec existed, rebuilt
        from the record's top-level keys. None when it records no method."""
        if isinstance(px.get("spec"), dict):
            return cls.from_dict(px["spec"])
        if not px.get("method"):
            return None
        model = px.get("model") if isinstance(px.get("model"), dict) else {}
        data = px.get("data") if isinstance(px.get("data"), dict) else {}
        t = px.get("targets") if isinstance(px.get("targets"), dict) else {}
        seed = int(px.get("seed") or 0)
        return cls(
            model=ModelSpec(name=str(model.get("spec") or model.get("id") or ""),
                            pretrained=bool(model.get("pretrained", True)), num_classes=model.get("num_classes"),
                            head_seed=int(model.get("head_seed", seed) or 0)),
            data=DataSpec(dataset=str(data.get("dataset") or ""), split=data.get("split") or "train",
                          examples_per_class=int(data.get("k") or 0), seed=data.get("seed"),
                          order=data.get("order") or "interleaved"),
            method=px["method"], method_options=tuple(sorted((px.get("method_options") or {}).items())),
            sparsity=float(px.get("sparsity") or 0.0), rounds=px.get("rounds"),
            schedule=px.get("schedule") or "exponential", scope=px.get("scope") or "global", seed=seed,
            targets=TargetsSpec(exclude_first=bool(t.get("exclude_first")),
                                exclude_classifier=bool(t.get("exclude_classifier")),
                                exclude=tuple(t.get("exclude") or ())))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)} - {"model", "data", "targets"}
    return {k: v for k, v in d.items() if k in names}
