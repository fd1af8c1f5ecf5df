"""Run a per-case function over many cases in worker processes, with a progress bar and one error for all failures."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from tqdm import tqdm

from nnssl.errors import NnsslError

Item = TypeVar("Item")
Result = TypeVar("Result")
# Workers start from a clean, single-threaded fork server that imported the worker's module once (forking the parent
# could inherit ITK/torch/blosc2 thread pools in a broken state). Spawning, as nnunetv2 does, re-imports torch,
# SimpleITK and nnunetv2 in every worker of every pool: seconds each. Where there is no fork server (Windows), spawn.
START_METHODS = ("forkserver", "spawn")
# At most this many failures are spelled out in the error; the rest are counted.
MAX_LISTED_FAILURES = 10


def map_cases(
    fn: Callable[[Item], Result],
    items: Sequence[Item],
    num_processes: int,
    desc: str,
) -> list[Result | None]:
    """``[fn(item) for item in items]`` in ``num_processes`` workers (in this process if ``num_processes <= 1``).

    A case that raises :class:`NnsslError` does not stop the others; after all cases ran, one NnsslError lists every
    failed case. Any other exception is a bug and propagates at once.

    Args:
        fn: a picklable top-level function.
        items: its arguments, one per case.
        num_processes: worker processes.
        desc: progress-bar label.

    Returns:
        The results in input order.

    Raises:
        NnsslError: some cases failed (listed), or a worker process died (e.g. killed for lack of memory).
    """
    results: list[Result | None] = [None] * len(items)
    failures: list[str] = []
    with tqdm(total=len(items), desc=desc, unit="case") as bar:
        if num_processes <= 1 or len(items) <= 1:
            for index, item in enumerate(items):
                try:
                    results[index] = fn(item)
                except NnsslError as err:
                    failures.append(str(err))
                bar.update()
        else:
            context = _context(fn)
            workers = min(num_processes, len(items))
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                    futures: dict[Future, int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            try:
                                results[futures[future]] = future.result()
                            except NnsslError as err:
                                failures.append(str(err))
                            bar.update()
            except BrokenProcessPool:
                raise NnsslError(f"{desc}: a worker process died (probably killed for lack of memory); rerun with "
                                 f"fewer workers, e.g. -np {max(1, workers // 2)}; finished cases are kept") from None
    if failures:
        listed = " | ".join(failures[:MAX_LISTED_FAILURES])
        more = f" | ... and {len(failures) - MAX_LISTED_FAILURES} more" if len(failures) > MAX_LISTED_FAILURES else ""
        raise NnsslError(f"{desc}: {len(failures)} of {len(items)} case(s) failed: {listed}{more}")
    return results


def _context(fn: Callable) -> multiprocessing.context.BaseContext:
    """The start method's context, with ``fn``'s module preloaded in the fork server (used while it is not running)."""
    method = next(m for m in START_METHODS if m in multiprocessing.get_all_start_methods())
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([getattr(fn, "func", fn).__module__])
    return context
