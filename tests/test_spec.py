"""PruneSpec: the canonical string and hash decide what a mask is; any field change must change the hash."""
from __future__ import annotations

import dataclasses
import json

import pytest

from px_hub.errors import InvalidArgumentError, UnknownNameError
from px_hub.spec import DataSpec, ModelSpec, PruneSpec, TargetsSpec

BASE = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False), data=DataSpec("digits", examples_per_class=2))

# one changed value for every field of the tree (nested dataclasses by path)
CHANGES = {
    "model.name": "resnet18", "model.pretrained": True, "model.num_classes": 7, "model.head_seed": 3,
    "data.dataset": "animal-mnist", "data.split": "test", "data.examples_per_class": 3, "data.seed": 5,
    "data.order": "class", "data.image_column": "img", "data.label_column": "y", "data.batch_size": 20,
    "data.input_size": 64,
    "method": "synflow", "method_options": {"arithmetic": "official"}, "sparsity": 0.9, "rounds": 7,
    "schedule": "linear", "scope": "local", "seed": 1,
    "targets.exclude_first": True, "targets.exclude_classifier": True, "targets.exclude": ("fc",),
    "guard": False,
}


def _replace(spec: PruneSpec, path: str, value) -> PruneSpec:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(spec, **{head: value})
    return dataclasses.replace(spec, **{head: dataclasses.replace(getattr(spec, head), **{rest: value})})


def _all_paths(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ("model", "data", "targets"):
            out += _all_paths({"model": ModelSpec, "data": DataSpec, "targets": TargetsSpec}[f.name], f"{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_every_field_is_covered_by_the_change_table():
    assert sorted(_all_paths(PruneSpec)) == sorted(CHANGES)


def test_same_spec_same_hash():
    again = PruneSpec(model=ModelSpec("cifar_resnet20", pretrained=False),
                      data=DataSpec("digits", examples_per_class=2))
    assert again.hash() == BASE.hash() and again.canonical() == BASE.canonical()
    assert len(BASE.hash()) == 12 and int(BASE.hash(), 16) >= 0
    # defaults made explicit resolve to the same spec: the default method (px_2024), its 100 rounds and options
    explicit = dataclasses.replace(BASE, method="px_2024", rounds=100, method_options={"arithmetic": "fast"})
    assert explicit.hash() == BASE.hash()
    # canonical JSON is sorted and round-trips
    d = json.loads(BASE.canonical())
    assert list(d) == sorted(d)
    assert PruneSpec.from_dict(d).hash() == BASE.hash()


@pytest.mark.parametrize("path", sorted(CHANGES))
def test_any_field_change_changes_the_hash(path):
    changed = _replace(BASE, path, CHANGES[path])
    assert changed != BASE
    assert changed.hash() != BASE.hash(), path


def test_from_px_config_reads_new_and_old_tickets():
    px = {"spec": BASE.to_dict(), "spec_hash": BASE.hash(), "method": "px"}
    assert PruneSpec.from_px_config(px).hash() == BASE.hash()
    old = {"method": "snip", "sparsity": 0.9, "rounds": 1, "seed": 2, "schedule": "exponential", "scope": "global",
           "targets": {"exclude_first": True, "exclude_classifier": False, "exclude": []},
           "data": {"dataset": "digits", "k": 4, "seed": 2, "split": "train"},
           "model": {"spec": "resnet18", "pretrained": True}}
    spec = PruneSpec.from_px_config(old)
    assert (spec.method, spec.sparsity, spec.data.examples_per_class, spec.model.name) == ("snip", 0.9, 4, "resnet18")
    assert spec.targets.exclude_first and PruneSpec.from_px_config({}) is None


@pytest.mark.parametrize("change,error", [
    ({"sparsity": 1.0}, InvalidArgumentError), ({"rounds": 0}, InvalidArgumentError),
    ({"method": "pxx"}, UnknownNameError), ({"scope": "layer"}, InvalidArgumentError),
    ({"method_options": {"nope": 1}}, InvalidArgumentError),
])
def test_validate(change, error):
    with pytest.raises(error):
        dataclasses.replace(BASE, **change).validate()
