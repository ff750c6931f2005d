"""The ticket-health guard of the pruning loop (on by default; ``guard=False`` / ``--no-guard`` give the raw method).

After each round's threshold, if the new mask leaves a pruning target empty or a model output (class) with no kept
path from the input (see :mod:`px_hub.masking.health`), the guard keeps the best-scored minimum that restores it
and gives back as many of the lowest-scored other kept weights, so the kept count stays the raw method's (the
sparsity is exactly the target's, up to ties at the threshold). Candidates are the weights the previous round kept
(a weight pruned earlier stays pruned; if the previous mask kept nothing in a layer, its whole layer). The rule,
deterministic (ties: the lowest flat index; layers in network order; classes in ascending order):

1. **Empty layer.** Keep the layer's single best-scored candidate, preferring (a) candidates on a complete path
   (input channel reached from the input, output channel reaching an output), then (b) candidates whose input
   channel is reached, then (c) any candidate. Layers are restored one at a time, in network order, so a branch
   of two empty layers is reconnected through one weight each.
2. **Dead class c** (a model output no kept path reaches). (a) If the classifier is a pruning target with one row
   per output, keep the best-scored candidate of row c whose input unit is reached from the input. (b) Otherwise
   **grow a path** back to c along the previous round's mask (which still reached c): repeatedly, with the
   connectivity of the current mask (backward from output c only), keep the best-scored candidate over all layers
   that *bridges* (input channel reached, output channel reaches c: one weight completes a path); if no candidate
   bridges, keep the best-scored candidate of the *last* layer, in network order, whose input channel is reached,
   whose output channel is not yet reached and reaches c under the previous mask (each step reaches one more
   unit on a previous path to c, so the growth ends; at most ``MAX_GROWTH`` steps). (c) Failing both, keep the
   best-scored candidate of row c (recorded as unresolved if c stays dead).
3. **Give back.** Remove, from the weights kept and not restored in this round, the lowest-scored ones (never a
   layer's last kept weight), as many as were restored: over all layers (global scope), or in the layer of each
   restored weight (local scope, so every layer keeps its density).
4. Check again: if giving back broke the mask again, repeat 1-3 (restored weights stay protected), at most
   ``MAX_PASSES`` times; anything still broken is recorded as ``unresolved``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .health import Connectivity, connectivity
from .mask import Mask

MAX_PASSES = 8
MAX_GROWTH = 64  # weights one dead class may get back by path growth (rule 2b)


def _best(score: torch.Tensor, candidates: torch.Tensor, *preferred: torch.Tensor | None) -> int | None:
    """Flat index of the highest score among ``candidates`` restricted to the first non-empty preference
    (ties: the lowest index), or None if there is no candidate."""
    flat = candidates.reshape(-1)
    for pref in (*preferred, None):
        pool = flat if pref is None else flat & pref.reshape(-1)
        idx = torch.nonzero(pool).reshape(-1)
        if idx.numel():
            vals = score.reshape(-1)[idx].double()
            vals = torch.nan_to_num(vals, nan=float("-inf"))
            return int(idx[int(torch.argmax(vals))])
    return None


class _GuardState:
    def __init__(self, model, prev: Mapping[str, torch.Tensor], new: Mask, scores, input_shape, head):
        self.model, self.prev, self.scores, self.input_shape, self.head = model, prev, scores, input_shape, head
        self.masks = {k: new[k].clone() for k in new}
        self.protected = {k: torch.zeros_like(m) for k, m in self.masks.items()}
        self.restored_layers: list[str] = []
        self.restored_classes: list[int] = []
        self.restored = 0
        self.removed = 0
        self.pending: dict[str, int] = {}  # restored per layer, not yet given back
        self._conn: Connectivity | None = None  # of the current masks; dropped whenever they change
        self._conn_backward = False

    def conn(self, backward: bool = True) -> Connectivity:
        if self._conn is None or (backward and not self._conn_backward):
            self._conn = connectivity(self.model, Mask(self.masks), self.input_shape, backward=backward)
            self._conn_backward = backward
        return self._conn

    def candidates(self, name: str) -> torch.Tensor:
        prev = self.prev.get(name)
        cand = prev.clone() if prev is not None and bool(prev.any()) else torch.ones_like(self.masks[name])
        return cand & ~self.masks[name]

    def keep(self, name: str, flat_idx: int) -> None:
        self.masks[name].view(-1)[flat_idx] = True
        self.protected[name].view(-1)[flat_idx] = True
        self.restored += 1
        self.pending[name] = self.pending.get(name, 0) + 1
        self._conn = None

    def fix_empty_layers(self) -> bool:
        changed = False
        for name, m in self.masks.items():
            if bool(m.any()):
                continue
            c = self.conn()
            a, b = c.input_reached(name, m.shape), c.output_reaches(name, m.shape)
            both = a & b if a is not None and b is not None else None
            pick = _best(self.scores[name], self.candidates(name), both, a)
            if pick is not None:
                self.keep(name, pick)
                self.restored_layers.append(name)
                changed = True
        return changed

    def fix_dead_classes(self) -> bool:
        changed = False
        c = self.conn(backward=False)
        for cls in torch.nonzero(~c.outputs_reached).reshape(-1).tolist():
            c = self.conn(backward=False)
            if bool(c.outputs_reached[cls]):
                continue
            if not self._restore_row(c, cls) and not self._grow_path(cls):
                self._restore_row(self.conn(backward=False), cls, anywhere=True)
            self.restored_classes.append(int(cls))
            changed = True
        return changed

    def _restore_row(self, c: Connectivity, cls: int, anywhere: bool = False) -> bool:
        h = self.head
        if h is None or h not in self.masks or self.masks[h].shape[0] != c.outputs_reached.numel():
            return False
        cand = torch.zeros_like(self.masks[h])
        cand[cls] = self.candidates(h)[cls]
        reached = c.input_reached(h, cand.shape)
        if not anywhere:
            if reached is None:
                return False
            cand &= reached
        pick = _best(self.scores[h], cand)
        if pick is None:
            return False
        self.keep(h, pick)
        return True

    def _grow_path(self, cls: int) -> bool:
        """Rule 2b: reconnect class ``cls`` along the previous mask, one weight at a time; True when it is reached."""
        union = Mask({k: m | self.prev[k] if k in self.prev else m for k, m in self.masks.items()})
        toward = connectivity(self.model, union, self.input_shape, backward=True, output=cls)
        if not bool(toward.outputs_reached[cls]):
            return False  # not even the previous mask reaches it: nothing to grow along
        for _ in range(MAX_GROWTH):
            cur = connectivity(self.model, Mask(self.masks), self.input_shape, backward=True, output=cls)
            self._conn = None
            if bool(cur.outputs_reached[cls]):
                return True
            names = [k for k in cur.traces if k in self.masks]
            best: tuple[float, str, int] | None = None
            for name in names:  # (i) one weight that completes a path, best-scored over all layers
                shape = self.masks[name].shape
                a, b = cur.input_reached(name, shape), cur.output_reaches(name, shape)
                if a is None or b is None:
                    continue
                pick = _best(self.scores[name], self.candidates(name) & a & b)
                if pick is not None:
                    v = float(torch.nan_to_num(self.scores[name].reshape(-1)[pick].double(), nan=float("-inf")))
                    if best is None or v > best[0]:
                        best = (v, name, pick)
            if best is None:  # (ii) reach one more unit on a previous path to cls, as late in the network as can be
                for name in reversed(names):
                    shape = self.masks[name].shape
                    a, r = cur.input_reached(name, shape), cur.output_reached(name, shape)
                    t = toward.output_reaches(name, shape)
                    if a is None or r is None or t is None:
                        continue
                    pick = _best(self.scores[name], self.candidates(name) & a & ~r & t)
                    if pick is not None:
                        best = (0.0, name, pick)
                        break
            if best is None:
                return False
            self.keep(best[1], best[2])
            self.restored_layers.append(best[1])
        return bool(self.conn(backward=False).outputs_reached[cls])

    def give_back(self, local: bool) -> None:
        """Remove as many of the lowest-scored kept, unprotected weights as were restored, never a layer's last kept
        weight: over all layers (global scope), or in each layer as many as it got back (local scope)."""
        pending, self.pending = self.pending, {}
        if local:
            for name, n in pending.items():
                self._give_back(n, [name])
        else:
            self._give_back(sum(pending.values()), list(self.masks))

    def _give_back(self, n: int, names: list[str]) -> None:
        if n <= 0:
            return
        removable = [self.masks[k].reshape(-1) & ~self.protected[k].reshape(-1) for k in names]
        flat_scores = torch.cat([self.scores[k].reshape(-1).double() for k in names])
        flat_ok = torch.cat(removable)
        idx = torch.nonzero(flat_ok).reshape(-1)
        order = idx[torch.sort(torch.nan_to_num(flat_scores[idx], nan=float("-inf")), stable=True).indices]
        offsets, o = [], 0
        for k in names:
            offsets.append(o)
            o += self.masks[k].numel()
        left = {k: int(self.masks[k].sum()) for k in names}
        done = 0
        for g in order.tolist():
            if done == n:
                break
            li = max(i for i, off in enumerate(offsets) if off <= g)
            k = names[li]
            if left[k] <= 1:
                continue
            self.masks[k].view(-1)[g - offsets[li]] = False
            left[k] -= 1
            done += 1
        self.removed += done
        self._conn = None

    def broken(self) -> tuple[list[str], list[int]]:
        empty = [k for k, m in self.masks.items() if not bool(m.any())]
        dead = torch.nonzero(~self.conn(backward=False).outputs_reached).reshape(-1).tolist()
        return empty, dead


def guard_round(model: nn.Module, prev: Mapping[str, torch.Tensor], new: Mask, scores: Mapping[str, torch.Tensor],
                input_shape: Sequence[int], head: str | None, scope: str = "global") -> tuple[Mask, dict | None]:
    """Apply the guard (module docstring) to one round's mask ``new`` (``prev``: the mask the round started from;
    ``scores``: the round's scores, CPU; ``head``: the classifier's weight name; ``scope="local"`` gives back in
    the layer of each restored weight, keeping every layer's density). Returns the mask and a record
    of what changed, or ``(new, None)`` when nothing needed restoring."""
    empty = [k for k in new if not bool(new[k].any())]
    first = connectivity(model, new, input_shape, backward=False)
    dead = torch.nonzero(~first.outputs_reached).reshape(-1).tolist()
    if not empty and not dead:
        return new, None
    st = _GuardState(model, prev, new, scores, input_shape, head)
    st._conn = first
    record = {"empty_layers": empty, "dead_classes": dead}
    for _ in range(MAX_PASSES):
        st.fix_empty_layers()
        st.fix_dead_classes()
        st.give_back(local=scope == "local")
        empty_now, dead_now = st.broken()
        if not empty_now and not dead_now:
            break
    else:
        record["unresolved"] = {"empty_layers": empty_now, "dead_classes": dead_now}
    record.update(restored_layers=sorted(set(st.restored_layers), key=list(st.masks).index),
                  restored_classes=sorted(set(st.restored_classes)), restored=st.restored, removed=st.removed)
    return Mask(st.masks), record


def describe_guard(record: dict | None) -> str:
    """One sentence on what the guard did, from ``prune_with_record(...).record["guard"]``."""
    g = record or {}
    if not g.get("enabled"):
        return "off (raw method: rounds may empty a layer or cut every path to a class)"
    if not g.get("restored"):
        return "on, nothing needed restoring"
    layers = sorted({n for c in g.get("changes", []) for n in c.get("restored_layers", [])})
    classes = sorted({k for c in g.get("changes", []) for k in c.get("restored_classes", [])})
    text = (f"on, restored {g['restored']} weight(s) in {g['rounds_changed']} round(s) and removed as many "
            f"lowest-scored ones; restored layers: {', '.join(layers) or 'none'}; "
            f"restored classes: {', '.join(map(str, classes)) or 'none'}")
    unresolved = [c["round"] for c in g.get("changes", []) if c.get("unresolved")]
    if unresolved:
        text += f"; unresolved in round(s) {', '.join(map(str, unresolved))}"
    return text
