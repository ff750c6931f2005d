"""Error hierarchy. Every px-hub error is a ``PxHubError`` *and* the matching stdlib type, so callers can catch
either. The CLI prints ``str(error)`` as one line and exits with code 2. Messages name the fix."""
from __future__ import annotations


class PxHubError(Exception):
    """Base of all px-hub errors."""

    def __str__(self) -> str:  # one line, no quotes (KeyError would add them)
        return " ".join(str(a) for a in self.args).replace("\n", " ")


class UnknownNameError(PxHubError, LookupError):
    """An unknown model, method, dataset or recipe."""


class InvalidArgumentError(PxHubError, ValueError):
    """A value outside its allowed range (sparsity, rounds, k, ...)."""


class DataError(PxHubError, ValueError):
    """A dataset that cannot serve as pruning or training data (missing labels, too few examples, ...)."""


class MaskMismatchError(PxHubError, ValueError):
    """A mask that does not fit the model it is applied to."""


class UnsupportedModelError(PxHubError, TypeError):
    """A model a scoring method cannot handle (e.g. an activation PX has no path view for)."""


class LayerCollapseError(PxHubError, RuntimeError):
    """Pruning removed every weight or every output unit of a layer and the caller asked to fail on that."""


class IntegrityError(PxHubError, ValueError):
    """A downloaded or loaded file whose content does not match its recorded hash, or is corrupt."""


class OutputExistsError(PxHubError, FileExistsError):
    """An output folder that already exists (pass --overwrite)."""


class OutputBusyError(PxHubError, BlockingIOError):
    """An output another px-hub process is writing right now (its lock is held)."""


class OutputNotWritableError(PxHubError, PermissionError):
    """An output path that cannot be created or written (read-only folder, a file where a folder must be)."""


class HubError(PxHubError, RuntimeError):
    """A Hub operation that failed (push, pull); the local ticket is left intact."""


class WeightsUnavailableError(PxHubError, FileNotFoundError):
    """Pretrained weights that are not in the cache and cannot be downloaded (offline)."""


def require_sparsity(sparsity: float) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"sparsity must be a number in (0, 1), got {sparsity!r}") from None
    if not 0.0 < s < 1.0:
        raise InvalidArgumentError(
            f"sparsity must be in (0, 1) (the fraction of weights removed), got {s}; e.g. --sparsity 0.956"
        )
    return s
