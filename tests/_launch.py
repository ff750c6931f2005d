"""Two-process runs for tests. ``accelerate.debug_launcher`` forks its workers; forking a process whose OpenMP
thread pool is already in use (any earlier torch test) can deadlock the children. So the launcher runs inside a
freshly *spawned* interpreter, which then forks two clean workers (gloo on CPU)."""
from __future__ import annotations

import multiprocessing as mp


def _launch(fn, args, num_processes):
    from accelerate import debug_launcher

    import px_hub  # noqa: F401  (torchvision CPU fix, timm registrations)

    debug_launcher(fn, args=args, num_processes=num_processes)


def run_processes(fn, args=(), num_processes: int = 2, timeout: float = 300) -> None:
    """Run ``fn(*args)`` in ``num_processes`` processes with torch.distributed initialised; ``fn`` must be a
    module-level function (it is pickled). Raises if any worker fails or the run exceeds ``timeout`` seconds."""
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_launch, args=(fn, tuple(args), num_processes))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        raise TimeoutError(f"{fn.__name__} on {num_processes} processes did not finish in {timeout} s")
    if p.exitcode != 0:
        raise RuntimeError(f"{fn.__name__} on {num_processes} processes failed (exit code {p.exitcode})")
