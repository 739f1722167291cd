"""Fast CPU fallback kernel: packed XNOR-popcount GEMM, binary convolution and whole networks.

Bit-exact with :mod:`xnorflow.sw.reference` and the golden model (:mod:`xnorflow.sw.golden`),
which stay the executable definition; this module only computes the same integers faster.
See ``docs/cpu-kernel.md`` for the design and ``benchmarks/cpu_kernel.py`` for measurements.

Techniques (numba, JIT-compiled on first use and cached on disk):

* **64-bit packing.** Every operand is ``uint64`` words. With activation pad bits 0 and weight
  pad bits 1 (the contract), pads always disagree, so over ``Kw`` words
  ``P = 64 * Kw - sum popcount(a ^ w)``: one XOR, one popcount and one add per word.
* **Fast popcount.** :func:`_ctpop` is a numba ``@intrinsic`` that emits LLVM's ``ctpop``;
  LLVM vectorises it (``vpopcntq`` on AVX-512 VPOPCNTDQ, a nibble-LUT ``vpshufb`` sequence on
  AVX2, ``cnt`` on ARM NEON) -- numba itself has no ``np.bitwise_count``.
* **Register blocking.** :func:`_gemm_blocked` computes a 4 x 4 block of outputs per pass over
  ``K``: 8 loads feed 16 XOR-popcount-adds, and LLVM vectorises the ``K`` loop with 16 vector
  accumulators. For short reductions (``Kw < 16`` words) :func:`_gemm_rows` vectorises over the
  output columns instead (4 rows share each weight load).
* **Packed im2col without unpacking.** The contract packs per-pixel segments, so a window row
  is a gather of whole words (``kh * kw * Cw`` of them). When ``C`` is not a multiple of 64 the
  gather *compacts* the segments into a dense bit stream (shift/or, still never unpacking to
  bits), e.g. ``C = 32``, 3x3: 5 words instead of 9. The weights are packed the same way, with
  pad bits 1, so ``P`` is unchanged (it is a sum over valid bits).
* **Bit-planes.** Multi-bit inputs are ``B`` rows per pixel, combined as
  ``A = sum_b 2^b P_b`` (:func:`xnorflow.sw.encoding.accumulate_planes`). For layers whose
  reduction is tiny compared with the word size (a first layer with one input channel: 9 valid
  bits per 64-bit word per plane) the exact identity
  ``sum_b 2^b [u_b == w] = u if w else (2^B - 1) - u`` gives
  ``A = (2^B - 1) * n_neg + sum_i (2 w_i - 1) u_i``, computed as
  ``(2^B - 1) * n_neg + 2 * sum_{w=+1} u_i - sum_i u_i`` with ``int16`` AND-adds vectorised
  over pixels (:func:`_integer_tiles`); the result is the same integer.
* **Fused threshold + pack.** The epilogue turns accumulators into output bits and writes them
  straight into packed ``uint64`` segments (pad bits 0); OR/AND pooling is then bitwise on
  words with per-channel masks. Multi-bit (DoReFa) outputs go through ``uint8`` levels.
* **Threads.** Output pixels are split into tiles of ~32 KB of accumulators and tiles run
  in parallel on a small spinning thread pool (:mod:`xnorflow.sw.cpu_threads`; tiles handed
  out one at a time; ``numba.prange`` stays selectable through :data:`PARALLEL`); every tile
  is computed independently, so any thread count gives identical bits.

Public API: :func:`xnor_gemm`, :func:`binary_matmul`, :func:`layer_accumulators`,
:func:`layer_forward`, :func:`prepare`, :func:`run` (whole networks, returns a
:class:`~xnorflow.sw.golden.GoldenResult`) and :func:`images_per_second`.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from . import cpu_threads
from . import encoding as enc
from .errors import UserError
from .golden import GoldenResult
from .ir import CompiledModel, Layer

__all__ = [
    "WIDTH",
    "xnor_gemm",
    "binary_matmul",
    "prepare",
    "PreparedLayer",
    "PreparedModel",
    "layer_accumulators",
    "layer_forward",
    "run",
    "images_per_second",
    "weight_bytes",
    "KernelInputError",
]

#: Word width of every packed operand of this kernel.
WIDTH = 64
#: Reductions of at least this many words use the 4x4 register-blocked GEMM.
BLOCKED_MIN_KW = 16
#: Target number of 64-bit accumulator entries per tile (32 KB: a tile stays in L1/L2).
TILE_ENTRIES = 4096
#: How tiles are spread over threads: ``"pool"`` (:mod:`xnorflow.sw.cpu_threads`, the
#: default: spinning workers, tiles taken one at a time) or ``"prange"`` (numba's parallel
#: loop on its threading layer; kept so the benchmark can measure one against the other).
PARALLEL = "pool"


class KernelInputError(UserError, ValueError):
    """Bad input to the CPU kernel (shape, value range, thread count); names what is wrong."""


# numba's default threading layer here is OpenMP, whose spinning barrier makes every parallel
# call take a scheduler time slice (measured: 12-24 ms instead of 1 ms) when the cores are
# shared with other processes (pytest -n 2, other users). The built-in workqueue layer waits
# passively. Chosen only if the user did not pick a layer and numba has not started its
# threads yet; workqueue is not re-entrant, so every launch holds _LAUNCH_LOCK.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LAUNCH_LOCK = threading.RLock()

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# The pool jobs are not cached: they inline cpu_threads.grab, and numba keys a cached function
# on its own source file only, so a cached job would keep an old hand-out protocol after
# sw/cpu_threads.py changed (and hang). They are compiled once per process, on the first
# call with 2+ threads (numba compiles the tile bodies into them again: a second or two).
_JOB_JIT = {**_JIT, "cache": False}

# Epilogue modes of the layer kernels.
_EPI_BITS = 0  # threshold stage, one output bit: write packed words
_EPI_LEVELS = 1  # threshold stage, multi-bit output: write uint8 levels
_EPI_NONE = 2  # integer output stage: accumulators only


# ----------------------------------------------------------------------------------------------
# popcount


@intrinsic
def _ctpop(typingctx, x):
    """LLVM ``ctpop`` of an integer (vectorisable by LLVM, unlike a table lookup)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return x(x), codegen


# ----------------------------------------------------------------------------------------------
# GEMM micro-kernels: H[r, n] = 64 * Kw - sum_k popcount(A[r, k] ^ W[n, k]) (the agreements P)
# for rows r0 <= r < r1.


