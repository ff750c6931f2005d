"""The folders and files px-hub writes: the one place that decides whether an existing output may be replaced,
checks up front that an output can be written, serialises writers of the same output (a lock), builds a folder
atomically, and writes safetensors files byte-for-byte reproducibly.

* ``check_output(out, overwrite)`` — before any work: ``out`` must not be a file, its nearest existing ancestor
  must be a writable folder, and an existing non-empty ``out`` is replaced only with ``overwrite`` *and* only if
  px-hub made it (a ticket folder, or a fine-tuning run folder). Anything else is refused, untouched.
* ``output_lock(out)`` — an exclusive ``flock`` on a lock file in the system temp folder (keyed by the absolute
  path, so nothing is left in the user's folders; the kernel drops it when the process dies); a second writer gets
  ``OutputBusyError`` at once. Re-entrant within a process.
* ``build_atomically(out, build)`` — ``build(tmp)`` fills a hidden sibling ``.<name>.partial-*`` which is renamed
  into place (the old folder swapped out and deleted after); any failure removes the sibling.
* ``save_safetensors(tensors, path, metadata)`` — safetensors with the header's keys sorted (safetensors itself
  writes the metadata map in hash order, which differs between runs).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import OutputBusyError, OutputExistsError, OutputNotWritableError

TICKET_MARKER_FILE = "mask.safetensors"          # metadata format "px-hub-mask"
TICKET_CONFIG_FILE = "px_config.json"            # ticket.format "px-hub-ticket"
RUN_MARKER_FILE = "recipe.yaml"                  # a fine-tuning run folder: the resolved recipe with its hash


# -- what a folder is -------------------------------------------------------------------------------------------

def safetensors_metadata(path: str | os.PathLike) -> dict | None:
    """The ``__metadata__`` of a safetensors file read from its header only (None if it is not one)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else None


