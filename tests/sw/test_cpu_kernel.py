"""The fast CPU kernel against the reference kernel and the golden model: bit for bit.

Random shapes (hypothesis, derandomised so every run sees the same examples) cover K not a
multiple of 64, odd M and N, both GEMM micro-kernels, compacted and word-gathered im2col,
bit-plane inputs (popcount and integer paths), threshold ties, OR/AND pooling, DoReFa
multi-threshold outputs and the integer last layer.
"""

import doctest
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.sw import cpu_kernel as ck
from xnorflow.sw import encoding as enc
from xnorflow.sw import golden, reference, synthetic
from xnorflow.sw.errors import UserError

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
TWO_THREADS = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2, reason="numba sees only one CPU on this machine"
)


def _assert_same_result(got: golden.GoldenResult, want: golden.GoldenResult) -> None:
    assert len(got.activations) == len(want.activations)
    for i, (g, w) in enumerate(zip(got.activations, want.activations, strict=True)):
        assert g.dtype == w.dtype and np.array_equal(g, w), f"activations of layer {i}"
    assert len(got.accumulators) == len(want.accumulators)
    for i, (g, w) in enumerate(zip(got.accumulators, want.accumulators, strict=True)):
        assert g.dtype == w.dtype and np.array_equal(g, w), f"accumulators of layer {i}"
    for name in ("scores", "logits", "predictions"):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype and np.array_equal(g, w), name


# ----- GEMM ------------------------------------------------------------------------------------


@given(st.integers(1, 23), st.integers(1, 23), st.integers(1, 1300),
       st.sampled_from([8, 16, 32, 64]), st.integers(0, 2**32 - 1))
@SETTINGS
def test_gemm_equals_reference(m, n, k, width, seed):
    rng = np.random.default_rng(seed)
    a = enc.pack_bits(rng.integers(0, 2, (m, k), dtype=np.uint8), width, enc.ACT_PAD_BIT)
    w = enc.pack_bits(rng.integers(0, 2, (n, k), dtype=np.uint8), width, enc.WEIGHT_PAD_BIT)
    assert np.array_equal(ck.xnor_gemm(a, w), reference.xnor_gemm(a, w))


@pytest.mark.parametrize("kwords", [1, 5, ck.BLOCKED_MIN_KW - 1, ck.BLOCKED_MIN_KW, 64])
@pytest.mark.parametrize("m,n", [(1, 1), (5, 7), (33, 18)])
def test_gemm_both_microkernels_raw_words(m, n, kwords):
    # arbitrary 64-bit words (no padding convention needed for P itself)
    rng = np.random.default_rng(m * 1000 + n * 10 + kwords)
    a = rng.integers(0, 2**64, (m, kwords), dtype=np.uint64)
    w = rng.integers(0, 2**64, (n, kwords), dtype=np.uint64)
    assert np.array_equal(ck.xnor_gemm(a, w), reference.xnor_gemm(a, w))


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 200), st.integers(0, 2**32 - 1))
@SETTINGS
def test_binary_matmul_equals_float_matmul(m, n, k, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (m, k), dtype=np.uint8)
    w = rng.integers(0, 2, (n, k), dtype=np.uint8)
    ref = enc.bits_to_values(a).astype(np.float64) @ enc.bits_to_values(w).T.astype(np.float64)
    assert np.array_equal(ck.binary_matmul(a, w), ref.astype(np.int64))


# ----- single layers ---------------------------------------------------------------------------


