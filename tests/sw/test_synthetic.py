"""The random-model generator (sw/synthetic.py): valid, reproducible, mixed output bits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from xnorflow.sw import encoding as enc
from xnorflow.sw import golden, synthetic


def _digest(model) -> str:
    """Fingerprint of everything drawn at random in a model."""
    h = hashlib.sha256()
    for layer in model.layers:
        for a in (layer.weights, layer.thresholds, layer.polarity, layer.pool_ops,
                  layer.score_offset):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((layer.kind, layer.kh, layer.stride, layer.pad, layer.pool_k,
                       layer.pool_stride, layer.score_mul, layer.in_bits,
                       layer.signed_input)).encode())
    return h.hexdigest()[:16]


def test_random_network_seeds_keep_their_models():
    """Seeds in committed benchmark results (benchmarks/results/rtl.random.json) still name
    the same networks: digests computed with the generator before the three were merged."""
    assert _digest(synthetic.random_network(424212809)) == "f71c480d486e17b0"
    assert _digest(synthetic.random_network(7)) == "14fb83ded3cf3538"


@pytest.mark.parametrize("make", [
    lambda s: synthetic.random_network(s),
    lambda s: synthetic.random_cnn(seed=s),
    lambda s: synthetic.random_mlp(seed=s),
    lambda s: synthetic.random_model(s, [dict(kind="conv", out_c=5, out_bits=2, pool_k=2),
                                         dict(kind="dense", out_c=3)], (6, 6, 2), 4),
])
def test_same_seed_same_model_other_seed_other_model(make):
    a, b, c = make(3), make(3), make(4)
    a.validate()
    assert _digest(a) == _digest(b) != _digest(c)


def test_random_network_fixed_arguments():
    for seed in range(20):
        m = synthetic.random_network(seed, in_shape=(5, 4, 3), in_bits=2, classes=7, layers=3)
        assert (m.in_h, m.in_w, m.in_c) == (5, 4, 3) and m.layers[0].in_bits == 2
        assert len(m.layers) == 3 and m.layers[-1].out_c == 7 and len(m.classes) == 7
        assert [la.output for la in m.layers] == ["threshold", "threshold", "integer"]


def test_random_networks_cover_the_modes():
    """Over a few seeds: conv and dense, pooling with both operators, 1-bit signed and
    multi-bit unsigned inputs, and extreme thresholds (never/always fire)."""
    seen = set()
    for seed in range(60):
        m = synthetic.random_network(seed)
        first = m.layers[0]
        seen.add(("signed" if first.signed_input else "unsigned", first.in_bits > 1))
        for layer in m.layers[:-1]:
            seen.add(layer.kind)
            if layer.pool_k > 1:
                seen.update(f"pool-op-{op}" for op in layer.pool_ops)
            t = layer.thresholds
            assert t.min() >= -1 and t.max() <= layer.acc_max + 1
            if (t == -1).any() or (t == layer.acc_max + 1).any():
                seen.add("extreme")
    assert {"conv", "dense", "pool-op-0", "pool-op-1", ("signed", False),
            ("unsigned", True), "extreme"} <= seen


def test_spread_multilevel_thresholds_are_sorted():
    rng = np.random.default_rng(0)
    layer = synthetic.random_layer(rng, name="t", kind="conv", in_shape=(5, 5, 40), out_c=64,
                                   in_bits=4, signed_input=False, out_bits=2)
    assert layer.thresholds.shape == (64, 3) and not layer.out_signed
    assert (np.diff(layer.thresholds, axis=1) >= 0).all()


def test_median_thresholds_give_mixed_hidden_bits():
    """random_cnn's thresholds are medians over its images: each hidden map is about half
    ones on those images (so deep networks do not go constant)."""
    model = synthetic.random_cnn(in_shape=(9, 7, 3), convs=((6, 3, 2, 1, 1), (20, 2, 1, 1, 1)),
                                 dense=(16, 10), seed=5, batch=32)
    px = synthetic.random_images(32, 9, 7, 3, seed=6)
    for layer, act in zip(model.layers, golden.run(model, px).activations, strict=False):
        ones = act.mean()
        assert 0.25 < ones < 0.75, (layer.name, ones)


def test_median_levels_for_multibit_outputs():
    px = synthetic.random_images(16, 6, 6, 1, seed=1)
    model = synthetic.random_model(2, [dict(kind="conv", out_c=8, pad=1, out_bits=2),
                                       dict(kind="dense", out_c=4)], (6, 6, 1), 8, data=px)
    acc = golden.layer_accumulators(model.layers[0], enc.quantize_pixels(px, 8))
    t = model.layers[0].thresholds
    assert t.shape == (8, 3) and (np.diff(t, axis=1) >= 0).all()
    flat = acc.reshape(-1, 8)
    for n in range(8):
        assert np.array_equal(t[n], np.quantile(flat[:, n], [0.25, 0.5, 0.75]).round())


def test_pixels_and_geometries():
    m = synthetic.random_network(11)
    px = synthetic.random_pixels(11, m, 3)
    assert px.shape == (3, m.in_h, m.in_w, m.in_c) and px.dtype == np.uint8
    assert np.array_equal(px, synthetic.random_pixels(11, m, 3))
    for seed in range(20):
        r, c, w = synthetic.random_geometry(seed)
        assert r in (1, 2, 4) and c in (1, 2, 4) and w in (16, 32, 64)
    assert synthetic.geometry_target(2, 4, 16).name == "sim-2x4x16"


def test_random_target_draws_the_pipelining():
    """random_target: random_geometry's geometry, mem_regs 0, 1 or 2 (all occur), a weight
    word per row or not where R is a power of two (both occur; never elsewhere), the name
    says which; the same seed gives the same target."""
    targets = [synthetic.random_target(seed) for seed in range(40)]
    assert {t.mem_regs for t in targets} == {0, 1, 2}
    pow2 = [t for t in targets if t.rows > 1 and not t.rows & (t.rows - 1)]
    assert {t.weight_rows > 1 for t in pow2} == {False, True}
    for seed, t in enumerate(targets):
        assert (t.rows, t.cols, t.width) == synthetic.random_geometry(seed)
        assert t.weight_rows in ((1, t.rows) if t in pow2 else (1,))
        assert t.name == (f"sim-{t.geometry}" + (f"-r{t.mem_regs}" if t.mem_regs else "")
                          + (f"-w{t.rows}" if t.weight_rows > 1 else ""))
        assert synthetic.random_target(seed) == t
