"""QONNX interop: Brevitas -> export_qonnx -> xnorflow import == execute_onnx; IR -> QONNX -> IR.

Every comparison is bit for bit: the golden model of the imported IR against qonnx's
``execute_onnx`` on the file Brevitas wrote (every hidden activation, the class, and the
scores), and the golden model of an IR against ``execute_onnx`` of its export.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from xnorflow.sw import encoding as enc
from xnorflow.sw import golden, lower
from xnorflow.sw.errors import UserError
from xnorflow.sw.ir import CompiledModel, Layer
from xnorflow.sw.models import build_model, make_config, parse_widths

MISSING = [p for p in ("brevitas", "qonnx", "onnx", "onnxruntime", "onnxoptimizer")
           if importlib.util.find_spec(p) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"optional [interop] extra not installed ({', '.join(MISSING)} missing):"
    " pip install -e '.[interop]'")

CLASSES = [str(i) for i in range(10)]
N_IMAGES = 24


def _pixels(shape, n=N_IMAGES, seed=3):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(n,) + tuple(shape), dtype=np.uint8)
    px[0] = rng.integers(0, 256, size=shape)  # the image the ties were made on
    return px


def _import(tmp_path, net, shape_hwc, divisor=255.0, flat=False, ties=True, name="m.onnx"):
    """Export a Brevitas net (ties made on image 0), import it; return (path, IR, pixels)."""
    from xnorflow.sw.qonnx_import import import_qonnx, onnx_input

    from .brevitas_nets import export, make_ties

    px = _pixels(shape_hwc)
    x = torch.from_numpy(onnx_input(px, divisor))
    if flat:
        x = x.flatten(1)
    if ties:
        make_ties(net, x, np.random.default_rng(9))
    path = tmp_path / name
    export(net, (1,) + tuple(x.shape[1:]), path)
    cm = import_qonnx(path, divisor=divisor, input_shape=shape_hwc if flat else None)
    return path, cm, px, net, x


def _check_against_onnx(path, cm, px, net=None, x=None):
    """golden(IR) == execute_onnx(file) on every hidden level, class and score."""
    from xnorflow.sw.qonnx_import import run_onnx

    g = golden.run(cm, px)
    r = run_onnx(path, cm, px)
    assert len(r.activations) == len(g.activations)
    for i, (a, b) in enumerate(zip(r.activations, g.activations, strict=True)):
        assert a is not None, f"layer {i}: no ONNX tensor recorded"
        assert np.array_equal(a, b), f"layer {i}: {int((a != b).sum())} of {a.size} levels differ"
    assert np.array_equal(r.output.argmax(1), g.predictions)
    want = g.logits + cm.meta["logit_bias"]
    np.testing.assert_allclose(r.output, want, rtol=1e-6, atol=1e-5)
    if cm.layers[-1].scale == 1.0 and cm.meta["logit_bias"] == 0.0:
        assert np.array_equal(r.output, g.scores)  # scores themselves, exactly
    if net is not None:  # and Brevitas itself agrees on the class
        with torch.no_grad():
            y = net(x)
        y = y.value if hasattr(y, "value") else y
        np.testing.assert_allclose(y.numpy(), r.output, rtol=1e-5, atol=1e-4)
    return g


# ----- Brevitas -> QONNX -> IR ----------------------------------------------------------
@pytest.mark.parametrize("inp,divisor,seed", [("u8", 255.0, 0), ("u8pow2", 256.0, 1),
                                              ("pm1", 255.0, 2), ("pm1", 255.0, 3)])
def test_brevitas_mlp(tmp_path, inp, divisor, seed):
    from .brevitas_nets import mlp

    net = mlp(seed, inp)
    path, cm, px, net, x = _import(tmp_path, net, (8, 8, 1), divisor, flat=True)
    first = cm.layers[0]
    assert (first.in_bits, first.signed_input) == {"u8": (8, False), "u8pow2": (8, False),
                                                    "pm1": (1, True)}[inp]
    assert [ly.kind for ly in cm.layers] == ["dense"] * 3
    assert any((ly.polarity < 0).any() for ly in cm.layers[:-1])  # negative gamma
    assert (cm.meta["inexact_scales"] != []) == (inp == "u8")
    g = _check_against_onnx(path, cm, px, net, x)
    # the ties made on image 0 sit exactly on a threshold: acc == T gives 1
    hit = [np.flatnonzero(acc[0, 0, 0] == ly.thresholds[:, 0])
           for ly, acc in zip(cm.layers[1:-1], g.accumulators[1:-1], strict=True)]
    assert sum(len(h) for h in hit) > 0


def test_brevitas_mlp_constant_channels_and_head(tmp_path):
    """Zero gamma -> constant channels; a scalar affine head -> scale and logit bias."""
    from .brevitas_nets import mlp

    net = mlp(4, "u8pow2", widths=(24,), head=(0.75, 0.3))
    with torch.no_grad():
        bn = net[3]
        bn.weight[:4] = 0.0
        bn.bias[:2] = 1.0
        bn.bias[2:4] = -1.0
    path, cm, px, net, x = _import(tmp_path, net, (8, 8, 1), 256.0, flat=True, ties=False)
    t, pol = cm.layers[0].thresholds[:, 0], cm.layers[0].polarity
    assert (t[:2] == 0).all() and (t[2:4] == cm.layers[0].acc_max + 1).all()
    assert (pol[:4] == 1).all()
    last = cm.layers[-1]
    assert last.scale == pytest.approx(0.75) and cm.meta["logit_bias"] == pytest.approx(0.3)
    _check_against_onnx(path, cm, px, net, x)


def test_brevitas_mlp_kbit_activations(tmp_path):
    from .brevitas_nets import mlp

    net = mlp(5, "u8pow2", widths=(24, 16), act="relu2", ties=False)
    path, cm, px, net, x = _import(tmp_path, net, (8, 8, 1), 256.0, flat=True, ties=False)
    assert [ly.out_bits for ly in cm.layers[:-1]] == [2, 2]
    assert not cm.layers[1].signed_input and cm.layers[1].in_bits == 2
    g = _check_against_onnx(path, cm, px, net, x)
    assert len(np.unique(g.activations[0])) > 2  # more than two levels used


@pytest.mark.parametrize("inp,divisor,pool_before_bn,seed", [
    ("u8", 255.0, False, 0), ("pm1", 255.0, True, 1), ("u8pow2", 256.0, True, 2)])
def test_brevitas_cnn(tmp_path, inp, divisor, pool_before_bn, seed):
    from .brevitas_nets import cnn

    net = cnn(seed, inp, first_pad=0 if inp == "pm1" else 1, pool_before_bn=pool_before_bn)
    path, cm, px, net, x = _import(tmp_path, net, (10, 10, 1), divisor)
    kinds = [(ly.kind, ly.pool_k, ly.pad) for ly in cm.layers]
    assert kinds[:2] == [("conv", 2, 0 if inp == "pm1" else 1), ("conv", 1, 0)]
    assert kinds[2:] == [("dense", 1, 0), ("dense", 1, 0)]
    ops = cm.layers[0].pool_ops
    if pool_before_bn:  # max-pool before a decreasing BN is AND on the bits
        assert np.array_equal(ops == enc.POOL_AND, cm.layers[0].polarity < 0)
    else:  # max-pool after the sign is OR
        assert (ops == enc.POOL_OR).all()
    _check_against_onnx(path, cm, px, net, x)


# ----- refusals --------------------------------------------------------------------------
def _refused(tmp_path, net, shape, match, divisor=255.0, flat=False):
    from xnorflow.sw.qonnx_import import QonnxImportError, import_qonnx

    from .brevitas_nets import export

    path = tmp_path / "bad.onnx"
    export(net, (1, shape[2] * shape[0] * shape[1]) if flat else (1, shape[2]) + shape[:2], path)
    with pytest.raises(QonnxImportError, match=match) as e:
        import_qonnx(path, divisor=divisor, input_shape=shape if flat else None)
    assert "\n" not in str(e.value)
    return str(e.value)


def _cnn_with(second_conv, side=6, inp="u8"):
    from torch import nn

    from .brevitas_nets import conv, input_quant, linear, sign

    return nn.Sequential(*input_quant(inp), conv(1, 4), nn.BatchNorm2d(4), sign(), second_conv,
                         nn.BatchNorm2d(4), sign(), nn.Flatten(),
                         linear(4 * side * side, 10)).eval()


def test_refuses_zero_padding_of_binary_maps(tmp_path):
    from .brevitas_nets import conv

    msg = _refused(tmp_path, _cnn_with(conv(4, 4, padding=1), 8), (10, 10, 1),
                   r"Conv node '/4/Conv' \(its Im2Col after qonnx's lowering\): pads its \+-1 "
                   "input with 0")
    assert "pad with -1" in msg


def test_refuses_grouped_and_dilated_convolutions(tmp_path):
    from torch import nn

    from .brevitas_nets import conv, input_quant, linear, sign

    _refused(tmp_path, _cnn_with(conv(4, 4, groups=2)), (10, 10, 1),
             r"Conv node '/4/Conv'.*grouped convolution \(group=2\)")
    net = nn.Sequential(*input_quant("u8"), conv(1, 4, dilation=2), nn.BatchNorm2d(4), sign(),
                        nn.Flatten(), linear(4 * 36, 10)).eval()
    _refused(tmp_path, net, (10, 10, 1), r"Conv node '/1/Conv'.*dilation \[2, 2\]")


def test_refuses_signed_input(tmp_path):
    from .brevitas_nets import mlp

    _refused(tmp_path, mlp(0, "s8", widths=(8,), ties=False), (8, 8, 1),
             r"Quant node '/1/act_quant/export_handler/Quant'.*signed input quantiser", flat=True)


def test_refuses_input_that_is_not_pixel_shift(tmp_path):
    from .brevitas_nets import mlp

    # Brevitas exports a 1-bit unsigned QuantIdentity as BipolarQuant: +1 for every pixel
    _refused(tmp_path, mlp(0, "u1", widths=(8,), ties=False), (8, 8, 1),
             r"BipolarQuant node .*maps every pixel .* to 1; nothing to compute", flat=True)
    _refused(tmp_path, mlp(0, "u8", widths=(8,), ties=False), (8, 8, 1),
             r"maps pixel 1 \(input 1/1\) to level 1 of 2; .*pixel >> 7 = 0 \(check "
             r"--input-divisor\)", divisor=1.0, flat=True)


def test_refuses_non_monotone_chain(tmp_path):
    from torch import nn

    from .brevitas_nets import AbsModule, input_quant, linear, sign

    # sign(|dot - 3| - 2): +1, then -1 for dot in (1, 5), then +1 again
    net = nn.Sequential(*input_quant("pm1"), nn.Flatten(), linear(64, 8), _shift(-3.0),
                        AbsModule(), _shift(-2.0), sign(), linear(8, 10)).eval()
    _refused(tmp_path, net, (8, 8, 1), r"BipolarQuant node .*not monotone per channel",
             flat=True)


def _shift(c: float):
    from torch import nn

    class Shift(nn.Module):
        def forward(self, x):
            return x + c

    return Shift()


def test_refuses_branches(tmp_path):
    from torch import nn

    from .brevitas_nets import Residual, input_quant, linear, sign

    body = nn.Sequential(linear(64, 64), nn.BatchNorm1d(64), sign())
    net = nn.Sequential(*input_quant("pm1"), nn.Flatten(), Residual(body), sign(),
                        linear(64, 10)).eval()
    _refused(tmp_path, net, (8, 8, 1), "only single chains", flat=True)


def test_refuses_float_input_and_flat_input_without_shape(tmp_path):
    from torch import nn

    from xnorflow.sw.qonnx_import import QonnxImportError, import_qonnx

    from .brevitas_nets import export, linear, mlp, sign

    net = nn.Sequential(nn.Flatten(), linear(64, 8), nn.BatchNorm1d(8), sign(),
                        linear(8, 10)).eval()
    _refused(tmp_path, net, (8, 8, 1), "is not quantised", flat=True)
    path = tmp_path / "flat.onnx"
    export(mlp(0, "u8", widths=(8,), ties=False), (1, 64), path)
    with pytest.raises(QonnxImportError, match=r"is flat \(1, 64\): give the image shape with "
                       "--input-shape"):
        import_qonnx(path)


def test_refuses_files_that_are_not_onnx(tmp_path):
    from xnorflow.sw.qonnx_import import import_qonnx

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00not a model at all")
    with pytest.raises(UserError, match="not an ONNX model"):
        import_qonnx(bad)
    with pytest.raises(UserError, match="no such file"):
        import_qonnx(tmp_path / "missing.onnx")


def test_missing_extra_is_one_clear_line(monkeypatch):
    from xnorflow.sw import qonnx_import

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "qonnx" else real(name, *a))
    with pytest.raises(UserError,
                       match=r"^qonnx is not installed; .* pip install 'xnorflow\[interop\]'$"):
        qonnx_import.need_interop()


# ----- IR -> QONNX -> IR -------------------------------------------------------------------
def _randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for b in model.blocks:
        if b.bn is None:
            continue
        c = b.bn.channels
        with torch.no_grad():
            b.bn.weight.copy_(torch.randn(c, generator=g))
            b.bn.weight[0] = 0.0
            b.bn.bias.copy_(torch.randn(c, generator=g) * 0.5)
            b.bn.running_mean.copy_(torch.randn(c, generator=g) * 3)
            b.bn.running_var.copy_(torch.rand(c, generator=g) * 5 + 0.1)
    return model.eval()


LOWERED = [
    ("mlp", (8, 8, 1), "xnor", "24,16", 8, 1),
    ("mlp", (8, 8, 1), "bnn", "16", 1, 1),
    ("mlp", (4, 4, 3), "dorefa", "16,12", 8, 2),
    ("cnn", (10, 10, 1), "xnor", "6,8:12", 8, 1),
    ("cnn", (8, 8, 2), "dorefa", "6:", 2, 2),
]


def _same_ir(a: CompiledModel, b: CompiledModel) -> None:
    assert (a.in_h, a.in_w, a.in_c) == (b.in_h, b.in_w, b.in_c)
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        for f in ("kind", "in_h", "in_w", "in_c", "out_c", "kh", "kw", "stride", "pad",
                  "in_bits", "signed_input", "output", "out_bits", "out_signed", "pool_k",
                  "pool_stride", "score_mul", "scale"):
            assert getattr(x, f) == getattr(y, f), (x.name, f)
        for f in ("weights", "thresholds", "polarity", "pool_ops", "score_offset"):
            u, v = getattr(x, f), getattr(y, f)
            assert (u is None) == (v is None), (x.name, f)
            if u is not None:
                assert np.array_equal(u, v), (x.name, f)


def _export_import(tmp_path, cm, divisor=255.0):
    import onnx

    from xnorflow.sw.qonnx_export import export_qonnx
    from xnorflow.sw.qonnx_import import import_qonnx

    path = tmp_path / "exported.onnx"
    onnx.save(export_qonnx(cm, divisor), str(path))
    return path, import_qonnx(path)


@pytest.mark.parametrize("name,shape,mode,widths,in_bits,act_bits", LOWERED)
def test_lowered_models_round_trip_exactly(tmp_path, name, shape, mode, widths, in_bits,
                                           act_bits):
    torch.manual_seed(7)
    cfg = make_config(name, "t", shape, CLASSES, mode, parse_widths(name, widths), in_bits,
                      act_bits)
    cm = lower.lower(_randomise_bn(build_model(cfg), 7))
    path, back = _export_import(tmp_path, cm)
    _same_ir(cm, back)
    px = _pixels(shape, seed=11)
    g = _check_against_onnx(path, back, px)
    g0 = golden.run(cm, px)
    assert np.array_equal(g.scores, g0.scores)


def _random_ir(seed: int) -> CompiledModel:
    """A random IR that no trainer would make: thresholds anywhere (also out of range),
    either polarity on constant channels, pool ops that disagree with the polarity, k-bit
    levels, a signed 1-bit first layer, padding of +-1 maps, arbitrary score offsets."""
    rng = np.random.default_rng(seed)
    layers = []
    h = w = 9
    c = 2
    bits, signed = (1, True) if seed % 2 else (int(rng.choice([4, 8])), False)
    specs = [("conv", 3, 1, 1, 2), ("conv", 3, 2, 0, 1), ("dense", 0, 1, 0, 1)]
    for i, (kind, k, stride, pad, pool) in enumerate(specs):
        out_c = int(rng.integers(3, 7))
        kh = k if kind == "conv" else h
        kw = k if kind == "conv" else w
        out_bits = 1 if i % 2 == 0 or seed % 3 == 0 else 2
        out_signed = out_bits == 1 and bool(rng.integers(0, 2))
        ly = Layer(name=f"R{i}", kind=kind, in_h=h, in_w=w, in_c=c, out_c=out_c, kh=kh, kw=kw,
                   stride=stride if kind == "conv" else 1, pad=pad if kind == "conv" else 0,
                   in_bits=bits, signed_input=signed,
                   weights=rng.integers(0, 2, (out_c, kh, kw, c)).astype(np.uint8),
                   output="threshold", out_bits=out_bits, out_signed=out_signed)
        nlev = (1 << out_bits) - 1
        ly.thresholds = rng.integers(-2, ly.acc_max + 3, (out_c, nlev)).astype(np.int64)
        ly.polarity = rng.choice([-1, 1], out_c).astype(np.int8)
        if pool > 1:
            ly.pool_k = ly.pool_stride = pool
            ly.pool_ops = rng.integers(0, 2, out_c).astype(np.uint8)
        layers.append(ly)
        h, w, c = ly.out_h, ly.out_w, ly.out_c
        bits, signed = out_bits, out_signed
    n = 5
    head = Layer(name="R3", kind="dense", in_h=h, in_w=w, in_c=c, out_c=n, kh=h, kw=w,
                 stride=1, pad=0, in_bits=bits, signed_input=signed,
                 weights=rng.integers(0, 2, (n, h, w, c)).astype(np.uint8), output="integer",
                 score_mul=int(rng.integers(1, 4)),
                 score_offset=rng.integers(-20, 20, n).astype(np.int64),
                 scale=float(np.float32(rng.uniform(0.1, 2))))
    layers.append(head)
    cm = CompiledModel(9, 9, 2, layers, classes=[str(i) for i in range(n)])
    cm.validate()
    return cm


@pytest.mark.parametrize("seed", range(6))
def test_random_ir_export_equals_golden(tmp_path, seed):
    """Any valid IR -> QONNX -> execute_onnx == golden (levels, classes, scores); importing
    it back gives an equivalent IR (canonical thresholds: the same outputs on every image)."""
    cm = _random_ir(seed)
    path, back = _export_import(tmp_path, cm)
    px = _pixels((9, 9, 2), n=32, seed=seed)
    g0 = golden.run(cm, px)
    from xnorflow.sw.qonnx_import import run_onnx

    r = run_onnx(path, back, px)
    for a, b in zip(r.activations, g0.activations, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(r.output.argmax(1), g0.predictions)
    np.testing.assert_allclose(r.output, g0.logits, rtol=1e-6, atol=1e-5)
    g1 = golden.run(back, px)
    for a, b in zip(g1.activations, g0.activations, strict=True):
        assert np.array_equal(a, b)
    np.testing.assert_allclose(g1.logits, g0.logits, rtol=1e-12)
    assert np.array_equal(g1.predictions, g0.predictions)
    # and the re-imported IR is a fixed point of export -> import
    _, again = _export_import(tmp_path, back)
    _same_ir(back, again)


# ----- the command line --------------------------------------------------------------------
def test_cli_import_compile_export(tmp_path, capsys):
    from xnorflow.cli import main

    from .brevitas_nets import export, mlp

    src = tmp_path / "tfc.onnx"
    export(mlp(0, "pm1"), (1, 64), src)
    imp = tmp_path / "imp"
    assert main(["import", str(src), "--input-shape", "8x8x1", "-o", str(imp),
                 "--classes", ",".join("abcdefghij")]) == 0
    assert "imported" in capsys.readouterr().out
    assert (imp / "model.json").is_file() and (imp / "import.json").is_file()
    assert CompiledModel.load(imp).classes == list("abcdefghij")
    # refused again without --force, nothing changed
    assert main(["import", str(src), "--input-shape", "8x8x1", "-o", str(imp)]) == 2
    assert "already exists" in capsys.readouterr().err
    comp = tmp_path / "comp"
    assert main(["compile", str(imp), "--target", "sim", "-o", str(comp), "-q"]) == 0
    out = tmp_path / "back.onnx"
    assert main(["export", str(comp), "--qonnx", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    from xnorflow.sw.qonnx_import import import_qonnx

    _same_ir(CompiledModel.load(comp), import_qonnx(out))


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from xnorflow.cli import main

    from .brevitas_nets import conv, export

    src = tmp_path / "pad.onnx"
    export(_cnn_with(conv(4, 4, padding=1), 8), (1, 1, 10, 10), src)
    out = tmp_path / "o"
    assert main(["import", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pads its +-1 input with 0" in err
    assert not out.exists()
    assert main(["import", str(src), "-o", str(out), "--input-shape", "3x3"]) == 2
    assert "--input-shape must be HxWxC" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--qonnx", str(tmp_path / "x.onnx")]) == 2
    assert "neither a model folder" in capsys.readouterr().err


def test_cli_exports_a_trained_checkpoint(tmp_path, capsys):
    """`xnorflow export` lowers a checkpoint folder first; importing the file gives that IR."""
    import json

    from xnorflow.cli import main
    from xnorflow.sw.qonnx_import import import_qonnx

    cfg = make_config("mlp", "digits", (8, 8, 1), CLASSES, "xnor", [16], 8)
    model = _randomise_bn(build_model(cfg), 3)
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, ckpt / "checkpoint.pt")
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "run.onnx"
    assert main(["export", str(ckpt), "--qonnx", str(out)]) == 0
    _same_ir(lower.lower(model), import_qonnx(out))
    assert main(["export", str(ckpt), "--qonnx", str(out)]) == 2  # exists, no --force
    assert "already exists" in capsys.readouterr().err
