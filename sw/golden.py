"""The golden model: the executable definition of a compiled network's integer semantics.

Every other backend (PyTorch deploy mode, CPU kernels, Amaranth simulation, RTL on Icarus and
Verilator, a real board) is compared bit for bit against this module. It is written for
clarity, not speed: packed words, explicit im2col on segments, and the encoding contract
(:mod:`xnorflow.sw.encoding`) for every decision.

For a layer with input map ``x`` of shape ``(H, W, C)`` holding unsigned ``B``-bit values
(or +-1 bits when ``signed_input``), weights ``w[n, dy, dx, c]`` in {-1, +1}, stride ``s`` and
spatial padding ``p`` (padded pixels are -1, i.e. bit 0 in every plane), the hardware
accumulator of output ``(y, x, n)`` is::

    A[y, x, n] = sum_b 2^b * P_b[y, x, n]
    P_b[y, x, n] = sum_{dy, dx, c} [bit_b(x[s*y+dy-p, s*x+dx-p, c]) == bit(w[n, dy, dx, c])]

(``B = 1`` for binary input, where ``P`` alone is the accumulator and ``dot = 2P - K``).
A threshold layer then outputs ``sum_j thr(A, T[n, j], pol[n])`` (one bit when ``out_bits``
is 1) and pools the map; the integer layer outputs ``score = score_mul * A + score_offset``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import encoding as enc
from .ir import CompiledModel, Layer

DEFAULT_WIDTH = 32


def layer_input_planes(layer: Layer, x) -> np.ndarray:
    """Bit-planes ``(B, N, H, W, C)`` of a layer's input batch ``x`` of shape ``(N, H, W, C)``.

    ``x`` holds bits (``signed_input``) or unsigned ``in_bits``-bit integers.
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (layer.in_h, layer.in_w, layer.in_c):
        raise ValueError(
            f"layer {layer.name!r}: input batch shape {x.shape}, expected "
            f"(N, {layer.in_h}, {layer.in_w}, {layer.in_c})"
        )
    return enc.value_planes(x, layer.in_bits)


def im2col_segments(planes, kh: int, kw: int, stride: int, pad: int, width: int) -> np.ndarray:
    """Packed im2col on segments.

    ``planes`` is ``(B, N, H, W, C)`` bits. Each pixel is packed into ``Cw = ceil(C / width)``
    words (activation pad bits 0); the map is padded spatially with all-zero segments (the
    value -1, or 0 for unsigned planes); output ``(B, N, Ho, Wo, kh*kw*Cw)`` words with the
    window's segments in ``(dy, dx)`` row-major order.
    """
    b, n, h, w, c = planes.shape
    words = enc.pack_bits(planes, width, enc.ACT_PAD_BIT)  # (B, N, H, W, Cw)
    cw = words.shape[-1]
    padded = np.zeros((b, n, h + 2 * pad, w + 2 * pad, cw), dtype=words.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = words
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (w + 2 * pad - kw) // stride + 1
    ys, xs = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    cols = [
        padded[:, :, dy : dy + ys : stride, dx : dx + xs : stride]
        for dy in range(kh)
        for dx in range(kw)
    ]
    return np.concatenate(cols, axis=-1)


def pack_weights(layer: Layer, width: int) -> np.ndarray:
    """Weights ``(out_c, kh*kw*Cw)`` packed per segment with weight pad bits 1."""
    w = np.asarray(layer.weights).reshape(layer.out_c, layer.kh * layer.kw, layer.in_c)
    return enc.pack_segments(w, width, enc.WEIGHT_PAD_BIT)


def layer_accumulators(layer: Layer, x, width: int = DEFAULT_WIDTH) -> np.ndarray:
    """Hardware accumulators ``A`` of shape ``(N, Ho, Wo, out_c)`` before pooling."""
    planes = layer_input_planes(layer, x)
    cols = im2col_segments(planes, layer.kh, layer.kw, layer.stride, layer.pad, width)
    wts = pack_weights(layer, width)
    # P_b[..., n] = sum over words of popcount(XNOR); loop over output channels for memory.
    p = np.stack([enc.xnor_popcount(cols, wts[o]) for o in range(layer.out_c)], axis=-1)
    return enc.accumulate_planes(p)


def output_stage(layer: Layer, acc) -> np.ndarray:
    """Apply the layer's output stage to accumulators ``(N, Ho, Wo, out_c)``.

    Threshold layers give ``(N, out_h, out_w, out_c)`` unsigned values (bits when
    ``out_bits == 1``) after pooling; integer layers give scores ``(N, out_c)``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if layer.output == "integer":
        score = layer.score_mul * acc + np.asarray(layer.score_offset, dtype=np.int64)
        return score.reshape(acc.shape[0], layer.out_c)
    t = np.asarray(layer.thresholds, dtype=np.int64)
    levels = sum(
        enc.threshold_bits(acc, t[:, j], layer.polarity).astype(np.int64) for j in range(t.shape[1])
    )
    levels = levels.astype(np.uint8)
    if layer.pool_k > 1:
        levels = np.stack(
            [enc.pool_bits(m, layer.pool_k, layer.pool_stride, layer.pool_ops) for m in levels]
        )
    return levels


@dataclass
class GoldenResult:
    """Everything the golden model computed for a batch.

    ``activations[i]`` is layer ``i``'s output map ``(N, H, W, C)`` (hidden layers),
    ``accumulators[i]`` its pre-pooling accumulators, ``scores`` the last layer's integer
    scores ``(N, classes)``, ``logits = scale * scores`` and ``predictions`` the first argmax.
    """

    activations: list[np.ndarray]
    accumulators: list[np.ndarray]
    scores: np.ndarray
    logits: np.ndarray
    predictions: np.ndarray


def run(model: CompiledModel, pixels, width: int = DEFAULT_WIDTH) -> GoldenResult:
    """Run a compiled model on ``uint8`` images ``(N, H, W, C)`` (or one image ``(H, W, C)``)."""
    px = np.asarray(pixels)
    if px.ndim == 3:
        px = px[None]
    if px.shape[1:] != (model.in_h, model.in_w, model.in_c):
        raise ValueError(
            f"images have shape {px.shape[1:]}, the model expects "
            f"{(model.in_h, model.in_w, model.in_c)}"
        )
    first = model.layers[0]
    x = enc.quantize_pixels(px, first.in_bits)
    acts, accs = [], []
    for layer in model.layers:
        acc = layer_accumulators(layer, x, width)
        accs.append(acc)
        x = output_stage(layer, acc)
        if layer.output == "threshold":
            acts.append(x)
    scores = x
    last = model.layers[-1]
    return GoldenResult(
        activations=acts,
        accumulators=accs,
        scores=scores,
        logits=last.scale * scores.astype(np.float64),
        predictions=enc.argmax_first(scores),
    )