@st.composite
def layers(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["conv", "conv", "dense"]))
    in_bits = draw(st.sampled_from([1, 1, 2, 3, 8]))
    in_c = draw(st.sampled_from([1, 3, 31, 64, 65, 130]))
    out_c = draw(st.integers(1, 70))
    h = draw(st.integers(1, 7))
    w = draw(st.integers(1, 7))
    k = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 1))
    stride = draw(st.integers(1, 2))
    if kind == "conv" and (h + 2 * pad < k or w + 2 * pad < k):
        pad = k
    output = draw(st.sampled_from(["threshold", "threshold", "integer"]))
    if output == "integer":
        kind = "dense"  # the integer stage gives one score vector per image
    out_bits = draw(st.sampled_from([1, 1, 2])) if output == "threshold" else 1
    pool = draw(st.sampled_from([1, 2])) if output == "threshold" else 1
    layer = synthetic.random_layer(
        rng, name="layer", kind=kind, in_shape=(h, w, in_c), out_c=out_c, k=k,
        stride=stride, pad=pad, in_bits=in_bits, signed_input=in_bits == 1, output=output,
        out_bits=out_bits,
    )
    if pool > 1 and layer.conv_h >= pool and layer.conv_w >= pool:
        synthetic.add_pool(rng, layer, pool, draw(st.integers(1, 2)))
    batch = draw(st.integers(1, 3))
    x = rng.integers(0, 1 << in_bits, (batch, h, w, in_c), dtype=np.uint8)
    return layer, x


@given(layers())
@SETTINGS
def test_layer_equals_golden(case):
    layer, x = case
    acc = golden.layer_accumulators(layer, x, 32)
    got = ck.layer_accumulators(layer, x)
    assert got.dtype == acc.dtype and np.array_equal(got, acc)
    assert np.array_equal(ck.layer_forward(layer, x), golden.output_stage(layer, acc))


def test_layer_paths_are_exercised():
    """The heuristics pick every path the property tests are meant to cover."""
    rng = np.random.default_rng(0)
    first = synthetic.random_layer(rng, name="c1", kind="conv", in_shape=(5, 5, 1), out_c=8,
                            pad=1, in_bits=8, signed_input=False)
    planes = synthetic.random_layer(rng, name="c2", kind="conv", in_shape=(5, 5, 32), out_c=8,
                             in_bits=2, signed_input=False)
    wide = synthetic.random_layer(rng, name="c3", kind="conv", in_shape=(5, 5, 128), out_c=8)
    chosen = [ck.prepare_layer(la) for la in (first, planes, wide)]
    assert [(p.path, p.dense, p.blocked) for p in chosen] == [
        ("integer", True, False), ("popcount", True, False), ("popcount", False, True)]
    for la in (first, planes, wide):
        x = rng.integers(0, 1 << la.in_bits, (2, 5, 5, la.in_c), dtype=np.uint8)
        assert np.array_equal(ck.layer_accumulators(la, x), golden.layer_accumulators(la, x))


def test_threshold_ties_and_pool_and():
    """Accumulators exactly on the threshold give 1 for both polarities; AND pooling."""
    rng = np.random.default_rng(3)
    layer = synthetic.random_layer(rng, name="t", kind="conv", in_shape=(6, 6, 70), out_c=66,
                            k=3, pad=1, pool_k=2, pool_stride=2)
    x = rng.integers(0, 2, (2, 6, 6, 70), dtype=np.uint8)
    acc = golden.layer_accumulators(layer, x)
    layer.thresholds = acc[0, 0, 0][:, None].copy()  # ties at pixel (0, 0) of image 0
    layer.pool_ops = np.full(66, enc.POOL_AND, np.uint8)
    layer.pool_ops[::3] = enc.POOL_OR
    out = ck.layer_forward(layer, x)
    assert np.array_equal(out, golden.output_stage(layer, acc))
    bits = ck.layer_forward(
        ck.prepare_layer(layer.__class__(**{**layer.__dict__, "pool_k": 1, "pool_stride": 1})),
        x)
    assert bits[0, 0, 0].all()


# ----- whole networks --------------------------------------------------------------------------


