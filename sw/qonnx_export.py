"""QONNX export: a compiled model (the integer IR) -> a QONNX graph that qonnx's executor runs.

Every layer becomes standard ONNX plus qonnx's custom ops, all on exact small integers in
float32 (so ``execute_onnx`` reproduces the golden model bit for bit)::

    input  pixel / divisor -> Mul, Add -> Quant (unsigned b-bit, ROUND)     = pixel >> (8 - b)
           (one signed bit: Add(-0.5) -> BipolarQuant)                      = +-1
    conv   [Pad(-1) for +-1 inputs] -> Conv(W in {-1,+1}, BIPOLAR)
    dense  [Flatten] -> MatMul(W in {-1,+1}, BIPOLAR)
    pool   [Mul(s)] -> MaxPool -> [Mul(s)]   on the dot product, s = +-1 per channel
    +-1    Add(K - 2T) -> Mul(pol) -> BipolarQuant                            (out_signed)
    levels Add(e) -> Mul(pol) -> MultiThreshold(pol * k * T)                  (unsigned levels)
    score  [Mul(score_mul / 2)] -> Add -> Mul(scale) [-> Add(logit bias)]

The output is the logits ``scale * score`` (plus ``meta["logit_bias"]`` for imported models).
The input convention (``pixel / divisor``, NCHW) is recorded in the metadata property
:data:`~xnorflow.sw.qonnx_import.DIVISOR_PROP`, which ``xnorflow import`` reads back.
See ``docs/interop.md``.
"""

from __future__ import annotations

import numpy as np

from . import encoding as enc
from .ir import CompiledModel, Layer
from .qonnx_import import DEFAULT_DIVISOR, DIVISOR_PROP, QONNX_DOMAIN, need_interop

__all__ = ["export_qonnx", "OPSET"]

OPSET = 13


class _Builder:
    def __init__(self):
        self.nodes = []
        self.inits = {}
        self.dtypes = {}
        self.n = 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits[name] = np.asarray(value, dtype=dtype)
        return name

    def node(self, op: str, inputs: list[str], name: str, custom: bool = False, **attrs) -> str:
        from onnx import helper

        out = f"{name}_out"
        kw = {"domain": QONNX_DOMAIN} if custom else {}
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **kw, **attrs))
        return out


def _chan(v: np.ndarray, rank: int) -> np.ndarray:
    """Per-channel constant shaped for an ``(N, C)`` or ``(N, C, H, W)`` tensor."""
    v = np.asarray(v, dtype=np.float32).reshape(1, -1)
    return v.reshape(1, -1, 1, 1) if rank == 4 else v


def _input_stage(b: _Builder, x: str, first: Layer, divisor: float) -> str:
    """``pixel / divisor`` -> xnorflow's input values (``pixel >> (8 - b)``, or +-1)."""
    bits = first.in_bits
    shift = enc.PIXEL_BITS - bits
    if first.signed_input:  # one bit, +-1: pixel >= 128
        half = b.const("in/half", -127.5 / divisor)  # p / divisor - 127.5 / divisor >= 0
        y = b.node("Add", [x, half], "in/Add")
        return b.node("BipolarQuant", [y, b.const("in/one", 1.0)], "in/BipolarQuant", custom=True)
    # round((p + 0.5) / 2^shift - 0.5) = p >> shift, with a margin of 1 / 2^(shift+1)
    mul = b.const("in/mul", divisor / (1 << shift))
    y = b.node("Mul", [x, mul], "in/Mul")
    off = 0.5 / (1 << shift) - 0.5
    if off:
        y = b.node("Add", [y, b.const("in/offset", off)], "in/Add")
    return b.node("Quant", [y, b.const("in/scale", 1.0), b.const("in/zeropt", 0.0),
                            b.const("in/bitwidth", float(bits))], "in/Quant", custom=True,
                  signed=0, narrow=0, rounding_mode="ROUND")


