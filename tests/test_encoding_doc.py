"""docs/encoding.md is complete on its own: its constants are the code's, and a reference
written from the page alone (plain integer arithmetic on values: no packing, no bit-planes,
nothing imported from xnorflow) computes what the golden model computes, on random networks
with every feature the page describes: convolutions with padding and strides, dense layers,
signed and unsigned inputs of 1..8 bits (a signed 1-bit first layer included), multi-level
outputs with unsorted thresholds, thresholds far outside ``0..acc_max``, pooling with a
stride other than its window, OR and AND pools, and the integer output stage.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from xnorflow.sw import encoding as enc
from xnorflow.sw import golden, synthetic

DOC = (Path(__file__).resolve().parent.parent / "docs" / "encoding.md").read_text()


def doc_constants() -> dict[str, tuple[int, ...]]:
    """The ``## Constants`` table: name -> value(s)."""
    section = DOC.split("## Constants", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section, re.M)
    return {name: tuple(int(v) for v in value.split(",")) for name, value in rows}


def test_constants_table_is_the_code():
    table = doc_constants()
    assert set(table) == {"ACT_PAD_BIT", "WEIGHT_PAD_BIT", "POOL_OR", "POOL_AND", "PIXEL_BITS",
                          "WORD_WIDTHS"}
    for name, value in table.items():
        code = getattr(enc, name)
        assert value == (tuple(code) if isinstance(code, tuple) else (code,)), name


def test_every_item_has_its_rule_in_the_doc():
    """The rules a third party needed other files for (issue 21) are on the page."""
    for phrase in ("`conv_h = (in_h + 2 pad - kh) // stride + 1`",
                   "element `(dy * kw + dx) * C + c`",
                   "the thresholds need not be sorted",
                   "`out = (conv - pool_k) // pool_stride + 1`",
                   "`n_neg` counting every `-1` weight of the channel, those that fall on "
                   "padding included",
                   "a signed 1-bit first layer reads `pixel >> 7`",
                   "so it has `H * W` segments",
                   "`score = score_mul * acc + score_offset`",
                   "outside `0..acc_max` the bit is constant",
                   "NaN gives bit `0`"):
        assert phrase in DOC, phrase
    compiler = (Path(__file__).resolve().parent.parent / "docs" / "compiler.md").read_text()
    assert "one segment per pixel" in compiler  # the two pages say the same about dense layers


# ----- the reference, from the page -----------------------------------------------------
C = doc_constants()
POOL_OR, POOL_AND = C["POOL_OR"][0], C["POOL_AND"][0]
PIXEL_BITS = C["PIXEL_BITS"][0]


def ref_layer(layer, v: np.ndarray):
    """One layer on input *values* ``v`` ``(N, H, W, C)`` (``+-1``, or unsigned ``u``):
    ``(accumulators before pooling, output)`` as the page's "A layer, exactly" says."""
    n = v.shape[0]
    p, s, kh, kw = layer.pad, layer.stride, layer.kh, layer.kw
    pad_value = -1 if layer.signed_input else 0
    vp = np.pad(v, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=pad_value)
    conv_h = (layer.in_h + 2 * p - kh) // s + 1
    conv_w = (layer.in_w + 2 * p - kw) // s + 1
    w = np.asarray(layer.weights, np.int64) * 2 - 1  # bit 1 = +1
    # element (dy * kw + dx) * C + c of each window, matched with w[n, dy, dx, c]
    # padded coordinates: input pixel (s*y + dy - pad, s*x + dx - pad) is vp[s*y + dy, s*x + dx]
    win = np.stack([vp[:, s * y + dy, s * x + dx, :]
                    for y in range(conv_h) for x in range(conv_w)
                    for dy in range(kh) for dx in range(kw)], axis=1)
    win = win.reshape(n, conv_h, conv_w, kh * kw * layer.in_c)
    dot = win @ w.reshape(layer.out_c, -1).T
    k = kh * kw * layer.in_c
    if layer.signed_input:
        acc = (dot + k) // 2  # dot = 2P - K
    else:
        n_neg = (w.reshape(layer.out_c, -1) == -1).sum(axis=1)  # the whole kernel
        acc = dot + ((1 << layer.in_bits) - 1) * n_neg
    if layer.output == "integer":
        score = layer.score_mul * acc + np.asarray(layer.score_offset)
        return acc, score.reshape(n, layer.out_c)
    t, pol = np.asarray(layer.thresholds), np.asarray(layer.polarity)
    passed = np.where(pol[:, None] > 0, acc[..., None] >= t, acc[..., None] <= t)
    level = passed.sum(axis=-1)
    if layer.pool_k > 1:
        pk, ps = layer.pool_k, layer.pool_stride
        oh, ow = (conv_h - pk) // ps + 1, (conv_w - pk) // ps + 1
        out = np.zeros((n, oh, ow, layer.out_c), np.int64)
        for y in range(oh):
            for x in range(ow):
                box = level[:, ps * y: ps * y + pk, ps * x: ps * x + pk].reshape(n, -1,
                                                                               layer.out_c)
                ops = np.asarray(layer.pool_ops)
                out[:, y, x] = np.where(ops == POOL_AND, box.min(axis=1), box.max(axis=1))
        level = out
    return acc, level