@njit(**_JIT)
def _gemm_blocked(a, w, h, r0, r1, total):
    """4 x 4 register-blocked XOR-popcount; ``r1 - r0`` and ``w.shape[0]`` multiples of 4.

    Writes ``total - sum popcount(a ^ w)`` (``total = 64 * Kw``: the agreements ``P``)."""
    kw = a.shape[1]
    n = w.shape[0]
    for m0 in range(r0, r1, 4):
        a0 = a[m0]
        a1 = a[m0 + 1]
        a2 = a[m0 + 2]
        a3 = a[m0 + 3]
        for n0 in range(0, n, 4):
            w0 = w[n0]
            w1 = w[n0 + 1]
            w2 = w[n0 + 2]
            w3 = w[n0 + 3]
            s00 = s01 = s02 = s03 = np.uint64(0)
            s10 = s11 = s12 = s13 = np.uint64(0)
            s20 = s21 = s22 = s23 = np.uint64(0)
            s30 = s31 = s32 = s33 = np.uint64(0)
            for k in range(kw):
                x0 = a0[k]
                x1 = a1[k]
                x2 = a2[k]
                x3 = a3[k]
                y0 = w0[k]
                y1 = w1[k]
                y2 = w2[k]
                y3 = w3[k]
                s00 += _ctpop(x0 ^ y0)
                s01 += _ctpop(x0 ^ y1)
                s02 += _ctpop(x0 ^ y2)
                s03 += _ctpop(x0 ^ y3)
                s10 += _ctpop(x1 ^ y0)
                s11 += _ctpop(x1 ^ y1)
                s12 += _ctpop(x1 ^ y2)
                s13 += _ctpop(x1 ^ y3)
                s20 += _ctpop(x2 ^ y0)
                s21 += _ctpop(x2 ^ y1)
                s22 += _ctpop(x2 ^ y2)
                s23 += _ctpop(x2 ^ y3)
                s30 += _ctpop(x3 ^ y0)
                s31 += _ctpop(x3 ^ y1)
                s32 += _ctpop(x3 ^ y2)
                s33 += _ctpop(x3 ^ y3)
            h[m0, n0] = total - s00
            h[m0, n0 + 1] = total - s01
            h[m0, n0 + 2] = total - s02
            h[m0, n0 + 3] = total - s03
            h[m0 + 1, n0] = total - s10
            h[m0 + 1, n0 + 1] = total - s11
            h[m0 + 1, n0 + 2] = total - s12
            h[m0 + 1, n0 + 3] = total - s13
            h[m0 + 2, n0] = total - s20
            h[m0 + 2, n0 + 1] = total - s21
            h[m0 + 2, n0 + 2] = total - s22
            h[m0 + 2, n0 + 3] = total - s23
            h[m0 + 3, n0] = total - s30
            h[m0 + 3, n0 + 1] = total - s31
            h[m0 + 3, n0 + 2] = total - s32
            h[m0 + 3, n0 + 3] = total - s33


@njit(**_JIT)
def _gemm_rows(a, wt, h, r0, r1, total):
    """Column-vectorised XOR-popcount for short reductions; ``wt`` is ``(Kw, N)``.

    Four rows share every weight load and four words of ``K`` are summed per pass, so each
    accumulator load/store carries 4 popcounts; the inner loop over the ``N`` columns is what
    LLVM vectorises, which stays efficient when ``Kw`` is only a few words. ``r1 - r0`` must
    be a multiple of 4. Like :func:`_gemm_blocked` it leaves ``total - sum`` in ``h``.
    """
    kw = a.shape[1]
    n = wt.shape[1]
    k4 = kw - kw % 4
    for m0 in range(r0, r1, 4):
        h0 = h[m0]
        h1 = h[m0 + 1]
        h2 = h[m0 + 2]
        h3 = h[m0 + 3]
        for j in range(n):
            h0[j] = 0
            h1[j] = 0
            h2[j] = 0
            h3[j] = 0
        for k in range(0, k4, 4):
            x0a, x0b, x0c, x0d = a[m0, k], a[m0, k + 1], a[m0, k + 2], a[m0, k + 3]
            x1a, x1b, x1c, x1d = a[m0 + 1, k], a[m0 + 1, k + 1], a[m0 + 1, k + 2], a[m0 + 1, k + 3]
            x2a, x2b, x2c, x2d = a[m0 + 2, k], a[m0 + 2, k + 1], a[m0 + 2, k + 2], a[m0 + 2, k + 3]
            x3a, x3b, x3c, x3d = a[m0 + 3, k], a[m0 + 3, k + 1], a[m0 + 3, k + 2], a[m0 + 3, k + 3]
            wa = wt[k]
            wb = wt[k + 1]
            wc = wt[k + 2]
            wd = wt[k + 3]
            for j in range(n):
                ya = wa[j]
                yb = wb[j]
                yc = wc[j]
                yd = wd[j]
                h0[j] += (_ctpop(x0a ^ ya) + _ctpop(x0b ^ yb)) + (_ctpop(x0c ^ yc)
                                                                  + _ctpop(x0d ^ yd))
                h1[j] += (_ctpop(x1a ^ ya) + _ctpop(x1b ^ yb)) + (_ctpop(x1c ^ yc)
                                                                  + _ctpop(x1d ^ yd))
                h2[j] += (_ctpop(x2a ^ ya) + _ctpop(x2b ^ yb)) + (_ctpop(x2c ^ yc)
                                                                  + _ctpop(x2d ^ yd))
                h3[j] += (_ctpop(x3a ^ ya) + _ctpop(x3b ^ yb)) + (_ctpop(x3c ^ yc)
                                                                  + _ctpop(x3d ^ yd))
        for k in range(k4, kw):
            x0 = a[m0, k]
            x1 = a[m0 + 1, k]
            x2 = a[m0 + 2, k]
            x3 = a[m0 + 3, k]
            wk = wt[k]
            for j in range(n):
                y = wk[j]
                h0[j] += _ctpop(x0 ^ y)
                h1[j] += _ctpop(x1 ^ y)
                h2[j] += _ctpop(x2 ^ y)
                h3[j] += _ctpop(x3 ^ y)
        for j in range(n):  # the four rows are still in L1: P = total - mismatches
            h0[j] = total - h0[j]
            h1[j] = total - h1[j]
            h2[j] = total - h2[j]
            h3[j] = total - h3[j]


@njit(**_JIT)
def _gemm_tile(a, w, wt, h, r0, r1, blocked):
    total = np.uint64(64 * a.shape[1])
    if blocked:
        _gemm_blocked(a, w, h, r0, r1, total)
    else:
        _gemm_rows(a, wt, h, r0, r1, total)


