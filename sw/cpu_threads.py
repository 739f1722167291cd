"""A small spinning thread pool for the CPU kernel's tile loops (numba ``nogil`` functions).

Why not ``numba.prange``: a ``parallel=True`` launch costs about 50 us here (workqueue layer,
measured by ``benchmarks/cpu_kernel.py``, "launch overhead"), even with one thread, and a
sleeping worker is woken through the kernel (futex, an inter-processor interrupt under KVM);
the benchmark's GEMM and conv take 0.15-0.3 ms, so the launch alone ate most of what a second
thread could give. This pool keeps its workers in a short busy-wait after each job:

* the calling thread publishes a job (a numba function and its arguments), then works on it
  itself; workers that are spinning see the new generation within a few hundred
  nanoseconds, return to Python, call the same function and take tiles too;
* tiles are handed out one at a time by an atomic compare-and-swap on a word that also
  holds the job's generation (the caller from the front, workers from the back: see
  :func:`grab`), so a worker that arrives late (asleep, or descheduled by the
  OS on a shared machine) takes no tile at all and cannot slow the caller down: whoever is
  running does the work, and every tile is computed the same way by whichever thread takes
  it (results never depend on the thread count or the timing);
* the caller then waits (busy, in ``nogil`` code) until every tile has been finished and
  every worker that joined is back in its ``nogil`` spin;
* a worker spins for at most :data:`SPIN_SECONDS` after its last job, then sleeps on an
  event; the next job wakes it (it then joins that job late, or the next one).

The GIL is never contended at a job's edges: a worker that sees a new job waits (``nogil``)
until the caller has taken a tile, i.e. has left Python for the job, before it returns to
Python itself; and the caller leaves its wait only when the workers that joined are back in
``nogil`` code (the ``active`` count). Without this hand-off one of the two threads blocked on
the GIL at the start or end of every job, and a thread blocked on the GIL sleeps in the kernel
(futex; a wake-up is an inter-processor interrupt under KVM), a large share of a job as short
as the benchmark's 0.3 ms GEMM.

numba's cache keys a compiled function on its own source file only, so a job that calls
:func:`grab` must not be cached (``cache=False``; ``sw/cpu_kernel.py``'s ``_JOB_JIT``): a
cached one would keep an old hand-out protocol after this file changed, and hang.

A job function has the signature ``fn(ctrl, gen, ntiles, *args)``; it loops
``t = grab(ctrl, gen, ntiles)`` until ``t < 0``, computes tile ``t`` and calls
``tile_done(ctrl)``. Use :func:`run` to launch one.
"""

from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["SPIN_SECONDS", "grab", "tile_done", "run", "park"]

#: How long an idle worker busy-waits for the next job before it sleeps (seconds). Back-to-back
#: calls (a network's layers, a batch loop) stay within it; an idle process stops using CPU
#: after it.
SPIN_SECONDS = 0.002

_JIT = {"cache": True, "nogil": True}

# ctrl words (int64): the published generation, the tile range still to hand out
# (gen << 44 | front << 22 | back: tiles front .. back - 1), the number of tiles finished, a
# park flag (spinning workers go to sleep), the number of workers that joined a job and are
# not yet back in their nogil spin, and the first tile of this launch (see run: a job of more
# than _MAX_TILES tiles is launched in parts).
_GEN, _NEXT, _DONE, _STOP, _ACTIVE, _BASE = 0, 8, 16, 24, 32, 40  # a 64-byte cache line each
_CTRL_LEN = 48
_TILE_BITS = 22
_TILE_MASK = (1 << _TILE_BITS) - 1
_GEN_MASK = (1 << (63 - 2 * _TILE_BITS)) - 1  # 19 bits: a stale grab needs 524,288 jobs to pass
#: Most tiles one launch hands out (22 bits each for the front and back counters).
_MAX_TILES = _TILE_MASK
#: Polls the caller waits, after the last tile, for joined workers to leave Python (bounds the
#: wait if another Python thread holds the GIL; a worker's return takes a few microseconds).
_ACTIVE_POLLS = 20000

_ARCH = platform.machine().lower()


def _ptr(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [idx])


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """``arr[idx]`` as an atomic acquire load (never hoisted out of a spin loop)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):
    """``arr[idx] = val`` as an atomic release store."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, val), codegen