def is_ticket(folder: str | os.PathLike) -> bool:
    """A folder px-hub wrote as a ticket: its mask carries the px-hub mask format marker and its px_config.json
    the ticket format marker."""
    folder = Path(folder)
    meta = safetensors_metadata(folder / TICKET_MARKER_FILE) or {}
    if meta.get("format") != "px-hub-mask":
        return False
    try:
        cfg = json.loads((folder / TICKET_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and isinstance(cfg.get("ticket"), dict) and \
        cfg["ticket"].get("format") == "px-hub-ticket"


def is_run_folder(folder: str | os.PathLike) -> bool:
    """A fine-tuning run folder px-hub made: ``recipe.yaml`` holding a recipe with its hash."""
    import yaml

    try:
        data = yaml.safe_load((Path(folder) / RUN_MARKER_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and bool(data.get("hash")) and "train" in data


def folder_kind(folder: str | os.PathLike) -> str | None:
    """``"empty"``, ``"ticket"``, ``"run"`` or None (a folder px-hub did not make, or not a folder)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return None
    if not any(folder.iterdir()):
        return "empty"
    if is_ticket(folder):
        return "ticket"
    if is_run_folder(folder):
        return "run"
    return None


# -- checks before any work -------------------------------------------------------------------------------------

def check_output(out: str | os.PathLike, overwrite: bool, *, replaceable: tuple[str, ...] = ("ticket",),
                 flag: str = "--out") -> Path:
    """Refuse an output that cannot be written or must not be replaced (see the module docstring). An empty
    existing folder is fine without ``overwrite``. Returns ``out`` as a Path; touches nothing."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputExistsError(f"{flag} {out} exists and is not a folder; pick a folder path for {flag}")
    if out.is_dir():
        kind = folder_kind(out)
        if kind != "empty":
            if not overwrite:
                raise OutputExistsError(f"{flag} {out} exists; pass --overwrite to replace it or choose another "
                                        f"{flag}")
            if kind not in replaceable:
                what = " or ".join({"ticket": "a px-hub ticket", "run": "a px-hub run folder"}[k] for k in replaceable)
                raise OutputExistsError(f"{flag} {out} is not {what}, so --overwrite will not delete it; remove it "
                                        f"yourself or choose another {flag}")
    check_writable(out, flag)
    return out


def check_writable(out: Path, flag: str = "--out") -> None:
    """The folder ``out`` will be created in (its nearest existing ancestor) must be a folder px-hub can create
    files in: proven by creating and removing a probe folder there (``os.access`` is not enough: it ignores
    read-only mounts on some systems and says yes to root)."""
    parent = out if out.is_dir() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputNotWritableError(f"{flag} {out} cannot be created: {parent} is a file, not a folder; "
                                     f"choose another {flag}")
    try:
        probe = tempfile.mkdtemp(prefix=".px-hub-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise OutputNotWritableError(f"{flag} {out} cannot be written ({e.strerror or e} in {parent}); choose a "
                                     f"writable {flag}") from None


# -- one writer per output --------------------------------------------------------------------------------------

_held: dict[str, list] = {}   # lock key -> [fd, depth]
_held_guard = threading.Lock()


def _lock_path(out: Path) -> Path:
    key = hashlib.sha256(os.fspath(out.resolve()).encode()).hexdigest()[:32]
    base = Path(tempfile.gettempdir()) / f"px-hub-locks-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    base.mkdir(mode=0o700, exist_ok=True)
    return base / f"{key}.lock"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike):
    """Hold an exclusive lock on ``out`` (a ticket or run folder) for the block; another process writing the same
    output gets OutputBusyError at once. Nested use in one process is allowed."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield
        return
    path = _lock_path(Path(out))
    key = os.fspath(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(f"{out} is busy: another px-hub process is writing it; wait for it to finish or "
                                  "choose another output") from None
        try:  # the holder before us may have unlinked the file after we opened it: lock the file now at the path
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    with _held_guard:
        _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


# -- writing ----------------------------------------------------------------------------------------------------

def build_atomically(out: str | os.PathLike, build: Callable[[Path], None], replace: bool,
                     replaceable: tuple[str, ...] = ("ticket",)) -> None:
    """``build(tmp)`` a hidden sibling of ``out``, then move it into place, holding ``output_lock(out)``. What is
    at ``out`` by then is decided at the swap: nothing or an empty folder is replaced; a folder px-hub made (of a
    kind in ``replaceable``) only when ``replace``; anything else is refused (OutputExistsError). On any failure
    the sibling is removed and ``out`` is as it was."""
    out = Path(out)
    with output_lock(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        tmp = out.parent / f".{out.name}.partial-{token}"
        tmp.mkdir()
        try:
            build(tmp)
            kind = folder_kind(out) if out.exists() or out.is_symlink() else "absent"
            if kind == "absent":
                os.replace(tmp, out)
            elif kind == "empty":
                out.rmdir()
                os.replace(tmp, out)
            elif not replace:
                raise OutputExistsError(f"{out} appeared while it was being written; pass --overwrite to replace "
                                        "it or choose another output")
            elif kind not in replaceable:
                raise OutputExistsError(f"{out} is not a px-hub ticket, so it is not replaced; remove it yourself "
                                        "or choose another output")
            else:
                old = out.parent / f".{out.name}.old-{token}"
                os.replace(out, old)
                try:
                    os.replace(tmp, out)
                except BaseException:
                    os.replace(old, out)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def save_safetensors(tensors: Mapping, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with the JSON header's keys sorted, so identical content gives identical
    bytes; written to ``path.tmp`` and renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = Path(f"{path}.tmp")
    save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata is not None else None)
    with open(tmp, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= n:  # same keys and values: never longer; pad with spaces as safetensors does
            f.seek(8)
            f.write(text + b" " * (n - len(text)))
        else:  # pragma: no cover - defensive: rewrite the whole file
            f.seek(8 + n)
            data = f.read()
            n2 = (len(text) + 7) // 8 * 8
            f.seek(0)
            f.write(n2.to_bytes(8, "little") + text + b" " * (n2 - len(text)) + data)
            f.truncate()
    os.replace(tmp, path)
