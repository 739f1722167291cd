"""Property tests of the encoding contract (sw/encoding.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.sw import encoding as enc

widths = st.sampled_from([8, 16, 32, 64])


@st.composite
def bit_arrays(draw, max_lead=3, max_k=200):
    lead = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=max_lead)))
    k = draw(st.integers(1, max_k))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 2, lead + (k,)).astype(np.uint8)


@given(bit_arrays(), widths, st.sampled_from([0, 1]))
def test_pack_unpack_round_trip(bits, width, pad):
    words = enc.pack_bits(bits, width, pad)
    k = bits.shape[-1]
    assert words.shape == bits.shape[:-1] + (-(-k // width),)
    assert words.dtype == np.dtype(f"uint{width}")
    assert np.array_equal(enc.unpack_bits(words, k, width), bits)
    # the pad bits hold the pad value
    full = enc.unpack_bits(words, words.shape[-1] * width, width)
    assert (full[..., k:] == pad).all()


def test_pack_is_little_endian():
    bits = np.zeros(70, dtype=np.uint8)
    bits[[0, 3, 64, 69]] = 1
    words = enc.pack_bits(bits, 64)
    assert words.tolist() == [(1 << 0) | (1 << 3), (1 << 0) | (1 << 5)]
    assert enc.pack_bits(bits, 64, enc.WEIGHT_PAD_BIT)[1] == np.uint64(
        ((1 << 64) - 1) ^ (((1 << 6) - 1) ^ ((1 << 0) | (1 << 5)))
    )


def test_sign_of_zero_is_plus_one():
    assert enc.sign_bits([-0.5, 0.0, -0.0, 1e-30, -1e-30]).tolist() == [0, 1, 1, 1, 0]
    assert enc.bits_to_values([0, 1]).tolist() == [-1, 1]


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 300), widths,
       st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_packed_dot_equals_float_matmul(m, n, k, width, seed):
    rng = np.random.default_rng(seed)
    a = rng.choice([-1.0, 1.0], (m, k))
    w = rng.choice([-1.0, 1.0], (n, k))
    aw = enc.pack_bits(enc.sign_bits(a), width, enc.ACT_PAD_BIT)
    ww = enc.pack_bits(enc.sign_bits(w), width, enc.WEIGHT_PAD_BIT)
    p = enc.xnor_popcount(aw[:, None, :], ww[None, :, :])
    assert np.array_equal(enc.dot_from_popcount(p, k), (a @ w.T).astype(np.int64))


@given(st.integers(1, 4), st.integers(1, 8), st.integers(1, 150), widths,
       st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_bit_planes_equal_integer_matmul(m, bits, k, width, seed):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 1 << bits, (m, k))
    w = rng.choice([-1, 1], (3, k))
    planes = enc.value_planes(u, bits)  # (B, m, k)
    ww = enc.pack_bits(enc.sign_bits(w), width, enc.WEIGHT_PAD_BIT)
    p = enc.xnor_popcount(enc.pack_bits(planes, width)[:, :, None, :], ww[None, None])
    acc = enc.accumulate_planes(p)  # (m, 3)
    n_neg = (w < 0).sum(axis=1)
    dot = enc.dot_from_accumulator(acc, k, bits, False, n_neg)
    assert np.array_equal(dot, u @ w.T)


def test_input_planes_quantise_by_shift():
    px = np.array([0, 1, 127, 128, 200, 255], dtype=np.uint8)
    assert enc.quantize_pixels(px, 1).tolist() == [0, 0, 0, 1, 1, 1]
    assert enc.quantize_pixels(px, 8).tolist() == px.tolist()
    planes = enc.input_planes(px, 3)
    u = (planes.astype(int) * (1 << np.arange(3))[:, None]).sum(axis=0)
    assert u.tolist() == (px >> 5).tolist()
    with pytest.raises(TypeError):
        enc.input_planes(px.astype(np.int32), 3)
    with pytest.raises(ValueError):
        enc.input_planes(px, 9)


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_threshold_and_pool_equal_float_chain(seed):
    """BN -> sign -> max-pool in float equals integer threshold -> OR/AND pooling on bits."""
    rng = np.random.default_rng(seed)
    h, w, n, k_valid = 6, 6, 5, 27
    p = rng.integers(0, k_valid + 1, (h, w, n))  # popcounts of a binary conv
    dot = 2 * p - k_valid
    gamma = rng.normal(size=n)
    gamma[0] = 0.0  # a constant channel
    beta, mean, var = rng.normal(size=n), rng.normal(size=n) * 3, rng.uniform(0.5, 2, n)
    eps = 1e-5
    y = gamma * (dot - mean) / np.sqrt(var + eps) + beta
    ref = enc.sign_bits(y)
    ref_pool = ref.reshape(3, 2, 3, 2, n).max(axis=(1, 3))
    # fold: y >= 0  <=>  dot >= mean - beta*sqrt(var+eps)/gamma (gamma>0), <= (gamma<0);
    # dot = 2P - K  ->  P >= (c + K) / 2
    t, pol = np.zeros(n, np.int64), np.ones(n, np.int64)
    for c in range(n):
        if gamma[c] == 0:
            t[c] = 0 if beta[c] >= 0 else k_valid + 1
            continue
        c_dot = mean[c] - beta[c] * np.sqrt(var[c] + eps) / gamma[c]
        if gamma[c] > 0:
            t[c] = int(np.ceil((c_dot + k_valid) / 2))
        else:
            t[c], pol[c] = int(np.floor((c_dot + k_valid) / 2)), -1
    bits = enc.threshold_bits(p, t, pol)
    assert np.array_equal(bits, ref)
    # chain 1: BN -> sign -> max-pool. Max of +-1 values is OR of bits, whatever the slope.
    or_ops = np.full(n, enc.POOL_OR)
    assert np.array_equal(enc.pool_bits(bits, 2, 2, or_ops), ref_pool)
    # chain 2 (XNOR-Net block order): max-pool -> BN -> sign. For a decreasing BN the max
    # of the pre-activation is the min of the bits: AND.
    dot_pool = dot.reshape(3, 2, 3, 2, n).max(axis=(1, 3))
    ref2 = enc.sign_bits(gamma * (dot_pool - mean) / np.sqrt(var + eps) + beta)
    ops = np.where(pol > 0, enc.POOL_OR, enc.POOL_AND)
    assert np.array_equal(enc.pool_bits(bits, 2, 2, ops), ref2)
    if (gamma < 0).any():  # the AND is needed: OR would be wrong somewhere in general
        assert ops[gamma < 0].tolist() == [enc.POOL_AND] * int((gamma < 0).sum())


def test_threshold_tie_is_one_for_both_polarities():
    assert enc.threshold_bits(7, 7, 1) == 1
    assert enc.threshold_bits(7, 7, -1) == 1
    with pytest.raises(ValueError):
        enc.threshold_bits(7, 7, 0)


def test_argmax_first_breaks_ties_low():
    assert enc.argmax_first(np.array([[1, 5, 5], [2, 2, 2]])).tolist() == [1, 0]


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError):
        enc.pack_bits([0, 2], 8)
    with pytest.raises(ValueError):
        enc.pack_bits([0, 1], 12)