def _layer(b: _Builder, x: str, layer: Layer, rank: int) -> tuple[str, int]:
    """One IR layer on tensor ``x`` (rank 4 NCHW, or rank 2); returns the output and its rank."""
    nm = layer.name
    w = np.where(np.asarray(layer.weights) > 0, 1.0, -1.0).astype(np.float32)  # (O, kh, kw, C)
    if layer.kind == "conv":
        if layer.pad and layer.signed_input:
            # xnorflow pads +-1 maps with -1 (bit 0); ONNX Conv would pad with 0
            p = layer.pad
            pads = b.const(f"{nm}/pads", [0, 0, p, p, 0, 0, p, p], np.int64)
            x = b.node("Pad", [x, pads, b.const(f"{nm}/pad_value", -1.0)], f"{nm}/Pad",
                       mode="constant")
            conv_pad = 0
        else:
            conv_pad = layer.pad  # unsigned levels pad with 0, as ONNX does
        wn = b.const(f"{nm}/W", w.transpose(0, 3, 1, 2))
        b.dtypes[wn] = "BIPOLAR"
        y = b.node("Conv", [x, wn], f"{nm}/Conv", kernel_shape=[layer.kh, layer.kw],
                   strides=[layer.stride] * 2, pads=[conv_pad] * 4, dilations=[1, 1], group=1)
        rank = 4
    else:
        if rank == 4:
            x = b.node("Flatten", [x], f"{nm}/Flatten", axis=1)
        wn = b.const(f"{nm}/W", w.transpose(0, 3, 1, 2).reshape(layer.out_c, -1).T)  # CHW rows
        b.dtypes[wn] = "BIPOLAR"
        y = b.node("MatMul", [x, wn], f"{nm}/MatMul")
        rank = 2
    # the MatMul/Conv gives dot = sum v_i w_i over the input values v; the accumulator is
    # acc = (dot + K) / 2 for +-1 inputs, dot + qmax * n_neg for unsigned levels
    k = layer.k_valid
    qmax = (1 << layer.in_bits) - 1
    kappa = 2 if layer.signed_input else 1  # dot + e = kappa * acc
    e = np.full(layer.out_c, k, np.int64) if layer.signed_input else qmax * layer.n_neg
    if layer.output == "integer":
        # score = score_mul * acc + offset = (score_mul / kappa) * (dot + e) + offset
        m = layer.score_mul / kappa
        if m != 1:
            y = b.node("Mul", [y, b.const(f"{nm}/score_mul", m)], f"{nm}/Mul")
        add = m * e + np.asarray(layer.score_offset, dtype=np.int64)
        y = b.node("Add", [y, b.const(f"{nm}/score_add", _chan(add, rank))], f"{nm}/Add")
        return b.node("Mul", [y, b.const(f"{nm}/scale", layer.scale)], f"{nm}/scale"), rank
    pol = np.asarray(layer.polarity, dtype=np.int64)
    t = np.asarray(layer.thresholds, dtype=np.int64)
    if layer.pool_k > 1:
        # pool the dot product: OR of a non-decreasing threshold (AND of a non-increasing one)
        # is the threshold of the max; otherwise of the min, i.e. -max(-dot)
        ops = np.asarray(layer.pool_ops)
        s = np.where((ops == enc.POOL_OR) == (pol > 0), 1.0, -1.0)
        if (s < 0).any():
            y = b.node("Mul", [y, b.const(f"{nm}/pool_sign", _chan(s, 4))], f"{nm}/PoolSign")
        y = b.node("MaxPool", [y], f"{nm}/MaxPool", kernel_shape=[layer.pool_k] * 2,
                   strides=[layer.pool_stride] * 2, pads=[0, 0, 0, 0])
        if (s < 0).any():
            y = b.node("Mul", [y, b.const(f"{nm}/pool_unsign", _chan(s, 4))], f"{nm}/PoolUnsign")
    if layer.out_signed:
        # bit = [pol * (acc - T) >= 0] = [pol * (dot + e - kappa * T) >= 0]
        y = b.node("Add", [y, b.const(f"{nm}/thr", _chan(e - kappa * t[:, 0], rank))],
                   f"{nm}/Add")
        y = b.node("Mul", [y, b.const(f"{nm}/pol", _chan(pol, rank))], f"{nm}/Mul")
        return b.node("BipolarQuant", [y, b.const(f"{nm}/one", 1.0)], f"{nm}/BipolarQuant",
                      custom=True), rank
    # level = #{j : pol * (dot + e) >= pol * kappa * T_j}
    y = b.node("Add", [y, b.const(f"{nm}/e", _chan(e, rank))], f"{nm}/Add")
    y = b.node("Mul", [y, b.const(f"{nm}/pol", _chan(pol, rank))], f"{nm}/Mul")
    th = b.const(f"{nm}/thresholds", (pol[:, None] * kappa * t).astype(np.float32))
    return b.node("MultiThreshold", [y, th], f"{nm}/MultiThreshold", custom=True,
                  out_dtype=f"UINT{layer.out_bits}", out_scale=1.0, out_bias=0.0,
                  data_layout="NCHW" if rank == 4 else "NC"), rank


def export_qonnx(model: CompiledModel, divisor: float = DEFAULT_DIVISOR):
    """Build the QONNX ``ModelProto`` of a compiled model (see the module docstring)."""
    need_interop()
    from onnx import TensorProto, helper, numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    model.validate()
    b = _Builder()
    x = _input_stage(b, "image", model.layers[0], divisor)
    rank = 4
    for layer in model.layers:
        x, rank = _layer(b, x, layer, rank)
    bias = float(model.meta.get("logit_bias", 0.0) or 0.0)
    if bias:
        x = b.node("Add", [x, b.const("logit_bias", bias)], "logit_bias")
    n_cls = model.layers[-1].out_c
    b.nodes[-1].output[0] = "logits"
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                        [1, model.in_c, model.in_h, model.in_w])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_cls])
    graph = helper.make_graph(b.nodes, "xnorflow", [inp], [out],
                              initializer=[numpy_helper.from_array(v, k)
                                           for k, v in b.inits.items()])
    proto = qonnx_make_model(graph, producer_name="xnorflow",
                             opset_imports=[helper.make_opsetid("", OPSET),
                                            helper.make_opsetid(QONNX_DOMAIN, 1)])
    helper.set_model_props(proto, {DIVISOR_PROP: repr(float(divisor)),
                                   "xnorflow.classes": ",".join(model.classes)})
    mw = ModelWrapper(proto).transform(InferShapes())
    for name, dt in b.dtypes.items():
        from qonnx.core.datatype import DataType

        mw.set_tensor_datatype(name, DataType[dt])
    return mw.model