@st.composite
def models(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    h = draw(st.integers(4, 9))
    in_c = draw(st.sampled_from([1, 2, 3]))
    in_bits = draw(st.sampled_from([1, 4, 8]))
    specs = [dict(kind="conv", out_c=draw(st.integers(1, 40)), k=3, pad=1,
                  out_bits=draw(st.sampled_from([1, 2])), pool_k=2, pool_stride=2)]
    if draw(st.booleans()):
        specs.append(dict(kind="conv", out_c=draw(st.integers(1, 70)), k=draw(st.sampled_from(
            [1, 2])), stride=draw(st.integers(1, 2)), out_bits=draw(st.sampled_from([1, 2]))))
    specs.append(dict(kind="dense", out_c=draw(st.integers(1, 40)),
                      out_bits=draw(st.sampled_from([1, 2]))))
    specs.append(dict(kind="dense", out_c=draw(st.integers(2, 12))))
    model = synthetic.random_model(rng, specs, (h, h, in_c), in_bits=in_bits)
    px = rng.integers(0, 256, (draw(st.integers(1, 4)), h, h, in_c), dtype=np.uint8)
    return model, px


@given(models())
@SETTINGS
def test_run_equals_golden(case):
    model, px = case
    _assert_same_result(ck.run(model, px), golden.run(model, px))


def test_fashion_cnn_equals_golden_and_fast_path():
    model = synthetic.fashion_cnn(seed=1)
    px = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    want = golden.run(model, px)
    _assert_same_result(ck.run(model, px), want)
    stats: dict = {}
    fast = ck.run(ck.prepare(model), px, intermediates=False, stats=stats)
    assert fast.activations == [] and fast.accumulators == []
    assert np.array_equal(fast.scores, want.scores)
    assert np.array_equal(fast.predictions, want.predictions)
    assert stats["images"] == 3 and stats["seconds"] > 0 and stats["images_per_second"] > 0
    assert ck.images_per_second(model, px, repeats=1) > 0
    one = ck.run(model, px[0])  # a single (H, W, C) image
    assert np.array_equal(one.scores, want.scores[:1])


@TWO_THREADS
def test_threads_give_identical_results():
    model = synthetic.fashion_cnn(seed=2)
    px = np.random.default_rng(2).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    prepared = ck.prepare(model)
    before = numba.get_num_threads()
    s1: dict = {}
    s2: dict = {}
    r1 = ck.run(prepared, px, threads=1, stats=s1)
    r2 = ck.run(prepared, px, threads=2, stats=s2)
    assert (s1["threads"], s2["threads"]) == (1, 2)
    assert numba.get_num_threads() == before
    _assert_same_result(r1, r2)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**64, (77, 70), dtype=np.uint64)
    w = rng.integers(0, 2**64, (50, 70), dtype=np.uint64)
    assert np.array_equal(ck.xnor_gemm(a, w, threads=1), ck.xnor_gemm(a, w, threads=2))


# ----- memory and errors -----------------------------------------------------------------------


def test_packed_weights_are_32x_smaller_than_fp32():
    rng = np.random.default_rng(4)
    layer = synthetic.random_layer(rng, name="c", kind="conv", in_shape=(4, 4, 256), out_c=256)
    assert ck.weight_bytes(ck.prepare_layer(layer)) * 32 == layer.out_c * layer.k_valid * 4


def test_bad_inputs_are_user_errors():
    model = synthetic.fashion_cnn()
    with pytest.raises(UserError, match=r"expects \(28, 28, 1\)"):
        ck.run(model, np.zeros((2, 27, 28, 1), np.uint8))
    with pytest.raises(UserError, match="threads must be"):
        ck.run(model, np.zeros((1, 28, 28, 1), np.uint8), threads=0)
    with pytest.raises(UserError, match="inputs must be in 0..1"):
        ck.layer_accumulators(model.layers[1], np.full((1, 14, 14, 32), 2, np.uint8))
    with pytest.raises(UserError, match="xnor_gemm needs"):
        ck.xnor_gemm(np.zeros((2, 3), np.uint64), np.zeros((2, 4), np.uint64))
    with pytest.raises(TypeError):
        ck.xnor_gemm(np.zeros((2, 3), np.uint64), np.zeros((2, 3), np.uint32))


def test_doc_example_runs():
    doc = Path(__file__).resolve().parents[2] / "docs" / "cpu-kernel.md"
    result = doctest.testfile(str(doc), module_relative=False, verbose=False)
    assert result.attempted >= 8 and result.failed == 0

