"""The golden model against independent float computations (torch conv2d, NumPy matmul)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.sw import encoding as enc
from xnorflow.sw import golden
from xnorflow.sw.ir import CompiledModel, IRError, Layer


def conv_layer(rng, h, w, c, n, k, stride, pad, in_bits=1, signed=True, output="integer"):
    weights = rng.integers(0, 2, (n, k, k, c)).astype(np.uint8)
    kw = dict(score_offset=np.zeros(n, np.int64)) if output == "integer" else {}
    return Layer("L", "conv", h, w, c, n, k, k, stride, pad, in_bits, signed, weights, output,
                 **kw)


@given(
    h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 70), n=st.integers(1, 5),
    k=st.integers(1, 4), stride=st.integers(1, 3), pad=st.integers(0, 2),
    width=st.sampled_from([16, 32, 64]), seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_binary_conv_equals_torch_conv2d_padded_with_minus_one(h, w, c, n, k, stride, pad,
                                                               width, seed):
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, h, w, c, n, k, stride, pad)
    x = rng.integers(0, 2, (2, h, w, c)).astype(np.uint8)
    acc = golden.layer_accumulators(layer, x, width)
    dot = enc.dot_from_accumulator(acc, layer.k_valid, 1, True)
    xt = torch.tensor(enc.bits_to_values(x), dtype=torch.float64).permute(0, 3, 1, 2)
    xt = F.pad(xt, (pad, pad, pad, pad), value=-1.0)
    wt = torch.tensor(enc.bits_to_values(layer.weights), dtype=torch.float64).permute(0, 3, 1, 2)
    ref = F.conv2d(xt, wt, stride=stride).permute(0, 2, 3, 1).numpy().astype(np.int64)
    assert np.array_equal(dot, ref)


@given(
    h=st.integers(1, 7), c=st.integers(1, 40), bits=st.integers(1, 8), pad=st.integers(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=30, deadline=None)
def test_multibit_conv_equals_integer_conv(h, c, bits, pad, seed):
    """Unsigned k-bit input through bit-planes; spatial padding is the value 0."""
    k, n = 3, 4
    if h + 2 * pad < k:
        return
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, h, h, c, n, k, 1, pad, in_bits=bits, signed=False)
    u = rng.integers(0, 1 << bits, (2, h, h, c))
    acc = golden.layer_accumulators(layer, u, 32)
    dot = enc.dot_from_accumulator(acc, layer.k_valid, bits, False, layer.n_neg)
    ut = torch.tensor(u, dtype=torch.float64).permute(0, 3, 1, 2)
    ut = F.pad(ut, (pad,) * 4, value=0.0)
    wt = torch.tensor(enc.bits_to_values(layer.weights), dtype=torch.float64).permute(0, 3, 1, 2)
    ref = F.conv2d(ut, wt).permute(0, 2, 3, 1).numpy().astype(np.int64)
    assert np.array_equal(dot, ref)


def test_accumulators_do_not_depend_on_word_width():
    rng = np.random.default_rng(1)
    layer = conv_layer(rng, 6, 5, 37, 3, 3, 2, 1)
    x = rng.integers(0, 2, (3, 6, 5, 37)).astype(np.uint8)
    accs = [golden.layer_accumulators(layer, x, w) for w in (8, 16, 32, 64)]
    for a in accs[1:]:
        assert np.array_equal(a, accs[0])


def make_mlp(rng, sizes=(64, 32, 16, 10), in_bits=8):
    layers, signed, bits = [], False, in_bits
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        w = rng.integers(0, 2, (n, 1, 1, k)).astype(np.uint8)
        kw = {}
        if last:
            kw = dict(score_offset=rng.integers(-5, 5, n), score_mul=2, scale=0.5)
        else:
            acc_max = k * ((1 << bits) - 1)
            kw = dict(thresholds=rng.integers(acc_max // 3, 2 * acc_max // 3 + 1, (n, 1)),
                      polarity=rng.choice([-1, 1], n).astype(np.int8))
        layers.append(Layer(f"fc{i}", "dense", 1, 1, k, n, 1, 1, 1, 0, bits, signed, w,
                            "integer" if last else "threshold", **kw))
        signed, bits = True, 1
    return CompiledModel(1, 1, sizes[0], layers)


def test_mlp_run_equals_float_chain():
    rng = np.random.default_rng(2)
    model = make_mlp(rng)
    model.validate()
    px = rng.integers(0, 256, (20, 1, 1, 64)).astype(np.uint8)
    res = golden.run(model, px)
    # independent float evaluation of the same integer semantics
    x = px.reshape(20, 64).astype(np.float64)  # 8-bit input, u = pixel
    for i, layer in enumerate(model.layers):
        wv = enc.bits_to_values(layer.weights.reshape(layer.out_c, -1)).astype(np.float64)
        dot = x @ wv.T
        if layer.signed_input:
            acc = (dot + layer.k_valid) / 2  # P from dot = 2P - K
        else:
            acc = dot + ((1 << layer.in_bits) - 1) * layer.n_neg  # A from dot = A - (2^B-1)n
        assert np.array_equal(res.accumulators[i].reshape(20, -1), acc.astype(np.int64))
        if layer.output == "threshold":
            t = layer.thresholds[:, 0]
            bits = np.where(layer.polarity > 0, acc >= t, acc <= t)
            assert np.array_equal(res.activations[i].reshape(20, -1), bits.astype(np.uint8))
            x = np.where(bits, 1.0, -1.0)
        else:
            score = layer.score_mul * acc + layer.score_offset
            assert np.array_equal(res.scores, score.astype(np.int64))
            assert np.array_equal(res.predictions, np.argmax(score, axis=1))
            assert np.allclose(res.logits, layer.scale * score)


def test_pooling_and_multithreshold_outputs():
    rng = np.random.default_rng(3)
    n = 4
    layer = conv_layer(rng, 6, 6, 3, n, 3, 1, 1, in_bits=8, signed=False, output="threshold")
    layer.out_bits, layer.out_signed = 2, False
    layer.thresholds = np.sort(rng.integers(1500, 4000, (n, 3)), axis=1)
    layer.polarity = np.array([1, -1, 1, -1], np.int8)
    layer.pool_k, layer.pool_stride = 2, 2
    layer.pool_ops = np.array([enc.POOL_OR, enc.POOL_AND, enc.POOL_OR, enc.POOL_AND], np.uint8)
    layer.validate()
    x = rng.integers(0, 256, (2, 6, 6, 3))
    acc = golden.layer_accumulators(layer, x)
    out = golden.output_stage(layer, acc)
    assert out.shape == (2, 3, 3, n)
    t = layer.thresholds
    lv = np.zeros(acc.shape, np.int64)
    for j in range(3):
        lv += np.where(layer.polarity > 0, acc >= t[:, j], acc <= t[:, j])
    pooled = lv.reshape(2, 3, 2, 3, 2, n)
    expect = np.where(layer.pool_ops == enc.POOL_AND, pooled.min(axis=(2, 4)),
                      pooled.max(axis=(2, 4)))
    assert np.array_equal(out, expect)
    assert out.max() <= 3


def test_ir_round_trip_and_damage(tmp_path):
    rng = np.random.default_rng(4)
    model = make_mlp(rng)
    model.save(tmp_path)
    back = CompiledModel.load(tmp_path)
    px = rng.integers(0, 256, (5, 1, 1, 64)).astype(np.uint8)
    assert np.array_equal(golden.run(back, px).scores, golden.run(model, px).scores)
    raw = bytearray((tmp_path / "model.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "model.npz").write_bytes(bytes(raw))
    with pytest.raises(IRError, match="model.npz"):
        CompiledModel.load(tmp_path)


def test_ir_validation_names_the_layer():
    rng = np.random.default_rng(5)
    model = make_mlp(rng)
    model.layers[1].in_c = 31
    with pytest.raises(IRError, match="fc1"):
        model.validate()
    with pytest.raises(ValueError, match="expects"):
        golden.run(make_mlp(rng), np.zeros((1, 1, 1, 63), np.uint8))


def test_integer_output_must_be_one_score_per_class():
    rng = np.random.default_rng(6)
    layer = conv_layer(rng, 4, 4, 3, 2, 3, 1, 0)  # 2x2 output map
    with pytest.raises(IRError, match="1x1, not 2x2"):
        layer.validate()
