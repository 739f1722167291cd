"""The bit-exact encoding contract shared by every xnorflow backend.

This is the *only* place where the following are decided; PyTorch deploy mode, the golden
model, the CPU kernels, the compiler, the gateware and the testbenches all import them from
here (see ``docs/encoding.md`` for the prose version and a worked example):

* **Values and bits.** A binary value ``+1`` is bit ``1``, ``-1`` is bit ``0``.
  ``sign(0) = +1`` (:func:`sign_bits`).
* **Packing.** A vector of ``K`` bits is packed little-endian into words of ``W`` bits:
  element ``i`` is bit ``i % W`` of word ``i // W`` (:func:`pack_bits`).
* **Pad bits never agree.** Inside the last word of a segment, activation pad bits are ``0``
  and weight pad bits are ``1`` (:data:`ACT_PAD_BIT`, :data:`WEIGHT_PAD_BIT`), so
  ``P = popcount(~(a ^ w))`` counts agreements among the valid bits only and the binary dot
  product is ``dot = 2P - K`` (:func:`dot_from_popcount`).
* **Segments.** A layer's reduction vector is a sequence of *segments*, one per input pixel
  (a dense layer on a flat input has one pixel). Each segment holds that pixel's ``C``
  channels and is padded to ``ceil(C / W)`` words on its own, so a convolution window is
  ``k*k`` whole segments and im2col on packed words needs no bit shifting
  (:func:`pack_segments`).
* **Spatial padding** of a convolution is the binary value ``-1``: a padded pixel is a
  segment of all-zero words (for multi-bit inputs: the value ``0`` in every bit-plane).
* **Multi-bit inputs** (first layer, k-bit activations) are unsigned integers
  ``u in [0, 2^B)`` fed as ``B`` bit-planes, plane ``b`` holding bit ``b`` of ``u``. Each plane
  is an ordinary XNOR-popcount pass with popcount ``P_b``; the hardware accumulates
  ``A = sum_b 2^b P_b`` (:func:`accumulate_planes`) and
  ``sum_i u_i w_i = A - (2^B - 1) * n_neg`` where ``n_neg`` is the number of ``-1`` weights
  (:func:`dot_from_accumulator`).
* **Thresholds.** A binary output is ``acc >= T`` for polarity ``+1`` and ``acc <= T`` for
  polarity ``-1``; a value exactly on the threshold gives bit ``1`` either way
  (:func:`threshold_bits`). ``acc`` is always the hardware accumulator (``P`` or ``A``).
* **Pooling on bits**: max-pool of a non-decreasing function of the accumulator is OR of the
  bits, of a non-increasing one is AND (:data:`POOL_OR`, :data:`POOL_AND`, :func:`pool_bits`).
* **Argmax** over integer scores picks the lowest index among equal maxima
  (:func:`argmax_first`).
* **Input pixels** are 8-bit unsigned; a first layer with ``B`` input bits sees
  ``u = pixel >> (8 - B)`` (:func:`input_planes`).

NumPy only: this module is imported by the gateware, which never imports torch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACT_PAD_BIT",
    "WEIGHT_PAD_BIT",
    "POOL_OR",
    "POOL_AND",
    "WORD_WIDTHS",
    "PIXEL_BITS",
    "sign_bits",
    "bits_to_values",
    "words_per_segment",
    "pack_bits",
    "unpack_bits",
    "pack_segments",
    "unpack_segments",
    "popcount",
    "xnor_popcount",
    "dot_from_popcount",
    "quantize_pixels",
    "input_planes",
    "value_planes",
    "accumulate_planes",
    "dot_from_accumulator",
    "threshold_bits",
    "pool_bits",
    "argmax_first",
]

#: Bit value that pads a packed activation word (never agrees with :data:`WEIGHT_PAD_BIT`).
ACT_PAD_BIT = 0
#: Bit value that pads a packed weight word.
WEIGHT_PAD_BIT = 1
#: Pool operator codes (stored per output channel in the compiled model).
POOL_OR = 0
POOL_AND = 1
#: Word widths supported by the packers (the accelerator supports 16, 32 and 64).
WORD_WIDTHS = (8, 16, 32, 64)
#: Input pixels are unsigned integers of this many bits.
PIXEL_BITS = 8

_WORD_DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _check_width(width: int) -> type:
    if width not in _WORD_DTYPES:
        raise ValueError(f"word width must be one of {WORD_WIDTHS}, not {width!r}")
    return _WORD_DTYPES[width]


def sign_bits(x) -> np.ndarray:
    """Binarise real values to bits: ``1`` where ``x >= 0`` (so ``sign(0) = +1``), else ``0``."""
    return (np.asarray(x) >= 0).astype(np.uint8)


def bits_to_values(bits) -> np.ndarray:
    """Map bits to binary values: ``1 -> +1``, ``0 -> -1`` (as ``int32``)."""
    return np.asarray(bits).astype(np.int32) * 2 - 1


def words_per_segment(channels: int, width: int) -> int:
    """Number of ``width``-bit words that hold a segment of ``channels`` bits."""
    if channels < 1:
        raise ValueError(f"a segment needs at least one channel, not {channels}")
    return -(-channels // width)


def pack_bits(bits, width: int, pad_bit: int = ACT_PAD_BIT) -> np.ndarray:
    """Pack the last axis of a 0/1 array little-endian into ``width``-bit words.

    Element ``i`` of the last axis becomes bit ``i % width`` of word ``i // width``; bits past
    the end of the last word are ``pad_bit``. Returns an array of unsigned words whose last
    axis has ``ceil(K / width)`` entries.
    """
    dtype = _check_width(width)
    bits = np.asarray(bits)
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise ValueError("pack_bits expects an array of 0/1 bits")
    if pad_bit not in (0, 1):
        raise ValueError(f"pad_bit must be 0 or 1, not {pad_bit!r}")
    k = bits.shape[-1]
    nwords = -(-k // width) if k else 0
    padded = np.full(bits.shape[:-1] + (nwords * width,), pad_bit, dtype=np.uint64)
    padded[..., :k] = bits
    padded = padded.reshape(bits.shape[:-1] + (nwords, width))
    weights = np.left_shift(np.uint64(1), np.arange(width, dtype=np.uint64))
    words = np.bitwise_or.reduce(padded * weights, axis=-1) if width else padded
    return words.astype(dtype)


def unpack_bits(words, k: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``k`` bits of the last axis, as ``uint8``."""
    _check_width(width)
    words = np.asarray(words).astype(np.uint64)
    shifts = np.arange(width, dtype=np.uint64)
    bits = (words[..., None] >> shifts) & np.uint64(1)
    bits = bits.reshape(words.shape[:-1] + (words.shape[-1] * width,))
    if k > bits.shape[-1]:
        raise ValueError(f"asked for {k} bits from {words.shape[-1]} words of {width} bits")
    return bits[..., :k].astype(np.uint8)


