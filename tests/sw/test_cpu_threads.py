"""The CPU kernel's thread pool (sw/cpu_threads.py): every tile exactly once, workers join.

Bit-exactness of the kernels at any thread count is tested in test_cpu_kernel.py; here the
hand-out protocol itself is checked with jobs that record who computed which tile.
"""

import time

import numba
import numpy as np
import pytest
from numba import njit

from xnorflow.sw import cpu_kernel as ck
from xnorflow.sw import cpu_threads as ct
from xnorflow.sw import reference


@njit(nogil=True)
def _count_job(ctrl, gen, ntiles, counts, owner, arrivals, wait_polls):
    """Each thread numbers itself when it takes its first tile and then holds that tile
    (bounded) until a second thread has taken one too, so a working pool must show two
    owners. ``counts[t]`` counts computations."""
    me = -1
    while True:
        t = ct.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        if me < 0:
            me = ct._fetch_add(arrivals, 0, 1)
            for _ in range(wait_polls):
                if ct._load_acquire(arrivals, 0) >= 2:
                    break
                ct._cpu_relax()
        ct._fetch_add(counts, t, 1)
        owner[t] = me
        ct.tile_done(ctrl)


def _run_counting(ntiles: int, threads: int, wait_polls: int):
    counts = np.zeros(ntiles, np.int64)
    owner = np.full(ntiles, -1, np.int64)
    arrivals = np.zeros(1, np.int64)
    ct.run(_count_job, ntiles, (counts, owner, arrivals, wait_polls), threads)
    return counts, owner


def _run_joined(tries: int = 5):
    """A 16-tile job on 2 threads whose tile 0 waits (~5 s of polls) for the worker; on a
    loaded machine (pytest -n 2 on 2 cores) the worker can miss that window once, so up to
    ``tries`` jobs run until one shows both owners. Every job computes every tile once."""
    for _ in range(tries):
        counts, owner = _run_counting(16, 2, 200_000_000)
        assert counts.tolist() == [1] * 16
        if set(owner.tolist()) == {0, 1}:
            break
    return counts, owner


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("ntiles", [1, 2, 7, 64])
def test_every_tile_exactly_once(threads, ntiles):
    for _ in range(20):  # many jobs in a row: generations must never mix
        counts, owner = _run_counting(ntiles, threads, 0)
        assert counts.tolist() == [1] * ntiles
        assert (owner >= 0).all()


def test_a_worker_joins_and_takes_tiles():
    # tile 0 holds its taker until a second thread arrives (up to ~seconds of polls), so a
    # pool whose worker never starts or never sees the job fails here
    counts, owner = _run_joined()
    assert counts.tolist() == [1] * 16
    assert set(owner.tolist()) == {0, 1}


def test_park_then_run_again():
    ct.park()
    counts, owner = _run_joined()  # the job wakes the parked worker
    assert counts.tolist() == [1] * 16 and set(owner.tolist()) == {0, 1}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba sees only one CPU")
@pytest.mark.parametrize("parallel", ["pool", "prange"])
def test_gemm_two_threads_both_strategies(parallel, monkeypatch):
    monkeypatch.setattr(ck, "PARALLEL", parallel)
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2**64, (256, 64), dtype=np.uint64)
    w = rng.integers(0, 2**64, (256, 64), dtype=np.uint64)
    assert np.array_equal(ck.xnor_gemm(a, w, threads=2), reference.xnor_gemm(a, w))


def test_joined_workers_are_counted_back_out():
    # a worker that joins a job counts itself active until it is back in its nogil spin; the
    # caller waits for that (so neither thread blocks on the GIL at a job's edge). The count
    # must balance: if it drifted up, every later job would wait out _ACTIVE_POLLS.
    for _ in range(30):
        _run_counting(16, 2, 0)
    counts, owner = _run_joined()  # the worker certainly joined this one
    assert set(owner.tolist()) == {0, 1}
    deadline = time.monotonic() + 5.0
    while ct._POOL.ctrl[ct._ACTIVE] != 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert ct._POOL.ctrl[ct._ACTIVE] == 0


@njit(nogil=True)
def _role_job(ctrl, gen, ntiles, role, sync, wait_polls):
    """Records whether the caller (gen > 0) or a worker (gen < 0) took each tile. Each holds
    its first tile (bounded) until the other has taken one (``sync``: tiles taken by the
    caller, by workers), so both take tiles even on a loaded machine, where either may
    start late."""
    first = True
    while True:
        t = ct.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        me, other = (0, 1) if gen > 0 else (1, 0)
        role[t] = me
        ct._fetch_add(sync, me, 1)
        if first:
            for _ in range(wait_polls):
                if ct._load_acquire(sync, other) >= 1:
                    break
                ct._cpu_relax()
        first = False
        ct.tile_done(ctrl)


def test_caller_takes_the_front_workers_the_back():
    # so each thread keeps the same images from one layer to the next
    for _ in range(10):
        role = np.full(64, -1, np.int64)
        ct.run(_role_job, 64, (role, np.zeros(2, np.int64), 200_000_000), 2)
        assert (role >= 0).all()
        k = int((role == 0).sum())
        assert 1 <= k < 64  # both took tiles: the caller a prefix, the worker the rest
        assert role.tolist() == [0] * k + [1] * (64 - k)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_job_of_more_tiles_than_one_launch_holds(threads, monkeypatch):
    monkeypatch.setattr(ct, "_MAX_TILES", 5)  # launched in parts of 5 tiles
    for ntiles in (5, 6, 17):
        counts, owner = _run_counting(ntiles, threads, 0)
        assert counts.tolist() == [1] * ntiles
