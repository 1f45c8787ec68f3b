"""Worker processes for the corpus writers and the synthesiser.

    pool = make_pool(num_workers)      # None for one worker: this process
    try:
        for result in pool_map(function, items, pool, chunksize=8):
            ...
    finally:
        release_pool(pool)

Workers are spawned (not forked: TensorFlow and espeak-ng hold threads and
state that a fork would copy half-made), so each imports the main module
again. A worker that dies, for whatever reason, ends the work with an error
instead of a hang: a `concurrent.futures` pool breaks where a
`multiprocessing.Pool` would start a replacement forever (what a script
without an `if __name__ == "__main__":` guard used to get).
"""

import concurrent.futures
import multiprocessing
import sys

BROKEN_POOL_MESSAGE = (
    "a worker process died before its work was done (killed, out of memory, or it "
    "could not start: workers are spawned and import the main module again, so a "
    "script that builds corpora with num_workers > 1 must do it under "
    "`if __name__ == '__main__':`)"
)


def make_pool(num_workers):
    """A pool of `num_workers` spawned processes, or None for `num_workers`
    <= 1 (the work then runs in this process)."""
    if num_workers <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn")
    )


def pool_map(function, items, pool, chunksize):
    """`function` over `items`, results in order: in `pool`'s workers
    (`chunksize` items per task) or, for `pool` None, lazily in this process.
    A dead worker raises RuntimeError(BROKEN_POOL_MESSAGE)."""
    if pool is None:
        return map(function, items)
    return _results_or_error(pool.map(function, items, chunksize=chunksize))


def _results_or_error(results):
    try:
        yield from results
    except concurrent.futures.process.BrokenProcessPool as error:
        raise RuntimeError(BROKEN_POOL_MESSAGE) from error


def release_pool(pool):
    """Ends a pool (or None) from a `finally:` block: after the work, waits
    for what was submitted (an abandoned `pool_map` included); with an
    exception on its way out, cancels the tasks not yet started first."""
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=sys.exc_info()[0] is not None)