@njit(parallel=True, **_JIT)
def _xnor_gemm_parallel(a, w, wt, h, tile_rows, blocked):
    m = a.shape[0]
    ntiles = (m + tile_rows - 1) // tile_rows
    for t in prange(ntiles):
        r0 = t * tile_rows
        r1 = min(m, r0 + tile_rows)
        _gemm_tile(a, w, wt, h, r0, r1, blocked)


@njit(**_JOB_JIT)
def _xnor_gemm_job(ctrl, gen, ntiles, a, w, wt, h, tile_rows, blocked):
    m = a.shape[0]
    while True:
        t = cpu_threads.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        r0 = t * tile_rows
        _gemm_tile(a, w, wt, h, r0, min(m, r0 + tile_rows), blocked)
        cpu_threads.tile_done(ctrl)


# Every parallel kernel below is a serial body over a range of tiles ``[t0, t1)``, a pool job
# (:mod:`xnorflow.sw.cpu_threads`: the threads take one tile at a time) and a ``prange``
# wrapper (kept to measure against, :data:`PARALLEL`); with one thread the body is called
# directly, so no thread hand-off (or wake-up on a busy machine) happens at all.


# ----------------------------------------------------------------------------------------------
# packed im2col (gather of whole words, or compaction of partial segments into a bit stream)


@njit(**_JIT)
def _gather_row(x, plane, img, oy, ox, kh, kw, stride, pad, c, dense, out):
    """Write the reduction vector of one output pixel and plane into ``out`` (uint64 words).

    ``x`` is ``(B, N, H, W, Cw)`` packed segments. Padded pixels are all-zero segments.
    ``dense``: compact the ``C``-bit segments into one bit stream instead of copying words.
    """
    hin = x.shape[2]
    win = x.shape[3]
    cw = x.shape[4]
    if dense and cw == 1 and 64 % c == 0:
        # segments of C | 64 bits never straddle a word: segment t goes to bit t*C
        nout = (kh * kw * c + 63) // 64
        for j in range(nout):
            out[j] = np.uint64(0)
        t = 0
        for dy in range(kh):
            iy = oy * stride + dy - pad
            for dx in range(kw):
                ix = ox * stride + dx - pad
                if iy >= 0 and iy < hin and ix >= 0 and ix < win:
                    bit = t * c
                    out[bit >> 6] |= x[plane, img, iy, ix, 0] << np.uint64(bit & 63)
                t += 1
        return
    pos = 0
    cur = np.uint64(0)
    off = 0
    for dy in range(kh):
        iy = oy * stride + dy - pad
        for dx in range(kw):
            ix = ox * stride + dx - pad
            inside = iy >= 0 and iy < hin and ix >= 0 and ix < win
            if not dense:
                if inside:
                    for j in range(cw):
                        out[pos + j] = x[plane, img, iy, ix, j]
                else:
                    for j in range(cw):
                        out[pos + j] = np.uint64(0)
                pos += cw
            else:
                for j in range(cw):
                    nbits = min(64, c - 64 * j)
                    v = x[plane, img, iy, ix, j] if inside else np.uint64(0)
                    ob = off
                    cur |= v << np.uint64(ob)
                    off = ob + nbits
                    if off >= 64:
                        out[pos] = cur
                        pos += 1
                        off -= 64
                        if ob > 0:
                            cur = v >> np.uint64(64 - ob)
                        else:
                            cur = np.uint64(0)
    if dense and off > 0:
        out[pos] = cur


# ----------------------------------------------------------------------------------------------
# epilogue: accumulators -> (accumulator store), packed threshold bits or uint8 levels


@njit(**_JIT)
def _epilogue(acc, p0, np_, mode, tsig, tval, acc_out, store_acc, bits_out, levels_out):
    """``acc`` is ``(tile_pixels, N)`` int64 for output pixels ``p0 .. p0 + np_``.

    Threshold: level = number of ``j`` with ``sig[n] * acc >= sig[n] * T[n, j]`` (``tval``
    holds ``sig * T``), i.e. ``acc >= T`` for polarity +1 and ``acc <= T`` for -1.
    """
    n = acc.shape[1]
    nthr = tval.shape[1]
    tval0 = np.ascontiguousarray(tval[:, 0])
    for i in range(np_):
        p = p0 + i
        row = acc[i]
        if store_acc:
            for j in range(n):
                acc_out[p, j] = row[j]
        if mode == _EPI_BITS:
            cwo = bits_out.shape[1]
            for q in range(cwo):
                word = np.uint64(0)
                top = min(64, n - 64 * q)
                for b in range(top):
                    ch = 64 * q + b
                    # d >= 0  <=>  bit 1; the sign bit of d, inverted, is the output bit
                    d = tsig[ch] * row[ch] - tval0[ch]
                    word |= ((~np.uint64(d)) >> np.uint64(63)) << np.uint64(b)
                bits_out[p, q] = word
        elif mode == _EPI_LEVELS:
            for j in range(n):
                s = tsig[j] * row[j]
                lv = 0
                for t in range(nthr):
                    if s >= tval[j, t]:
                        lv += 1
                levels_out[p, j] = lv


# ----------------------------------------------------------------------------------------------
# layer kernels


