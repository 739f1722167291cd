"""The reference XNOR-popcount GEMM against float matmul and the golden model."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from xnorflow.sw import encoding as enc
from xnorflow.sw import golden, reference
from xnorflow.sw.ir import Layer


@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 300),
       st.sampled_from([8, 16, 32, 64]), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_reference_gemm_equals_float_matmul(m, n, k, width, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (m, k)).astype(np.uint8)
    w = rng.integers(0, 2, (n, k)).astype(np.uint8)
    ref = enc.bits_to_values(a).astype(np.float64) @ enc.bits_to_values(w).T.astype(np.float64)
    assert np.array_equal(reference.binary_matmul(a, w, width), ref.astype(np.int64))


def test_reference_gemm_chunking_and_golden_agree():
    rng = np.random.default_rng(0)
    layer = Layer("d", "dense", 1, 1, 129, 7, 1, 1, 1, 0, 1, True,
                  rng.integers(0, 2, (7, 1, 1, 129)).astype(np.uint8), "integer",
                  score_offset=np.zeros(7, np.int64))
    x = rng.integers(0, 2, (300, 1, 1, 129)).astype(np.uint8)
    a = enc.pack_bits(x.reshape(300, 129), 64)
    w = golden.pack_weights(layer, 64)
    p = reference.xnor_gemm(a, w, chunk=37)
    assert np.array_equal(p, golden.layer_accumulators(layer, x, 64).reshape(300, 7))


def test_reference_network_matches_golden():
    """The reference kernel on a whole network (one GEMM over all output channels) is a
    second accumulation path: its accumulators and scores equal the golden model's."""
    from xnorflow.sw import synthetic

    model = synthetic.random_network(21)
    px = synthetic.random_pixels(21, model, 4)
    ref = golden.run(model, px)
    r = reference.run(model, px)
    assert np.array_equal(r.scores, ref.scores)
    for a, b in zip(ref.accumulators, r.accumulators, strict=True):
        assert np.array_equal(a, b)