@intrinsic
def _fetch_add(typingctx, arr, idx, val):
    """Atomically ``arr[idx] += val``; returns the old value (sequentially consistent)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return types.int64(arr, idx, val), codegen


@intrinsic
def _cas(typingctx, arr, idx, expected, new):
    """Compare-and-swap ``arr[idx]``: returns the value found (success iff it is ``expected``)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _ptr(context, builder, sig.args[0], args[0], args[1])
        e = context.cast(builder, args[2], sig.args[2], types.int64)
        n = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(ptr, e, n, "seq_cst", "seq_cst")
        return builder.extract_value(res, 0)

    return types.int64(arr, idx, expected, new), codegen


@intrinsic
def _cpu_relax(typingctx):
    """A spin-loop hint: ``pause`` on x86, ``yield`` on ARM, nothing elsewhere."""

    def codegen(context, builder, sig, args):
        mod = builder.module
        if _ARCH in ("x86_64", "amd64", "i686", "x86"):
            fn = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        elif _ARCH in ("aarch64", "arm64"):
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
            fn = cgutils.get_or_insert_function(mod, fnty, "llvm.aarch64.hint")
            builder.call(fn, [ir.Constant(ir.IntType(32), 1)])  # 1 = YIELD
        return context.get_dummy_value()

    return types.void(), codegen


@njit(**_JIT)
def grab(ctrl, gen, ntiles):
    """The next tile of job ``gen`` for the calling thread, or -1 when none is left.

    The caller (``gen > 0``) takes tiles from the front, workers (they are passed ``-gen``)
    from the back, until the two meet: tiles are image-ordered in every kernel, so each
    thread keeps roughly the same images from one layer to the next and reads the previous
    layer's outputs from its own cache (with tiles taken in turn, the benchmark's CNN layers
    ran slower at 2 threads in a whole network than each alone).
    """
    g = gen if gen > 0 else -gen
    back = gen < 0
    while True:
        c = _load_acquire(ctrl, _NEXT)
        if (c >> (2 * _TILE_BITS)) != (g & _GEN_MASK):
            return -1
        lo = (c >> _TILE_BITS) & _TILE_MASK
        hi = c & _TILE_MASK
        if lo >= hi:
            return -1
        if back:
            t, new = hi - 1, c - 1
        else:
            t, new = lo, c + (1 << _TILE_BITS)
        if _cas(ctrl, _NEXT, c, new) == c:
            return _load_acquire(ctrl, _BASE) + t


@njit(**_JIT)
def tile_done(ctrl):
    """Count one finished tile (after its results are written)."""
    _fetch_add(ctrl, _DONE, 1)


@njit(**_JIT)
def _publish(ctrl, gen, base, count):
    _store_release(ctrl, _STOP, 0)
    _store_release(ctrl, _DONE, 0)
    _store_release(ctrl, _BASE, base)
    _store_release(ctrl, _NEXT, ((gen & _GEN_MASK) << (2 * _TILE_BITS)) | count)
    _store_release(ctrl, _GEN, gen)


@njit(**_JIT)
def _wait_done(ctrl, ntiles):
    while _load_acquire(ctrl, _DONE) < ntiles:
        _cpu_relax()
    for _ in range(_ACTIVE_POLLS):  # let joined workers get back into nogil code first
        if _load_acquire(ctrl, _ACTIVE) <= 0:
            return
        _cpu_relax()


@njit(**_JIT)
def _spin(ctrl, last, iters, back):
    """Busy-wait up to ``iters`` polls for a generation other than ``last``; returns the one
    seen (``last`` when none came) or -1 when :func:`park` asked the workers to sleep.

    ``back``: the worker comes back from a job (it is out of Python now). On a new job the
    worker counts itself active and waits until the caller has taken a tile (so the caller
    has left Python) before it returns to Python itself.
    """
    if back:
        _fetch_add(ctrl, _ACTIVE, -1)
    for _ in range(iters):
        g = _load_acquire(ctrl, _GEN)
        if g != last:
            _fetch_add(ctrl, _ACTIVE, 1)
            for _ in range(iters):
                c = _load_acquire(ctrl, _NEXT)
                if (c >> (2 * _TILE_BITS)) != (g & _GEN_MASK) or (c >> _TILE_BITS) & _TILE_MASK:
                    break
                _cpu_relax()
            return g
        if _load_acquire(ctrl, _STOP) != 0:
            return -1
        _cpu_relax()
    return last


