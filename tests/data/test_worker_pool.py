"""Worker processes (`keras_slam.data.worker_pool`): order, release, and an
error instead of a hang when workers die."""

import os
import subprocess
import sys
import textwrap

import pytest

from keras_slam.data import worker_pool


def test_results_in_order_in_workers_and_in_this_process():
    pool = worker_pool.make_pool(2)
    try:
        assert list(worker_pool.pool_map(abs, range(0, -40, -1), pool, chunksize=3)) == list(
            range(40)
        )
    finally:
        worker_pool.release_pool(pool)
    assert worker_pool.make_pool(1) is None
    assert list(worker_pool.pool_map(abs, [-2, 3], None, chunksize=3)) == [2, 3]
    worker_pool.release_pool(None)


def test_release_after_an_abandoned_map_and_on_error():
    """Work done: waits for what was submitted; an exception on its way out:
    the tasks not yet started are cancelled. Either way the pool is shut."""
    for failing in (False, True):
        pool = worker_pool.make_pool(2)
        results = worker_pool.pool_map(abs, range(200), pool, chunksize=8)
        assert next(results) == 0  # the rest is abandoned
        try:
            try:
                if failing:
                    raise ValueError("boom")
            finally:
                worker_pool.release_pool(pool)
        except ValueError:
            assert failing
        with pytest.raises(RuntimeError, match="shutdown"):
            pool.submit(abs, 1)


def test_a_dying_worker_raises_instead_of_hanging():
    pool = worker_pool.make_pool(2)
    try:
        with pytest.raises(RuntimeError, match="worker process died"):
            list(worker_pool.pool_map(os._exit, [3, 3, 3], pool, chunksize=1))
    finally:
        worker_pool.release_pool(pool)


def test_a_script_without_a_main_guard_gets_an_error_that_says_so(tmp_path):
    """Spawned workers import the main module: unguarded, each would start a
    pool of its own and die; a `multiprocessing.Pool` replaced them forever."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            from keras_slam.data import worker_pool

            pool = worker_pool.make_pool(2)
            try:
                print(list(worker_pool.pool_map(abs, [-1, -2], pool, chunksize=1)))
            finally:
                worker_pool.release_pool(pool)
            """
        )
    )
    repository = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment = dict(os.environ, PYTHONPATH=repository)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=environment, timeout=600
    )
    assert done.returncode != 0
    assert "if __name__ == '__main__':" in done.stderr and "worker process died" in done.stderr
