"""Reference CPU kernel: packed XNOR-popcount GEMM in plain NumPy.

The slow-but-obvious baseline (Larq Compute Engine keeps ``reference.h`` beside its optimised
kernels for the same reason): the fast kernel in :mod:`xnorflow.sw.cpu_kernel` is tested
against it, and it is tested against float matmul of +-1 tensors.
"""

from __future__ import annotations

import numpy as np

from . import encoding as enc


def xnor_gemm(act_words, weight_words, chunk: int = 256) -> np.ndarray:
    """``P[m, n] = sum_j popcount(~(A[m, j] ^ W[n, j]))`` for packed ``A (M, Kw)``, ``W (N, Kw)``.

    Both operands must use the contract's padding (activation pad bits 0, weight pad bits 1)
    so that ``P`` counts agreements among valid bits; ``dot = 2P - K``. Works for any word
    dtype; rows are processed ``chunk`` at a time to bound memory.
    """
    a = np.asarray(act_words)
    w = np.asarray(weight_words)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"xnor_gemm needs (M, Kw) and (N, Kw) operands, got {a.shape}, {w.shape}")
    out = np.empty((a.shape[0], w.shape[0]), dtype=np.int64)
    for m0 in range(0, a.shape[0], chunk):
        blk = a[m0 : m0 + chunk, None, :]
        out[m0 : m0 + chunk] = enc.popcount(~(blk ^ w[None, :, :])).sum(axis=-1)
    return out


def binary_matmul(a_bits, w_bits, width: int = 64) -> np.ndarray:
    """Integer matmul of +-1 matrices given as bits: ``(M, K) x (N, K)^T -> (M, N)`` dots."""
    a_bits = np.asarray(a_bits)
    w_bits = np.asarray(w_bits)
    k = a_bits.shape[-1]
    a = enc.pack_bits(a_bits, width, enc.ACT_PAD_BIT)
    w = enc.pack_bits(w_bits, width, enc.WEIGHT_PAD_BIT)
    return enc.dot_from_popcount(xnor_gemm(a, w), k)


def run(model, px: np.ndarray, width: int = 64):
    """A whole network through the reference GEMM kernel: im2col, :func:`xnor_gemm` per plane.

    A second, independent accumulation path (one GEMM over all output channels instead of
    the golden model's per-channel broadcast); output stages are the golden model's.
    """
    from . import golden

    x = enc.quantize_pixels(px, model.layers[0].in_bits)
    acts, accs = [], []
    for layer in model.layers:
        planes = golden.layer_input_planes(layer, x)
        cols = golden.im2col_segments(planes, layer.kh, layer.kw, layer.stride, layer.pad, width)
        wts = golden.pack_weights(layer, width)
        b, n, ho, wo, kw = cols.shape
        p = xnor_gemm(cols.reshape(-1, kw), wts).reshape(b, n, ho, wo, layer.out_c)
        acc = enc.accumulate_planes(p)
        accs.append(acc)
        x = golden.output_stage(layer, acc)
        if layer.output == "threshold":
            acts.append(x)
    scores = x
    return golden.GoldenResult(acts, accs, scores, model.layers[-1].scale * scores,
                               enc.argmax_first(scores))