# polls per _spin call: short enough to re-check the deadline often, long enough that the
# Python loop around it costs nothing (a ``pause`` is tens of cycles)
_SPIN_ITERS = 2000


class _Pool:
    def __init__(self) -> None:
        self.ctrl = np.zeros(_CTRL_LEN, np.int64)
        self.gen = 0
        self.job: tuple | None = None  # (gen, fn, ntiles, args)
        self.workers: list[threading.Thread] = []
        self.wake = threading.Event()
        self.sleeping = 0
        self.state = threading.Lock()  # guards sleeping
        self.launch = threading.Lock()  # one job at a time

    def _worker(self) -> None:
        ctrl = self.ctrl
        last = int(ctrl[_GEN])
        back = False  # True after a job: the next _spin counts this worker out of it
        while True:
            deadline = time.perf_counter() + SPIN_SECONDS
            g = _spin(ctrl, last, _SPIN_ITERS, back)
            back = False
            while g == last and time.perf_counter() < deadline:
                g = _spin(ctrl, last, _SPIN_ITERS, False)
            if g == last or g < 0:  # nothing came (or parked): sleep until a job is published
                with self.state:
                    self.sleeping += 1
                    self.wake.clear()
                # a job published between the last poll and clear() would be missed: re-check
                if int(_load_gen(ctrl)) == last:
                    self.wake.wait()
                with self.state:
                    self.sleeping -= 1
                continue
            last = g
            back = True  # _spin counted this worker in
            job = self.job
            if job is None or job[0] != g:
                continue  # that job is over already
            _, fn, ntiles, args = job
            try:
                fn(ctrl, -g, ntiles, *args)  # a worker: tiles from the back
            except BaseException:  # pragma: no cover - a job that fails in a worker
                # takes no tile (numba raises before any work), so the caller finishes it
                pass

    def ensure(self, nworkers: int) -> None:
        while len(self.workers) < nworkers:
            th = threading.Thread(target=self._worker, name=f"xnorflow-cpu-{len(self.workers)}",
                                  daemon=True)
            self.workers.append(th)
            th.start()

    def run(self, fn, ntiles: int, args: tuple, threads: int) -> None:
        with self.launch:
            self.ensure(threads - 1)
            for base in range(0, ntiles, _MAX_TILES):
                count = min(_MAX_TILES, ntiles - base)
                self.gen += 1
                gen = self.gen
                self.job = (gen, fn, ntiles, args)
                _publish(self.ctrl, gen, base, count)
                with self.state:
                    if self.sleeping:
                        self.wake.set()
                fn(self.ctrl, gen, ntiles, *args)
                _wait_done(self.ctrl, count)
                self.job = None


@njit(**_JIT)
def _load_gen(ctrl):
    return _load_acquire(ctrl, _GEN)


_POOL = _Pool()


def _after_fork() -> None:  # a forked child has none of the parent's threads
    global _POOL
    _POOL = _Pool()


os.register_at_fork(after_in_child=_after_fork)


@njit(**_JIT)
def _park(ctrl):
    _store_release(ctrl, _STOP, 1)


def park() -> None:
    """Send spinning workers to sleep now instead of after :data:`SPIN_SECONDS` (e.g. before
    timing another engine on the same cores); the next job wakes them."""
    _park(_POOL.ctrl)


def run(fn, ntiles: int, args: tuple, threads: int) -> None:
    """Run job ``fn(ctrl, gen, ntiles, *args)`` on the caller and ``threads - 1`` workers."""
    if threads <= 1 or ntiles <= 1:
        ctrl = np.zeros(_CTRL_LEN, np.int64)
        for base in range(0, ntiles, _MAX_TILES):
            _publish(ctrl, 1, base, min(_MAX_TILES, ntiles - base))
            fn(ctrl, 1, ntiles, *args)
        return
    _POOL.run(fn, ntiles, args, threads)