@njit(**_JIT)
def _popcount_tiles(
    t0, t1, x, kh, kw, stride, pad, ho, wo, c, dense, kwords, w, wt, blocked, tile_px,
    mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    """XOR-popcount layer, tiles ``t0 .. t1`` of ``tile_px`` output pixels each: gathered,
    multiplied and finished (threshold + pack, or accumulators) one after the other."""
    nplanes = x.shape[0]
    nimg = x.shape[1]
    npix = nimg * ho * wo
    nout = tval.shape[0]
    rows_cap = ((tile_px * nplanes + 3) // 4) * 4
    for t in range(t0, t1):
        p0 = t * tile_px
        np_ = min(npix - p0, tile_px)
        a = np.zeros((rows_cap, kwords), np.uint64)
        h = np.empty((rows_cap, w.shape[0]), np.uint64)
        img = p0 // (ho * wo)
        rem = p0 - img * ho * wo
        oy = rem // wo
        ox = rem - oy * wo
        for i in range(np_):
            for b in range(nplanes):
                _gather_row(x, b, img, oy, ox, kh, kw, stride, pad, c, dense, a[i * nplanes + b])
            ox += 1
            if ox == wo:
                ox = 0
                oy += 1
                if oy == ho:
                    oy = 0
                    img += 1
        rows = ((np_ * nplanes + 3) // 4) * 4
        _gemm_tile(a, w, wt, h, 0, rows, blocked)  # h = P, the agreements
        if mode == _EPI_BITS and not store_acc and nplanes == 1:
            # fused threshold + pack straight from the popcounts: sig * P - sig * T >= 0
            for i in range(np_):
                hi = h[i]
                for q in range(bits_out.shape[1]):
                    word = np.uint64(0)
                    for b in range(min(64, nout - 64 * q)):
                        j = 64 * q + b
                        d = tsig[j] * np.int64(hi[j]) - tval[j, 0]
                        word |= ((~np.uint64(d)) >> np.uint64(63)) << np.uint64(b)
                    bits_out[p0 + i, q] = word
            continue
        acc = np.zeros((np_, nout), np.int64)
        for i in range(np_):
            ai = acc[i]
            for b in range(nplanes):
                hb = h[i * nplanes + b]
                for j in range(nout):
                    ai[j] += np.int64(hb[j]) << np.int64(b)
        _epilogue(acc, p0, np_, mode, tsig, tval, acc_out, store_acc, bits_out, levels_out)


@njit(**_JOB_JIT)
def _popcount_job(
    ctrl, gen, ntiles, x, kh, kw, stride, pad, ho, wo, c, dense, kwords, w, wt, blocked,
    tile_px, mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    while True:
        t = cpu_threads.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        _popcount_tiles(t, t + 1, x, kh, kw, stride, pad, ho, wo, c, dense, kwords, w, wt,
                        blocked, tile_px, mode, tsig, tval, acc_out, store_acc, bits_out,
                        levels_out)
        cpu_threads.tile_done(ctrl)


@njit(parallel=True, **_JIT)
def _popcount_par(
    ntiles, x, kh, kw, stride, pad, ho, wo, c, dense, kwords, w, wt, blocked, tile_px,
    mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    for t in prange(ntiles):
        _popcount_tiles(t, t + 1, x, kh, kw, stride, pad, ho, wo, c, dense, kwords, w, wt,
                        blocked, tile_px, mode, tsig, tval, acc_out, store_acc, bits_out,
                        levels_out)


@njit(**_JIT)
def _iand_cols(ut, wmask, ht, npx):
    """``ht[n, p] = sum_k (ut[k, p] & wmask[n, k])`` (int16) for pixels ``p < npx``.

    ``wmask`` is ``-1`` where the weight is +1 and ``0`` where it is -1, so ``ht`` is the sum
    of the inputs under +1 weights: an AND and an add per term. Vectorised over the pixels
    (a long, unit-stride loop), three taps per pass over each accumulator row.
    """
    kk = ut.shape[0]
    n = wmask.shape[0]
    k3 = kk - kk % 3
    for j in range(n):
        hj = ht[j]
        for p in range(npx):
            hj[p] = 0
        for k in range(0, k3, 3):
            wa = wmask[j, k]
            wb = wmask[j, k + 1]
            wc = wmask[j, k + 2]
            ua = ut[k]
            ub = ut[k + 1]
            uc = ut[k + 2]
            for p in range(npx):
                hj[p] += (ua[p] & wa) + (ub[p] & wb) + (uc[p] & wc)
        for k in range(k3, kk):
            wa = wmask[j, k]
            ua = ut[k]
            for p in range(npx):
                hj[p] += ua[p] & wa


@njit(**_JIT)
def _integer_tiles(
    t0, t1, u, kh, kw, stride, pad, ho, wo, wmask, base, tile_px,
    mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    """Small-reduction multi-bit layer: ``A = base[n] + 2 * sum_{w=+1} u_i - sum_i u_i``.

    That is ``base[n] + sum_i (2 w_i - 1) u_i``, exact. ``u`` is ``(N, H, W, C)`` uint8
    levels, ``wmask`` is ``(N_out, kh * kw * C)`` int16 (``-1`` for weight +1, else 0) and
    ``base[n] = (2^B - 1) * n_neg[n]``. Padded pixels have ``u = 0``. The windows of a tile
    of output pixels are gathered transposed (``(K, pixels)`` int16), then reduced.
    """
    nimg, hin, win, c = u.shape
    nout = wmask.shape[0]
    kk = wmask.shape[1]
    band = max(1, tile_px // wo)  # output rows per tile
    nbands = (ho + band - 1) // band
    cap = band * wo
    for t in range(t0, t1):
        img = t // nbands
        oy0 = (t - img * nbands) * band
        oy1 = min(ho, oy0 + band)
        p0 = (img * ho + oy0) * wo
        np_ = (oy1 - oy0) * wo
        ut = np.empty((kk, cap), np.int16)
        ht = np.empty((nout, cap), np.int16)
        usum = np.zeros(cap, np.int64)
        # gather: row by row, so each tap copies a run of input pixels (vectorisable)
        for dy in range(kh):
            for dx in range(kw):
                for ci in range(c):
                    tap = (dy * kw + dx) * c + ci
                    row = ut[tap]
                    for oy in range(oy0, oy1):
                        iy = oy * stride + dy - pad
                        r0 = (oy - oy0) * wo
                        if iy < 0 or iy >= hin:
                            for ox in range(wo):
                                row[r0 + ox] = 0
                        else:
                            for ox in range(wo):
                                ix = ox * stride + dx - pad
                                inside = ix >= 0 and ix < win
                                row[r0 + ox] = np.int16(u[img, iy, ix, ci]) if inside else 0
                    for i in range(np_):
                        usum[i] += row[i]
        _iand_cols(ut, wmask, ht, np_)
        if mode == _EPI_BITS and not store_acc:
            # fused threshold + pack, vectorised over the tile's pixels:
            # sig * (base - usum + 2h) >= sig * T  <=>  sig * (2h - usum) - thr >= 0,
            # thr = sig * T - sig * base
            wq = np.empty(tile_px, np.uint64)
            for q in range(bits_out.shape[1]):
                for i in range(np_):
                    wq[i] = 0
                for b in range(min(64, nout - 64 * q)):
                    j = 64 * q + b
                    sj = tsig[j]
                    thr = tval[j, 0] - sj * base[j]
                    hj = ht[j]
                    sh = np.uint64(b)
                    for i in range(np_):
                        d = sj * (2 * np.int64(hj[i]) - usum[i]) - thr
                        wq[i] |= ((~np.uint64(d)) >> np.uint64(63)) << sh
                for i in range(np_):
                    bits_out[p0 + i, q] = wq[i]
            continue
        acc = np.empty((np_, nout), np.int64)
        for i in range(np_):
            for j in range(nout):
                acc[i, j] = base[j] - usum[i] + 2 * np.int64(ht[j, i])
        _epilogue(acc, p0, np_, mode, tsig, tval, acc_out, store_acc, bits_out, levels_out)


@njit(**_JOB_JIT)
def _integer_job(
    ctrl, gen, ntiles, u, kh, kw, stride, pad, ho, wo, wmask, base, tile_px,
    mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    while True:
        t = cpu_threads.grab(ctrl, gen, ntiles)
        if t < 0:
            return
        _integer_tiles(t, t + 1, u, kh, kw, stride, pad, ho, wo, wmask, base, tile_px,
                       mode, tsig, tval, acc_out, store_acc, bits_out, levels_out)
        cpu_threads.tile_done(ctrl)


@njit(parallel=True, **_JIT)
def _integer_par(
    ntiles, u, kh, kw, stride, pad, ho, wo, wmask, base, tile_px,
    mode, tsig, tval, acc_out, store_acc, bits_out, levels_out,
):
    for t in prange(ntiles):
        _integer_tiles(t, t + 1, u, kh, kw, stride, pad, ho, wo, wmask, base, tile_px,
                       mode, tsig, tval, acc_out, store_acc, bits_out, levels_out)


# ----------------------------------------------------------------------------------------------
# pooling and plane packing (cheap next to the layers: serial)


@njit(**_JIT)
def _pool_words(bits, k, stride, or_mask, and_mask, out):
    """OR/AND pooling on packed words: ``(N, H, W, Cw) -> (N, Ho, Wo, Cw)`` per-channel masks."""
    nimg, _, _, cw = bits.shape
    ho = out.shape[1]
    wo = out.shape[2]
    for img in range(nimg):
        for oy in range(ho):
            for ox in range(wo):
                for q in range(cw):
                    vo = np.uint64(0)
                    va = ~np.uint64(0)
                    for dy in range(k):
                        for dx in range(k):
                            v = bits[img, oy * stride + dy, ox * stride + dx, q]
                            vo |= v
                            va &= v
                    out[img, oy, ox, q] = (vo & or_mask[q]) | (va & and_mask[q])


@njit(**_JIT)
def _pool_levels(lv, k, stride, use_min, out):
    """Max (or min where ``use_min``) pooling of ``uint8`` levels ``(N, H, W, C)``."""
    nimg, _, _, c = lv.shape
    ho = out.shape[1]
    wo = out.shape[2]
    for img in range(nimg):
        for oy in range(ho):
            for ox in range(wo):
                for j in range(c):
                    mx = np.uint8(0)
                    mn = np.uint8(255)
                    for dy in range(k):
                        for dx in range(k):
                            v = lv[img, oy * stride + dy, ox * stride + dx, j]
                            mx = max(mx, v)
                            mn = min(mn, v)
                    out[img, oy, ox, j] = mn if use_min[j] else mx


@njit(**_JIT)
def _pack_planes(u, nplanes, out):
    """Bit-planes of ``uint8`` levels ``(N, H, W, C)`` packed per pixel: ``(B, N, H, W, Cw)``."""
    nimg, hh, ww, c = u.shape
    cw = out.shape[4]
    for img in range(nimg):
        for y in range(hh):
            for xx in range(ww):
                for b in range(nplanes):
                    for q in range(cw):
                        word = np.uint64(0)
                        top = min(64, c - 64 * q)
                        for i in range(top):
                            v = np.uint64(u[img, y, xx, 64 * q + i])
                            bit = (v >> np.uint64(b)) & np.uint64(1)
                            word |= bit << np.uint64(i)
                        out[b, img, y, xx, q] = word


# ----------------------------------------------------------------------------------------------
# threads


@contextmanager
def _numba_threads(threads: int | None):
    """Run with ``threads`` threads (``None``: numba's current setting); yields the count.

    With the thread pool (:data:`PARALLEL` ``"pool"``, the default) nothing global changes:
    the count is passed to the pool, so a call pays for no numba setting (several
    microseconds a call here, a few per cent of the benchmark's GEMM). For ``"prange"``
    numba's thread count is set and restored, and tiles are handed out one at a time
    (``numba.set_parallel_chunksize(1)``, dynamic scheduling) rather than in one static block
    per thread, so a thread that the OS deschedules on a shared machine does not hold up the
    whole layer.
    """
    if threads is not None and (
        not isinstance(threads, int) or not 1 <= threads <= numba.config.NUMBA_NUM_THREADS
    ):
        raise KernelInputError(
            f"threads must be an int in 1..{numba.config.NUMBA_NUM_THREADS} "
            f"(numba's NUMBA_NUM_THREADS on this machine), not {threads!r}"
        )
    if PARALLEL != "prange":
        yield threads if threads is not None else numba.get_num_threads()
        return
    with _LAUNCH_LOCK:
        old = numba.get_num_threads()
        old_chunk = numba.set_parallel_chunksize(1)
        if threads is not None:
            numba.set_num_threads(threads)
        try:
            yield numba.get_num_threads()
        finally:
            numba.set_num_threads(old)
            numba.set_parallel_chunksize(old_chunk)


# ----------------------------------------------------------------------------------------------
# GEMM API


def _as_u64_words(a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-view packed words of any contract width as 64-bit words (same ``P``).

    Narrow words are grouped little-endian; a missing word is padded with an activation word
    of zeros against a weight word of ones, which never agree, so ``P`` is unchanged.
    """
    if a.dtype != w.dtype:
        raise TypeError(f"activation words are {a.dtype} but weight words are {w.dtype}")
    if a.dtype == np.uint64:
        return np.ascontiguousarray(a), np.ascontiguousarray(w)
    if a.dtype not in (np.uint8, np.uint16, np.uint32):
        raise TypeError(f"packed words must be uint8/16/32/64, not {a.dtype}")
    per = 8 // a.dtype.itemsize
    extra = (-a.shape[1]) % per
    if extra:
        a = np.concatenate([a, np.zeros((a.shape[0], extra), a.dtype)], axis=1)
        ones = np.full((w.shape[0], extra), np.iinfo(w.dtype).max, w.dtype)
        w = np.concatenate([w, ones], axis=1)
    a = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
    w = np.ascontiguousarray(w).astype(w.dtype.newbyteorder("<"), copy=False)
    return a.view("<u8").astype(np.uint64), w.view("<u8").astype(np.uint64)


def _pad_rows(w: np.ndarray, multiple: int, fill) -> np.ndarray:
    extra = (-w.shape[0]) % multiple
    if not extra:
        return np.ascontiguousarray(w)
    return np.concatenate([w, np.full((extra,) + w.shape[1:], fill, w.dtype)])


def _pad_cols(w: np.ndarray, multiple: int, act: bool = False) -> np.ndarray:
    """Pad ``Kw`` to a multiple of ``multiple`` words so LLVM's vector loop has no scalar tail.

    Extra weight words are all ones and extra activation words all zeros: they always
    disagree, so ``P = 64 * Kw_padded - sum popcount(a ^ w)`` is unchanged.
    """
    extra = (-w.shape[1]) % multiple
    if not extra:
        return np.ascontiguousarray(w)
    fill = np.uint64(0) if act else ~np.uint64(0)
    return np.concatenate([w, np.full((w.shape[0], extra), fill, np.uint64)], axis=1)


def xnor_gemm(act_words, weight_words, threads: int | None = None) -> np.ndarray:
    """``P[m, n] = sum_j popcount(~(A[m, j] ^ W[n, j]))`` -- fast :func:`reference.xnor_gemm`.

    ``A (M, Kw)`` and ``W (N, Kw)`` are packed words (any contract width; 64-bit is native)
    with the contract's padding. Returns ``int64 (M, N)``; ``dot = 2P - K``.
    """
    a = np.asarray(act_words)
    w = np.asarray(weight_words)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise KernelInputError(
            f"xnor_gemm needs (M, Kw) and (N, Kw) operands, got {a.shape}, {w.shape}"
        )
    a, w = _as_u64_words(a, w)
    m, n, kw = a.shape[0], w.shape[0], a.shape[1]
    if m == 0 or n == 0:
        return np.zeros((m, n), np.int64)
    a4 = _pad_rows(a, 4, 0)
    w4 = _pad_rows(w, 4, ~np.uint64(0))
    blocked = kw >= BLOCKED_MIN_KW
    if blocked:
        a4, w4 = _pad_cols(a4, 8, act=True), _pad_cols(w4, 8)
        kw = w4.shape[1]
    wt = np.ascontiguousarray(w4.T) if not blocked else np.zeros((1, 1), np.uint64)
    h = np.empty((a4.shape[0], w4.shape[0]), np.uint64)
    tile = max(4, min(a4.shape[0], (TILE_ENTRIES // max(1, w4.shape[0])) // 4 * 4))
    with _numba_threads(threads) as used:
        if used == 1:
            _gemm_tile(a4, w4, wt, h, 0, a4.shape[0], blocked)
        elif PARALLEL == "prange":
            _xnor_gemm_parallel(a4, w4, wt, h, tile, blocked)
        else:
            ntiles = -(-a4.shape[0] // tile)
            cpu_threads.run(_xnor_gemm_job, ntiles, (a4, w4, wt, h, tile, blocked), used)
    p = h.view(np.int64)  # the kernels left P = 64 * Kw - mismatches: < 2^63, no copy
    return p if p.shape == (m, n) else np.ascontiguousarray(p[:m, :n])


def binary_matmul(a_bits, w_bits, threads: int | None = None) -> np.ndarray:
    """Integer matmul of +-1 matrices given as bits: ``(M, K) x (N, K)^T -> (M, N)`` dots."""
    a_bits = np.asarray(a_bits)
    w_bits = np.asarray(w_bits)
    k = a_bits.shape[-1]
    a = enc.pack_bits(a_bits, WIDTH, enc.ACT_PAD_BIT)
    w = enc.pack_bits(w_bits, WIDTH, enc.WEIGHT_PAD_BIT)
    return enc.dot_from_popcount(xnor_gemm(a, w, threads), k)


# ----------------------------------------------------------------------------------------------
# layers


@dataclass
class PreparedLayer:
    """A layer's weights and constants in the kernel's layout (built once by :func:`prepare`)."""

    layer: Layer
    path: str  # "popcount" or "integer"
    dense: bool  # popcount path: compact partial segments into a dense bit stream
    kwords: int  # popcount path: words per reduction row
    w: np.ndarray  # (N4, Kw8) uint64, rows padded to a multiple of 4 (and, for the blocked
    #               GEMM, columns to a multiple of 8) with all-ones weight pad words
    wt: np.ndarray  # (Kw, N4) uint64 (column-vectorised GEMM), or a 1x1 dummy
    blocked: bool
    wmask: np.ndarray  # integer path: (N, K) int16, -1 where the weight is +1, else 0
    base: np.ndarray  # integer path: (2^B - 1) * n_neg, int64 (N,)
    tsig: np.ndarray  # int64 (N,): polarity (1 for integer layers)
    tval: np.ndarray  # int64 (N, J): polarity * thresholds
    or_mask: np.ndarray  # uint64 (Cwo,): channels pooled with OR
    and_mask: np.ndarray  # uint64 (Cwo,): channels pooled with AND
    use_min: np.ndarray  # bool (N,): multi-bit levels pooled with min
    tile_px: int

    @property
    def weight_bytes(self) -> int:
        """Bytes of packed weights (``N * Kw * 8``) used by the popcount path."""
        return int(self.layer.out_c * self.kwords * 8)


@dataclass
class PreparedModel:
    """A compiled model with every layer prepared; pass it to :func:`run` to skip packing."""

    model: CompiledModel
    layers: list[PreparedLayer]


def _choose_path(layer: Layer) -> tuple[str, bool, int]:
    k = layer.k_valid
    seg_words = layer.kh * layer.kw * enc.words_per_segment(layer.in_c, WIDTH)
    dense_words = enc.words_per_segment(k, WIDTH)
    dense = dense_words < seg_words
    kwords = dense_words if dense else seg_words
    # int16 AND-adds (32 per 512-bit vector) beat B popcount rows of kwords words
    # (8 per vector) when K < 2 * B * kwords (a conservative rule); unsigned inputs only.
    # int16 sums: K * (2^B - 1) must fit (always true when K < 2 * B * kwords and B <= 8).
    small = k * ((1 << layer.in_bits) - 1) <= np.iinfo(np.int16).max
    if not layer.signed_input and layer.in_bits > 1 and k < 2 * layer.in_bits * kwords and small:
        return "integer", dense, kwords
    return "popcount", dense, kwords


def prepare_layer(layer: Layer) -> PreparedLayer:
    """Pack one layer's weights and fold its output-stage constants for the kernels."""
    layer.validate()
    path, dense, kwords = _choose_path(layer)
    n = layer.out_c
    wb = np.asarray(layer.weights, dtype=np.uint8)
    if dense:
        w = enc.pack_bits(wb.reshape(n, -1), WIDTH, enc.WEIGHT_PAD_BIT)
    else:
        w = enc.pack_segments(wb.reshape(n, layer.kh * layer.kw, layer.in_c), WIDTH,
                              enc.WEIGHT_PAD_BIT)
    w = _pad_rows(w.astype(np.uint64), 4, ~np.uint64(0))
    blocked = kwords >= BLOCKED_MIN_KW
    if blocked:
        w = _pad_cols(w, 8)
    wt = np.ascontiguousarray(w.T) if not blocked else np.zeros((1, 1), np.uint64)
    wmask = np.zeros((1, 1), np.int16)
    base = np.zeros(1, np.int64)
    if path == "integer":
        wmask = np.ascontiguousarray(-(wb.reshape(n, -1).astype(np.int16)))
        base = ((1 << layer.in_bits) - 1) * layer.n_neg.astype(np.int64)
    cwo = enc.words_per_segment(n, WIDTH)
    if layer.output == "threshold":
        pol = np.asarray(layer.polarity, dtype=np.int64)
        tsig = np.ascontiguousarray(pol)
        tval = np.ascontiguousarray(pol[:, None] * np.asarray(layer.thresholds, np.int64))
    else:
        tsig = np.ones(n, np.int64)
        tval = np.zeros((n, 1), np.int64)
    ops = np.broadcast_to(
        np.asarray(layer.pool_ops if layer.pool_ops is not None else enc.POOL_OR), (n,)
    )
    use_min = np.ascontiguousarray(ops == enc.POOL_AND)
    and_bits = np.zeros(cwo * WIDTH, np.uint8)
    and_bits[:n] = use_min
    or_bits = np.zeros(cwo * WIDTH, np.uint8)
    or_bits[:n] = ~use_min
    and_mask = enc.pack_bits(and_bits, WIDTH).astype(np.uint64)
    or_mask = enc.pack_bits(or_bits, WIDTH).astype(np.uint64)
    if path == "integer":  # int16 accumulators: 4x as many fit in the same bytes
        tile_px = max(4, 4 * TILE_ENTRIES // max(1, n) // 4 * 4)
    else:
        tile_px = max(4, TILE_ENTRIES // max(1, w.shape[0] * layer.in_bits) // 4 * 4)
    return PreparedLayer(
        layer=layer, path=path, dense=dense, kwords=kwords, w=w, wt=wt, blocked=blocked,
        wmask=wmask, base=base, tsig=tsig, tval=tval, or_mask=or_mask, and_mask=and_mask,
        use_min=use_min, tile_px=int(tile_px),
    )


def prepare(model: CompiledModel) -> PreparedModel:
    """Validate ``model`` and prepare every layer (weights packed, thresholds folded)."""
    model.validate()
    return PreparedModel(model=model, layers=[prepare_layer(layer) for layer in model.layers])


def weight_bytes(prepared: PreparedModel | PreparedLayer) -> int:
    """Bytes of packed weights the kernel keeps (popcount layout) for a layer or a model."""
    if isinstance(prepared, PreparedLayer):
        return prepared.weight_bytes
    return sum(p.weight_bytes for p in prepared.layers)


class _Act:
    """A layer input/output in whichever form is at hand: packed planes and/or uint8 levels."""

    def __init__(self, bits: int, packed: np.ndarray | None = None,
                 levels: np.ndarray | None = None, channels: int = 0):
        self.bits = bits
        self.packed = packed  # (B, N, H, W, Cw) uint64
        self.levels = levels  # (N, H, W, C) uint8
        self.channels = channels

    def get_packed(self) -> np.ndarray:
        if self.packed is None:
            u = self.levels
            cw = enc.words_per_segment(u.shape[3], WIDTH)
            out = np.empty((self.bits,) + u.shape[:3] + (cw,), np.uint64)
            _pack_planes(u, self.bits, out)
            self.packed = out
        return self.packed

    def get_levels(self) -> np.ndarray:
        if self.levels is None:
            p = self.packed
            if self.bits != 1:
                raise AssertionError("multi-bit activations always keep their levels")
            self.levels = enc.unpack_bits(p[0], self.channels, WIDTH)
        return self.levels


def _forward(pl: PreparedLayer, x: _Act, keep_acc: bool,
             used: int | None = None) -> tuple[_Act | np.ndarray, np.ndarray]:
    """One layer on ``used`` threads (``None``: numba's setting): returns (output activation
    or integer scores, accumulators or a dummy)."""
    layer = pl.layer
    n = layer.out_c
    ho, wo = layer.conv_h, layer.conv_w
    nimg = (x.levels if x.levels is not None else x.packed[0]).shape[0]
    npix = nimg * ho * wo
    if layer.output == "integer":
        mode = _EPI_NONE
        keep_acc = True
    elif layer.out_bits == 1:
        mode = _EPI_BITS
    else:
        mode = _EPI_LEVELS
    acc_out = np.empty((npix, n) if keep_acc else (1, 1), np.int64)
    cwo = enc.words_per_segment(n, WIDTH)
    bits_out = np.empty((npix, cwo) if mode == _EPI_BITS else (1, 1), np.uint64)
    levels_out = np.empty((npix, n) if mode == _EPI_LEVELS else (1, 1), np.uint8)
    epi = (mode, pl.tsig, pl.tval, acc_out, keep_acc, bits_out, levels_out)
    if used is None:
        used = numba.get_num_threads()
    serial = used == 1
    if pl.path == "integer":
        u = np.ascontiguousarray(x.get_levels())
        ntiles = nimg * -(-ho // max(1, pl.tile_px // wo))
        args = (u, layer.kh, layer.kw, layer.stride, layer.pad, ho, wo, pl.wmask, pl.base,
                pl.tile_px, *epi)
        if serial:
            _integer_tiles(0, ntiles, *args)
        elif PARALLEL == "prange":
            _integer_par(ntiles, *args)
        else:
            cpu_threads.run(_integer_job, ntiles, args, used)
    else:
        xp = x.get_packed()
        ntiles = -(-npix // pl.tile_px)
        args = (xp, layer.kh, layer.kw, layer.stride, layer.pad, ho, wo, layer.in_c, pl.dense,
                pl.w.shape[1], pl.w, pl.wt, pl.blocked, pl.tile_px, *epi)
        if serial:
            _popcount_tiles(0, ntiles, *args)
        elif PARALLEL == "prange":
            _popcount_par(ntiles, *args)
        else:
            cpu_threads.run(_popcount_job, ntiles, args, used)
    acc = acc_out.reshape(nimg, ho, wo, n) if keep_acc else acc_out
    if mode == _EPI_NONE:
        score = layer.score_mul * acc + np.asarray(layer.score_offset, dtype=np.int64)
        return score.reshape(nimg, n), acc
    if mode == _EPI_BITS:
        words = bits_out.reshape(nimg, ho, wo, cwo)
        if layer.pool_k > 1:
            pooled = np.empty((nimg, layer.out_h, layer.out_w, cwo), np.uint64)
            _pool_words(words, layer.pool_k, layer.pool_stride, pl.or_mask, pl.and_mask, pooled)
            words = pooled
        return _Act(1, packed=words[None], channels=n), acc
    lv = levels_out.reshape(nimg, ho, wo, n)
    if layer.pool_k > 1:
        pooled = np.empty((nimg, layer.out_h, layer.out_w, n), np.uint8)
        _pool_levels(lv, layer.pool_k, layer.pool_stride, pl.use_min, pooled)
        lv = pooled
    return _Act(layer.out_bits, levels=lv, channels=n), acc


def _input_act(layer: Layer, x) -> _Act:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (layer.in_h, layer.in_w, layer.in_c):
        raise KernelInputError(
            f"layer {layer.name!r}: input batch shape {x.shape}, expected "
            f"(N, {layer.in_h}, {layer.in_w}, {layer.in_c})"
        )
    if x.size and (x.min() < 0 or x.max() >= (1 << layer.in_bits)):
        raise KernelInputError(
            f"layer {layer.name!r}: inputs must be in 0..{(1 << layer.in_bits) - 1}, "
            f"got {x.min()}..{x.max()}"
        )
    return _Act(layer.in_bits, levels=np.ascontiguousarray(x, dtype=np.uint8),
                channels=layer.in_c)


def layer_accumulators(layer: Layer | PreparedLayer, x, threads: int | None = None) -> np.ndarray:
    """Hardware accumulators ``(N, Ho, Wo, out_c)`` int64 -- same as the golden model's.

    ``x`` is ``(N, H, W, C)`` bits (binary input) or unsigned ``in_bits``-bit levels.
    """
    pl = layer if isinstance(layer, PreparedLayer) else prepare_layer(layer)
    with _numba_threads(threads) as used:
        _, acc = _forward(pl, _input_act(pl.layer, x), keep_acc=True, used=used)
    return acc


def layer_forward(layer: Layer | PreparedLayer, x, threads: int | None = None) -> np.ndarray:
    """A layer's output, as ``golden.output_stage(layer, golden.layer_accumulators(layer, x))``.

    Threshold layers give ``(N, out_h, out_w, out_c)`` uint8 values; integer layers give
    int64 scores ``(N, out_c)``.
    """
    pl = layer if isinstance(layer, PreparedLayer) else prepare_layer(layer)
    with _numba_threads(threads) as used:
        out, _ = _forward(pl, _input_act(pl.layer, x), keep_acc=False, used=used)
    return out if isinstance(out, np.ndarray) else out.get_levels()


# ----------------------------------------------------------------------------------------------
# whole networks


def run(
    model: CompiledModel | PreparedModel,
    pixels,
    threads: int | None = None,
    *,
    intermediates: bool = True,
    stats: dict | None = None,
) -> GoldenResult:
    """Run a compiled model on ``uint8`` images ``(N, H, W, C)`` (or one ``(H, W, C)``).

    Returns a :class:`~xnorflow.sw.golden.GoldenResult` equal, bit for bit, to
    :func:`xnorflow.sw.golden.run`. ``intermediates=False`` skips the per-layer activations
    and accumulators (both lists come back empty) -- the fast path for throughput.
    ``threads``: numba threads (``None``: numba's current setting); results do not depend on
    it. If ``stats`` is a dict it receives ``seconds``, ``images``, ``images_per_second`` and
    ``threads`` of this call (packing the weights is outside the timing when a
    :class:`PreparedModel` is passed).
    """
    prepared = model if isinstance(model, PreparedModel) else prepare(model)
    m = prepared.model
    px = np.asarray(pixels)
    if px.ndim == 3:
        px = px[None]
    if px.ndim != 4 or px.shape[1:] != (m.in_h, m.in_w, m.in_c):
        raise KernelInputError(
            f"images have shape {px.shape[1:]}, the model expects {(m.in_h, m.in_w, m.in_c)} "
            "(H, W, C) uint8 pixels"
        )
    first = m.layers[0]
    with _numba_threads(threads) as used:
        t0 = time.perf_counter()
        x = _Act(first.in_bits, levels=np.ascontiguousarray(enc.quantize_pixels(px, first.in_bits)),
                 channels=m.in_c)
        acts, accs = [], []
        for pl in prepared.layers:
            x, acc = _forward(pl, x, keep_acc=intermediates, used=used)
            if intermediates:
                accs.append(acc)
                if isinstance(x, _Act):
                    acts.append(x.get_levels())
        seconds = time.perf_counter() - t0
    scores = x
    last = m.layers[-1]
    if stats is not None:
        stats.update(seconds=seconds, images=int(px.shape[0]), threads=int(used),
                     images_per_second=px.shape[0] / seconds if seconds > 0 else float("inf"))
    return GoldenResult(
        activations=acts,
        accumulators=accs,
        scores=scores,
        logits=last.scale * scores.astype(np.float64),
        predictions=enc.argmax_first(scores),
    )


def images_per_second(
    model: CompiledModel | PreparedModel,
    pixels,
    threads: int | None = None,
    repeats: int = 5,
) -> float:
    """Median images/s of :func:`run` (fast path) on ``pixels``, after one warm-up call.

    The warm-up call triggers (or loads the cached) JIT compilation, which is not timed;
    weights are packed once, outside the timing.
    """
    if repeats < 1:
        raise KernelInputError(f"repeats must be >= 1, not {repeats}")
    prepared = model if isinstance(model, PreparedModel) else prepare(model)
    run(prepared, pixels, threads, intermediates=False)
    rates = []
    for _ in range(repeats):
        st: dict = {}
        run(prepared, pixels, threads, intermediates=False, stats=st)
        rates.append(st["images_per_second"])
    return float(np.median(rates))