def ref_run(model, pixels: np.ndarray):
    first = model.layers[0]
    u = pixels.astype(np.int64) >> (PIXEL_BITS - first.in_bits)
    v = u * 2 - 1 if first.signed_input else u
    accs, acts = [], []
    for i, layer in enumerate(model.layers):
        acc, out = ref_layer(layer, v)
        accs.append(acc)
        if layer.output == "integer":
            scores = out
            logits = layer.scale * scores.astype(np.float64)
            first_max = np.argmax(scores, axis=-1)  # numpy: the lowest index among maxima
            return accs, acts, scores, logits, first_max
        acts.append(out)
        nxt = model.layers[i + 1]
        v = out * 2 - 1 if nxt.signed_input else out
    raise AssertionError("no integer layer")


# ----- random networks with every feature -----------------------------------------------
def _stress(model, rng):
    """Shuffle every channel's thresholds and throw one in ten far outside 0..acc_max."""
    for layer in model.layers:
        if layer.output != "threshold":
            continue
        t = rng.permuted(np.asarray(layer.thresholds), axis=1)
        far = rng.random(t.shape) < 0.1
        t[far] = rng.choice([-50, -2, layer.acc_max + 2, layer.acc_max + 50], int(far.sum()))
        layer.thresholds = t
    model.validate()
    return model


def _multilevel(seed: int):
    rng = np.random.default_rng(seed)
    h = int(rng.integers(3, 7))
    specs = [dict(kind="conv", out_c=int(rng.integers(1, 6)), k=int(rng.integers(1, 4)),
                  pad=int(rng.integers(0, 2)), stride=int(rng.integers(1, 3)),
                  out_bits=int(rng.integers(1, 4)))]
    specs.append(dict(kind="dense", out_c=int(rng.integers(2, 8)),
                      out_bits=int(rng.integers(1, 4))))
    specs.append(dict(kind="dense", out_c=int(rng.integers(2, 6))))
    shape = (h, h, int(rng.integers(1, 4)))
    conv_out = (h + 2 * specs[0]["pad"] - specs[0]["k"]) // specs[0]["stride"] + 1
    if conv_out >= 3 and rng.random() < 0.7:
        specs[0].update(pool_k=int(rng.integers(2, 4)), pool_stride=int(rng.integers(1, 4)))
        if specs[0]["pool_k"] > conv_out:
            specs[0].update(pool_k=1, pool_stride=1)
    return synthetic.random_model(seed, specs, shape, int(rng.integers(1, 9)))


@pytest.mark.parametrize("family", ["random_network", "multilevel"])
def test_reference_from_the_doc_agrees_with_golden(family):
    n_models = 150
    kinds = set()
    for seed in range(n_models):
        rng = np.random.default_rng(1000 + seed)
        model = synthetic.random_network(seed) if family == "random_network" else \
            _multilevel(seed)
        model = _stress(model, rng)
        px = synthetic.random_pixels(seed, model, 5)
        g = golden.run(model, px, width=int(rng.choice([16, 32, 64])))
        accs, acts, scores, logits, pred = ref_run(model, px)
        for i, (a, b) in enumerate(zip(accs, g.accumulators, strict=True)):
            assert np.array_equal(a, b), (family, seed, "accumulators", i)
        for i, (a, b) in enumerate(zip(acts, g.activations, strict=True)):
            assert np.array_equal(a, b), (family, seed, "layer output", i)
        assert np.array_equal(scores, g.scores), (family, seed)
        assert np.array_equal(logits, g.logits) and np.array_equal(pred, g.predictions)
        first = model.layers[0]
        kinds.add("signed first" if first.signed_input else f"{first.in_bits}-bit first")
        for layer in model.layers:
            kinds.add(layer.kind)
            if layer.pad:
                kinds.add("pad")
            if layer.output == "threshold" and layer.out_bits > 1:
                kinds.add("multi-level")
            if layer.pool_k > 1:
                kinds.add("pool stride != k" if layer.pool_stride != layer.pool_k else "pool")
                ops = set(np.asarray(layer.pool_ops).tolist())
                kinds |= {f"pool op {o}" for o in ops}
    # the networks exercised what the page describes
    want = {"conv", "dense", "pad", "pool", "pool stride != k", "pool op 0", "pool op 1",
            "8-bit first"}
    want |= {"signed first"} if family == "random_network" else {"multi-level"}
    assert want <= kinds, want - kinds