def pack_segments(bits, width: int, pad_bit: int = ACT_PAD_BIT) -> np.ndarray:
    """Pack ``(..., S, C)`` bits segment by segment into ``(..., S * ceil(C / width))`` words.

    Each of the ``S`` segments (pixels) is padded to whole words on its own, as the contract
    requires; a dense layer on a flat input is the case ``S = 1``.
    """
    bits = np.asarray(bits)
    words = pack_bits(bits, width, pad_bit)
    return words.reshape(bits.shape[:-2] + (-1,))


def unpack_segments(words, segments: int, channels: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_segments`: ``(..., S * Cw)`` words -> ``(..., S, C)`` bits."""
    words = np.asarray(words)
    cw = words_per_segment(channels, width)
    if words.shape[-1] != segments * cw:
        raise ValueError(
            f"expected {segments} segments x {cw} words = {segments * cw} words, "
            f"got {words.shape[-1]}"
        )
    words = words.reshape(words.shape[:-1] + (segments, cw))
    return unpack_bits(words, channels, width)


def popcount(words) -> np.ndarray:
    """Number of set bits of each unsigned word (``np.bitwise_count``), as ``int64``."""
    return np.bitwise_count(np.asarray(words)).astype(np.int64)


def xnor_popcount(act_words, weight_words) -> np.ndarray:
    """``P = sum over words of popcount(~(a ^ w))``: agreements between two packed vectors.

    Broadcasts over leading axes and sums the last axis. Pad bits (activation 0, weight 1)
    never agree, so only valid bits are counted.
    """
    a = np.asarray(act_words)
    w = np.asarray(weight_words)
    if a.dtype != w.dtype:
        raise TypeError(f"activation words are {a.dtype} but weight words are {w.dtype}")
    return popcount(~(a ^ w)).sum(axis=-1)


def dot_from_popcount(p, k: int):
    """Binary dot product of two +-1 vectors of ``k`` valid elements: ``dot = 2P - K``."""
    return 2 * np.asarray(p, dtype=np.int64) - k


def quantize_pixels(pixels, bits: int) -> np.ndarray:
    """Quantise 8-bit input pixels to ``bits`` bits: ``u = pixel >> (8 - bits)`` (``uint8``)."""
    if not 1 <= bits <= PIXEL_BITS:
        raise ValueError(f"input bits must be in 1..{PIXEL_BITS}, not {bits}")
    px = np.asarray(pixels)
    if px.dtype != np.uint8:
        raise TypeError(f"input pixels must be uint8 (0..255), not {px.dtype}")
    return px >> np.uint8(PIXEL_BITS - bits)


def input_planes(pixels, bits: int) -> np.ndarray:
    """Bit-planes of 8-bit input pixels quantised to ``bits`` bits (:func:`quantize_pixels`).

    Returns a ``uint8`` array of shape ``(bits,) + pixels.shape`` with plane ``b`` holding
    bit ``b`` of ``u`` (plane 0 is the least significant).
    """
    return value_planes(quantize_pixels(pixels, bits), bits)


def value_planes(u, bits: int) -> np.ndarray:
    """Bit-planes of unsigned ``bits``-bit integers ``u`` (e.g. k-bit activations)."""
    u = np.asarray(u, dtype=np.int64)
    if u.size and (u.min() < 0 or u.max() >= (1 << bits)):
        raise ValueError(f"values must be in 0..{(1 << bits) - 1}")
    return np.stack([(u >> b) & 1 for b in range(bits)]).astype(np.uint8)


def accumulate_planes(plane_popcounts) -> np.ndarray:
    """Shift-add of per-plane popcounts: ``A = sum_b 2^b P_b`` (axis 0 indexes planes)."""
    p = np.asarray(plane_popcounts, dtype=np.int64)
    scale = np.left_shift(np.int64(1), np.arange(p.shape[0], dtype=np.int64))
    return np.tensordot(scale, p, axes=(0, 0))


def dot_from_accumulator(acc, k: int, in_bits: int, signed_input: bool, n_neg=None):
    """Exact integer dot product from the hardware accumulator.

    * binary +-1 input (``signed_input``, ``in_bits == 1``): ``dot = 2P - K``;
    * unsigned ``in_bits``-bit input: ``dot = sum u_i w_i = A - (2^B - 1) * n_neg``,
      ``n_neg`` = number of ``-1`` weights of the output channel.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if signed_input:
        if in_bits != 1:
            raise ValueError("signed (+-1) inputs are always one bit")
        return 2 * acc - k
    if n_neg is None:
        raise ValueError("unsigned inputs need n_neg, the number of -1 weights per channel")
    return acc - ((1 << in_bits) - 1) * np.asarray(n_neg, dtype=np.int64)


def threshold_bits(acc, t, pol) -> np.ndarray:
    """Threshold stage: bit ``1`` iff ``acc >= T`` (polarity ``+1``) or ``acc <= T`` (``-1``).

    A value exactly on the threshold gives ``1`` for both polarities. ``t`` and ``pol``
    broadcast against the last (channel) axis of ``acc``.
    """
    acc = np.asarray(acc, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    pol = np.asarray(pol)
    if pol.size and not np.isin(pol, (-1, 1)).all():
        raise ValueError("polarity must be +1 or -1")
    return np.where(pol > 0, acc >= t, acc <= t).astype(np.uint8)


def pool_bits(bits, k: int, stride: int, ops) -> np.ndarray:
    """Pool a ``(H, W, N)`` bit map over ``k x k`` windows with ``stride`` (no padding).

    ``ops[n]`` is :data:`POOL_OR` (max-pool of a non-decreasing function) or
    :data:`POOL_AND` (max-pool of a non-increasing one). Output ``(Ho, Wo, N)`` with
    ``Ho = (H - k) // stride + 1``.
    """
    bits = np.asarray(bits, dtype=np.uint8)
    h, w, n = bits.shape
    ops = np.broadcast_to(np.asarray(ops), (n,))
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"pool window {k} does not fit a {h}x{w} map")
    windows = np.stack(
        [
            bits[dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
            for dy in range(k)
            for dx in range(k)
        ]
    )
    return np.where(ops == POOL_AND, windows.min(axis=0), windows.max(axis=0)).astype(np.uint8)


def argmax_first(scores) -> np.ndarray:
    """Argmax over the last axis; among equal maxima the lowest index wins."""
    return np.argmax(np.asarray(scores), axis=-1)
