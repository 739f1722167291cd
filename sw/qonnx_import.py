"""QONNX import: a binary network exported by Brevitas (``export_qonnx``) -> the integer IR.

The ONNX model is first reduced with qonnx's own passes (``cleanup_model``, constant folding of
the weight quantisers, ``GemmToMatMul``, ``BatchNormToAffine``, ``LowerConvsToMatMul``); then
one walk along the graph matches, layer by layer::

    [Transpose] [Pad] [Im2Col] MatMul(x, W = +-s_n) [Transpose]
        -> per-channel elementwise chain (Mul/Add/Sub/Div/Relu/..., at most one MaxPool)
        -> quantiser (BipolarQuant, Quant or MultiThreshold) [MaxPool]

and, after the last MatMul, a per-channel affine chain to the graph output (the score head).
Each hidden chain is folded into the IR's integer thresholds by :func:`xnorflow.sw.lower.
fold_thresholds` with the same exactness check (:func:`~xnorflow.sw.lower.verify_thresholds`)
as a trained model: the function ``acc -> level`` it folds runs the model's **own nodes**
(standard ops on onnxruntime, qonnx's custom ops with qonnx's code: what ``execute_onnx``
runs), so ties (a value exactly on a threshold) are decided as the ONNX model decides them.

Input convention: the ONNX model's input is ``pixel / divisor`` in float32 (``divisor = 255``
is torchvision's ``ToTensor``), NCHW. The input quantiser must map the 256 pixel values to
xnorflow's ``b``-bit input ``pixel >> (8 - b)`` (unsigned levels, or +-1 for one bit).

Anything the IR cannot represent exactly is refused with a :class:`QonnxImportError` that names
the ONNX node (its name in the file given) and the reason. Real-valued semantics: where the
ONNX graph multiplies by scales that are not powers of two (a learned input scale such as
1/255, weight scales such as 0.1), its float32 execution rounds the dot products; xnorflow
computes them exactly, so the two can differ only where a pre-activation lies within float
rounding of a threshold. :func:`import_qonnx` records such scales in ``meta["inexact_scales"]``.
See ``docs/interop.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import encoding as enc
from .errors import UserError, missing_extra
from .ir import CompiledModel, Layer
from .lower import FLOAT32_EXACT, MAX_ACC_BITS, NotMonotoneError, fold_thresholds, verify_thresholds

__all__ = ["QonnxImportError", "import_qonnx", "need_interop", "run_onnx", "QONNX_DOMAIN",
           "DEFAULT_DIVISOR", "onnx_input", "DIVISOR_PROP"]

#: Domain of qonnx's custom ops (Quant, BipolarQuant, MultiThreshold, Im2Col).
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Default input convention: the ONNX input is ``pixel / 255`` (torchvision's ToTensor).
DEFAULT_DIVISOR = 255.0
#: ONNX metadata property in which ``xnorflow export`` records its input divisor.
DIVISOR_PROP = "xnorflow.input_divisor"
#: Widest activation the importer accepts (xnorflow's k-bit activations go up to 8 bits).
MAX_LEVEL_BITS = 8

INTEROP_PACKAGES = ("onnx", "onnxruntime", "qonnx")
QUANTISERS = ("BipolarQuant", "Quant", "MultiThreshold")
ELEMENTWISE = ("Mul", "Add", "Sub", "Div", "Neg", "Abs", "Relu", "Clip", "Identity", "Sigmoid",
               "Tanh")
AFFINE = ("Mul", "Add", "Sub", "Div", "Neg", "Identity")
LAYOUT = ("Transpose", "Flatten", "Reshape", "Squeeze", "Unsqueeze")


class QonnxImportError(UserError, ValueError):
    """A QONNX model xnorflow cannot represent exactly; the message names the node and why."""


def need_interop() -> None:
    """Raise :class:`~xnorflow.sw.errors.MissingExtra` if the optional ``[interop]`` packages
    are missing."""
    import importlib.util

    missing = [p for p in INTEROP_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise missing_extra("interop", ", ".join(missing))


def onnx_input(pixels: np.ndarray, divisor: float = DEFAULT_DIVISOR) -> np.ndarray:
    """The ONNX input for uint8 images ``(N, H, W, C)``: NCHW float32 ``pixel / divisor``."""
    px = np.asarray(pixels)
    if px.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8, not {px.dtype}")
    return np.ascontiguousarray(px.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(divisor)


# ----- graph helpers ---------------------------------------------------------------------
def _origin(node) -> dict:
    try:
        return json.loads(node.doc_string)
    except (ValueError, TypeError):
        return {}


def _label(node) -> str:
    """``Conv node '/c1/Conv'``: the op and the node's name in the file that was imported."""
    o = _origin(node)
    name = o.get("node") or node.name or "(unnamed)"
    src = o.get("op")
    if not src or src == node.op_type:
        return f"{node.op_type} node {name!r}"
    return f"{src} node {name!r} (its {node.op_type} after qonnx's lowering)"


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _stamp_origins(model) -> None:
    """Remember each node's name, op and first output in the file (``doc_string``, JSON)."""
    for i, n in enumerate(model.graph.node):
        n.doc_string = json.dumps({"node": n.name or f"{n.op_type} #{i}", "op": n.op_type,
                                   "out": n.output[0] if n.output else ""})


def _transform(model, transformation):
    """Apply a qonnx transformation; nodes it creates inherit the origin of what they replace.

    A new node takes the origin of the old node that produced the same tensor, else that of
    its (tagged) consumer: ``BatchNormToAffine``'s Mul/Add get the BatchNormalization's name,
    ``LowerConvsToMatMul``'s Transpose/Im2Col/MatMul the Conv's.
    """
    by_out = {}
    for n in model.graph.node:
        o = _origin(n)
        for t in n.output:
            by_out[t] = {"node": o.get("node", n.name), "op": o.get("op", n.op_type)}
    model = model.transform(transformation)
    todo = [n for n in model.graph.node if not n.doc_string]
    for n in todo:
        for t in n.output:
            if t in by_out:
                n.doc_string = json.dumps(by_out[t])
                break
    changed = True
    while changed:
        changed = False
        for n in todo:
            if n.doc_string:
                continue
            for c in model.find_consumers(n.output[0]) or []:
                if c.doc_string:
                    o = _origin(c)
                    n.doc_string = json.dumps({"node": o.get("node"), "op": o.get("op")})
                    changed = True
                    break
    return model


def _check_convs(model) -> None:
    """Refuse Conv nodes the IR has no field for (before qonnx lowers them)."""
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        group = _attr(n, "group", 1)
        if group != 1:
            raise QonnxImportError(f"{_label(n)}: grouped convolution (group={group}) is not "
                                   "supported; xnorflow's convolutions see every input channel")
        dil = list(_attr(n, "dilations", [1, 1]))
        if any(d != 1 for d in dil):
            raise QonnxImportError(f"{_label(n)}: dilation {dil} is not supported")
        auto = _attr(n, "auto_pad", "NOTSET")
        if auto not in ("NOTSET", "VALID"):
            raise QonnxImportError(f"{_label(n)}: auto_pad={auto} is not supported; export with "
                                   "explicit pads")
        k = list(_attr(n, "kernel_shape", []))
        if len(k) != 2 or k[0] != k[1]:
            raise QonnxImportError(f"{_label(n)}: kernel {k} is not square (2-D, kh == kw)")
        s = list(_attr(n, "strides", [1, 1]))
        if len(s) != 2 or s[0] != s[1]:
            raise QonnxImportError(f"{_label(n)}: strides {s} differ; xnorflow has one stride")
        p = list(_attr(n, "pads", [0, 0, 0, 0]))
        if len(set(p)) > 1:
            raise QonnxImportError(f"{_label(n)}: asymmetric padding {p} is not supported")
        if model.get_initializer(n.input[1]) is None:
            raise QonnxImportError(f"{_label(n)}: weights are not constant")


def _reduce(model):
    """qonnx's cleanup and lowering, with each node's origin carried along."""
    from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
    from qonnx.util.cleanup import cleanup_model

    for n in model.graph.node:
        if n.op_type in ("Gemm",) and len(n.input) < 3:
            raise QonnxImportError(
                f"{_label(n)}: Gemm without a bias input (torch >= 2.9's dynamo exporter writes "
                "these and qonnx's GemmToMatMul cannot lower them): export with dynamo=False")
    model = cleanup_model(model)
    model = _transform(model, FoldConstants(exclude_op_types=[]))  # weight quantisers -> +-s
    _check_convs(model)
    for t in (GemmToMatMul(), BatchNormToAffine(), LowerConvsToMatMul(), InferShapes()):
        model = _transform(model, t)
    return model


# ----- evaluating nodes as execute_onnx does ----------------------------------------------
class _NodeEval:
    """One elementwise node, evaluated on ``(M, C)`` float32 arrays as ``execute_onnx`` would.

    Standard ops run as a one-node onnxruntime session (built once), qonnx's custom ops with
    qonnx's own ``execute_node``. Constant inputs are reshaped to ``(1, C)`` (per channel) or
    kept as scalars.
    """

    def __init__(self, node, consts: dict, dynamic: str, opset: int):
        from onnx import TensorProto, helper, numpy_helper

        self.node = node
        self.custom = node.domain == QONNX_DOMAIN or node.op_type in QUANTISERS
        names = []
        inits = []
        self.feed = {}
        for i, name in enumerate(node.input):
            if name == dynamic:
                names.append("x")
            elif name == "":
                names.append("")
            else:
                c = consts[name]
                names.append(f"c{i}")
                if self.custom:
                    self.feed[f"c{i}"] = c
                else:
                    inits.append(numpy_helper.from_array(c, f"c{i}"))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MultiThreshold":
            attrs["data_layout"] = "NC"  # evaluated on (M, C); the caller checked the real axis
        if self.custom:
            from qonnx.custom_op.registry import getCustomOp

            self.proto = helper.make_node(node.op_type, names, ["y"], domain=QONNX_DOMAIN,
                                          **attrs)
            self.op = getCustomOp(self.proto)
        else:
            import onnxruntime as ort

            proto = helper.make_node(node.op_type, names, ["y"], **attrs)
            x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", "C"])
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
            graph = helper.make_graph([proto], "one-node", [x], [y], initializer=inits)
            m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
            m.ir_version = min(m.ir_version, 10)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.sess = ort.InferenceSession(m.SerializeToString(), opts,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.custom:
            ctx = dict(self.feed)
            ctx["x"] = x
            ctx["y"] = np.zeros_like(x)
            self.op.execute_node(ctx, None)
            return np.asarray(ctx["y"], dtype=np.float32)
        return self.sess.run(None, {"x": x})[0]


def _run_chain(ops: list, x: np.ndarray) -> np.ndarray:
    for op in ops:
        x = op(x)
    return x


# ----- the walk --------------------------------------------------------------------------
@dataclass
class _Levels:
    """What a tensor holds: ``values[u]`` for level ``u`` (``u`` in ``0..2^bits - 1``)."""

    values: np.ndarray  # float64, affine in u (up to float rounding)
    bits: int
    signed: bool  # two levels -a, +a: xnorflow's +-1 activations

    @property
    def step(self) -> float:
        return float(self.values[1] - self.values[0])

    @property
    def base(self) -> float:
        return float(self.values[0])


def _levels_from_values(vals: np.ndarray, node, where: str) -> _Levels:
    """Level set from the distinct values a quantiser produces, ordered by its integer."""
    n = len(vals)
    if n < 2:
        raise QonnxImportError(f"{_label(node)}: {where} has a single level; nothing to compute")
    bits = max(1, math.ceil(math.log2(n)))
    if bits > MAX_LEVEL_BITS:
        raise QonnxImportError(f"{_label(node)}: {where} has {n} levels; xnorflow's activations "
                               f"have at most {MAX_LEVEL_BITS} bits")
    vals = np.asarray(vals, dtype=np.float64)
    step = (vals[-1] - vals[0]) / (n - 1)
    ideal = vals[0] + step * np.arange(n)
    if step == 0 or np.abs(vals - ideal).max() > 1e-6 * abs(step) * n:
        raise QonnxImportError(f"{_label(node)}: {where}'s levels {vals[:4].tolist()}... are not "
                               "evenly spaced, so dot products over them are not integer")
    full = vals[0] + step * np.arange(1 << bits)
    full[:n] = vals
    signed = n == 2 and vals[0] == -vals[1]
    return _Levels(full, bits, bool(signed))


def _is_dyadic(x: float) -> bool:
    """``x`` is an integer times a power of two with a short mantissa (float32-exact sums)."""
    if x == 0:
        return True
    m, _ = math.frexp(abs(x))
    return (m * (1 << 12)) == int(m * (1 << 12))


@dataclass
class _Tensor:
    """The walk's view of the current tensor: name, axes, map size, levels."""

    name: str
    axes: tuple  # e.g. ("N", "C", "H", "W"); "F" = flattened (order in flat_order)
    h: int
    w: int
    c: int
    levels: _Levels | None = None
    flat_order: tuple = ()
    pad: int = 0  # explicit Pad nodes waiting for the next convolution


class _Importer:
    def __init__(self, model, divisor: float, input_shape, source: str):
        self.m = model
        self.divisor = float(divisor)
        self.input_shape = input_shape
        self.source = source
        std = [o.version for o in model.model.opset_import if o.domain in ("", "ai.onnx")]
        self.opset = std[0] if std else 13
        self.inexact: list[str] = []

    # -- small helpers
    def const(self, name: str) -> np.ndarray | None:
        a = self.m.get_initializer(name)
        return None if a is None else np.asarray(a)

    def next_node(self, t: str):
        cons = self.m.find_consumers(t) or []
        outs = [o.name for o in self.m.graph.output]
        if t in outs:
            if cons:
                raise QonnxImportError(f"tensor {t!r} is a graph output and feeds "
                                       f"{_label(cons[0])}; only chains are supported")
            return None
        if len(cons) != 1:
            names = ", ".join(_label(c) for c in cons) or "nothing"
            prod = self.m.find_producer(t)
            who = _label(prod) if prod is not None else f"input {t!r}"
            raise QonnxImportError(f"{who}: its output feeds {names}; only single chains of "
                                   "layers are supported (no branches or residual connections)")
        return cons[0]

    def dyn_input(self, node, t: str) -> None:
        others = [i for i in node.input if i and i != t and self.const(i) is None]
        if others:
            raise QonnxImportError(f"{_label(node)}: combines two computed tensors ({t!r} and "
                                   f"{others[0]!r}); only chains with constant operands are "
                                   "supported")

    def chan_const(self, arr: np.ndarray, cur: _Tensor, node) -> np.ndarray:
        """A constant operand as a scalar ``(1,)`` or per-channel ``(1, C)`` array."""
        a = np.asarray(arr, dtype=np.float32)
        if a.size == 1:
            return a.reshape(1)
        axes = cur.axes
        if a.ndim > len(axes):
            raise QonnxImportError(f"{_label(node)}: constant of shape {a.shape} does not fit")
        shape = (1,) * (len(axes) - a.ndim) + a.shape
        for ax, n in zip(axes, shape, strict=True):
            per_chan = ax == "C" or (ax == "F" and cur.h == cur.w == 1)
            if n != 1 and not per_chan:
                raise QonnxImportError(
                    f"{_label(node)}: constant of shape {a.shape} varies along axis {ax!r}; only "
                    "per-channel constants fold into per-channel thresholds")
        return a.reshape(-1).reshape(1, -1) if a.size == cur.c else a.reshape(1)

    def node_eval(self, node, cur: _Tensor) -> _NodeEval:
        consts = {}
        for i, name in enumerate(node.input):
            if not name or name == cur.name:
                continue
            a = self.const(name)
            if a is None:
                self.dyn_input(node, cur.name)
            if node.op_type == "MultiThreshold" and i == 1:
                consts[name] = np.asarray(a, dtype=np.float32)
            elif node.op_type == "Quant" and i == 3:
                consts[name] = np.asarray(a, dtype=np.float32).reshape(1)
            else:
                consts[name] = self.chan_const(a, cur, node)
        if node.op_type == "MultiThreshold":
            th = consts[node.input[1]]
            if th.ndim != 2 or th.shape[0] not in (1, cur.c):
                raise QonnxImportError(f"{_label(node)}: thresholds of shape {th.shape} are not "
                                       f"per channel ({cur.c} channels)")
            layout = _attr(node, "data_layout", "") or {2: "NC", 3: "NWC", 4: "NCHW"}.get(
                len(cur.axes), "NC")
            if th.shape[0] > 1 and ("C" not in cur.axes or "C" not in layout
                                    or layout.index("C") != cur.axes.index("C")):
                raise QonnxImportError(f"{_label(node)}: thresholds per channel along layout "
                                       f"{layout!r} but the tensor's axes are {cur.axes}")
        return _NodeEval(node, consts, cur.name, self.opset)

    # -- layout ops
    def layout(self, node, cur: _Tensor) -> _Tensor:
        op = node.op_type
        out = node.output[0]
        if op == "Transpose":
            perm = list(_attr(node, "perm", []))
            if "F" in cur.axes or sorted(perm) != list(range(len(cur.axes))):
                raise QonnxImportError(f"{_label(node)}: transpose {perm} of {cur.axes}")
            axes = tuple(cur.axes[p] for p in perm)
            if axes[0] != "N":
                raise QonnxImportError(f"{_label(node)}: moves the batch axis")
            return _Tensor(out, axes, cur.h, cur.w, cur.c, cur.levels, cur.flat_order, cur.pad)
        shape = list(self.m.get_tensor_shape(out) or [])
        if op in ("Squeeze", "Unsqueeze", "Reshape", "Flatten"):
            if len(shape) == 2 and shape[0] == 1 and shape[1] == cur.h * cur.w * cur.c:
                if "F" in cur.axes or "K" in cur.axes:
                    return _Tensor(out, cur.axes, cur.h, cur.w, cur.c, cur.levels,
                                   cur.flat_order, cur.pad)
                order = tuple(a for a in cur.axes if a != "N")
                if cur.h * cur.w == 1:
                    return _Tensor(out, ("N", "C"), 1, 1, cur.c, cur.levels, (), cur.pad)
                return _Tensor(out, ("N", "F"), cur.h, cur.w, cur.c, cur.levels, order, cur.pad)
            if len(shape) == 4 and cur.h == cur.w == 1 and shape == [1, cur.c, 1, 1]:
                return _Tensor(out, ("N", "C", "H", "W"), 1, 1, cur.c, cur.levels, (), cur.pad)
        raise QonnxImportError(f"{_label(node)}: {op} to shape {shape} is not a flatten of the "
                               f"{cur.h}x{cur.w}x{cur.c} map; not supported")

    # -- the input
    def input_stage(self) -> _Tensor:
        g = self.m.graph
        if len(g.input) != 1 or len(g.output) != 1:
            raise QonnxImportError(f"the model has {len(g.input)} inputs and {len(g.output)} "
                                   "outputs; xnorflow imports one image in, one score vector out")
        name = g.input[0].name
        shape = list(self.m.get_tensor_shape(name) or [])
        if len(shape) == 4 and shape[0] == 1:
            c, h, w = shape[1:]
            cur = _Tensor(name, ("N", "C", "H", "W"), h, w, c)
            if self.input_shape and tuple(self.input_shape) != (h, w, c):
                raise QonnxImportError(f"input {name!r} is {h}x{w}x{c} (NCHW {shape}), not the "
                                       f"--input-shape {'x'.join(map(str, self.input_shape))}")
        elif len(shape) == 2 and shape[0] == 1:
            if not self.input_shape:
                raise QonnxImportError(f"input {name!r} is flat {tuple(shape)}: give the image "
                                       "shape with --input-shape HxWxC (e.g. 8x8x1)")
            h, w, c = self.input_shape
            if h * w * c != shape[1]:
                raise QonnxImportError(f"--input-shape {h}x{w}x{c} has {h * w * c} values but "
                                       f"input {name!r} has {shape[1]}")
            # a flat input is the NCHW image flattened in C, H, W order (torch's flatten)
            cur = _Tensor(name, ("N", "F"), h, w, c, None, ("C", "H", "W"))
            if h * w == 1:
                cur = _Tensor(name, ("N", "C"), 1, 1, c)
        else:
            raise QonnxImportError(f"input {name!r} has shape {shape}; expected (1, C, H, W) or "
                                   "a flat (1, K) with --input-shape")
        px = np.arange(256, dtype=np.float32)[:, None] / np.float32(self.divisor)
        vals = px
        quant = None
        chain_nodes = []
        while True:
            node = self.next_node(cur.name)
            if node is None:
                raise QonnxImportError("the graph has no binary MatMul/Conv layer")
            op = node.op_type
            if op in LAYOUT:
                cur = self.layout(node, cur)
                continue
            if op in ("MatMul", "Im2Col", "Pad"):
                break
            if op not in ELEMENTWISE + QUANTISERS:
                raise QonnxImportError(f"{_label(node)}: op {op} is not supported before the "
                                       "first layer")
            if op == "Quant" and _attr(node, "signed", 1) and \
                    int(self.const(node.input[3]).reshape(-1)[0]) > 1:
                raise QonnxImportError(
                    f"{_label(node)}: signed input quantiser; xnorflow's first layer reads "
                    "unsigned pixels (pixel >> (8 - b)) or, for one bit, +-1")
            for i in node.input[1:]:
                a = self.const(i) if i else None
                if i and a is None:
                    self.dyn_input(node, cur.name)
                if i and (a.size != 1 if op != "MultiThreshold" else a.shape[0] != 1):
                    raise QonnxImportError(
                        f"{_label(node)}: per-channel input scaling {a.shape} is not "
                        "representable; xnorflow quantises every pixel the same way")
            flat = _Tensor(cur.name, ("N", "C"), 1, 1, 1)
            ev = self.node_eval(node, flat)
            vals = ev(vals)
            chain_nodes.append(node)
            if op in QUANTISERS:
                quant = node
            cur = _Tensor(node.output[0], cur.axes, cur.h, cur.w, cur.c, None, cur.flat_order)
        if quant is None:
            raise QonnxImportError(f"{_label(node)}: its input is not quantised (no Quant or "
                                   "BipolarQuant before it); xnorflow needs integer pixels")
        v = vals[:, 0].astype(np.float64)
        uniq = np.unique(v)
        if len(uniq) < 2:
            raise QonnxImportError(
                f"{_label(quant)}: maps every pixel (input = pixel / {self.divisor:g}) to "
                f"{uniq[0]:g}; nothing to compute (Brevitas exports a 1-bit unsigned "
                "QuantIdentity as BipolarQuant, +1 for every input >= 0: feed 2x - 1 to a "
                "binary quantiser instead)")
        if quant.op_type == "Quant" and len(uniq) & (len(uniq) - 1):
            raise QonnxImportError(
                f"{_label(quant)}: maps the 256 pixel values (input = pixel / "
                f"{self.divisor:g}) to {len(uniq)} levels, not 2^b; xnorflow's b-bit input is "
                "pixel >> (8 - b) (check --input-divisor)")
        levels = _levels_from_values(uniq, quant, "the input quantiser")
        bits = levels.bits
        u = np.searchsorted(uniq, v)
        want = np.arange(256) >> (enc.PIXEL_BITS - bits)
        if not np.array_equal(u, want):
            p = int(np.argmax(u != want))
            raise QonnxImportError(
                f"{_label(quant)}: maps pixel {p} (input {p}/{self.divisor:g}) to level "
                f"{int(u[p])} of {len(uniq)}; xnorflow's {bits}-bit input is pixel >> "
                f"{enc.PIXEL_BITS - bits} = {int(want[p])} (check --input-divisor)")
        if not (_is_dyadic(levels.step) and _is_dyadic(levels.base)):
            self.inexact.append(f"{_label(quant)}: input level step {levels.step:.6g}")
        cur.levels = levels
        return cur

    # -- one layer
    def weights(self, node, cur: _Tensor, w_name: str):
        w = self.const(w_name)
        if w is None:
            raise QonnxImportError(f"{_label(node)}: weights are not constant")
        w = np.asarray(w, dtype=np.float64)
        mag = np.abs(w)
        scale = mag.max(axis=0)
        if (mag == 0).any() or not (mag == scale[None, :]).all():
            col = int(np.argmax((mag != scale[None, :]).any(axis=0) | (mag == 0).any(axis=0)))
            vals = np.unique(w[:, col])[:4].tolist()
            raise QonnxImportError(f"{_label(node)}: weights are not binary (output channel {col} "
                                   f"holds {vals}...); xnorflow needs +-s per output channel")
        for s in np.unique(scale):
            if not _is_dyadic(float(s)):
                self.inexact.append(f"{_label(node)}: weight scale {float(s):.6g}")
        return w > 0, scale

    def layer(self, idx: int, cur: _Tensor) -> tuple[_Tensor | None, Layer]:
        name = f"L{idx}"
        node = self.next_node(cur.name)
        pad = cur.pad
        conv = None
        while node is not None and node.op_type in LAYOUT + ("Pad", "Im2Col"):
            op = node.op_type
            if op in LAYOUT:
                cur = self.layout(node, cur)
            elif op == "Pad":  # the map keeps its size; the padding goes to the convolution
                pad += self.pad_node(node, cur)
                cur = _Tensor(node.output[0], cur.axes, cur.h, cur.w, cur.c, cur.levels,
                              cur.flat_order, 0)
            else:
                conv = self.im2col(node, cur, pad)
                pad = 0
                cur = _Tensor(node.output[0], ("N", "H", "W", "K"), cur.h, cur.w, cur.c,
                              cur.levels)
            node = self.next_node(cur.name)
        if node is None or node.op_type != "MatMul":
            what = _label(node) if node is not None else "the graph output"
            raise QonnxImportError(f"{what}: expected a binary MatMul/Conv layer after "
                                   f"{cur.name!r}")
        if pad:
            raise QonnxImportError(f"{_label(node)}: explicit padding before a dense layer")
        mm = node
        if mm.input[0] != cur.name:
            raise QonnxImportError(f"{_label(mm)}: the activation must be the first operand")
        bits, wscale = self.weights(mm, cur, mm.input[1])
        out_c = bits.shape[1]
        lv = cur.levels
        if conv is not None:
            kh, stride, p = conv
            wt = bits.T.reshape(out_c, kh, kh, cur.c)
            geo = dict(kind="conv", kh=kh, kw=kh, stride=stride, pad=p)
            ho = (cur.h + 2 * p - kh) // stride + 1
            wo = (cur.w + 2 * p - kh) // stride + 1
            out = _Tensor(mm.output[0], ("N", "H", "W", "C"), ho, wo, out_c)
        elif cur.axes[-1] == "C" and len(cur.axes) == 4 and cur.h * cur.w > 1:
            # a 1x1 convolution that qonnx lowered without Im2Col
            if cur.axes != ("N", "H", "W", "C"):
                raise QonnxImportError(f"{_label(mm)}: unexpected input layout {cur.axes}")
            wt = bits.T.reshape(out_c, 1, 1, cur.c)
            geo = dict(kind="conv", kh=1, kw=1, stride=1, pad=0)
            out = _Tensor(mm.output[0], ("N", "H", "W", "C"), cur.h, cur.w, out_c)
        else:
            k = bits.shape[0]
            if k != cur.h * cur.w * cur.c:
                raise QonnxImportError(f"{_label(mm)}: {k} inputs but the map is "
                                       f"{cur.h}x{cur.w}x{cur.c}")
            if cur.axes == ("N", "F"):
                order = cur.flat_order
                dims = {"H": cur.h, "W": cur.w, "C": cur.c}
                wt = bits.T.reshape((out_c,) + tuple(dims[a] for a in order))
                wt = wt.transpose((0,) + tuple(1 + order.index(a) for a in ("H", "W", "C")))
            else:
                wt = bits.T.reshape(out_c, cur.h, cur.w, cur.c)
            geo = dict(kind="dense", kh=cur.h, kw=cur.w, stride=1, pad=0)
            out = _Tensor(mm.output[0], ("N", "C"), 1, 1, out_c)
        layer = Layer(name=name, in_h=cur.h, in_w=cur.w, in_c=cur.c, out_c=out_c,
                      in_bits=lv.bits, signed_input=lv.signed,
                      weights=np.ascontiguousarray(wt).astype(np.uint8), output="threshold",
                      **geo)
        if layer.acc_max >= FLOAT32_EXACT:
            raise QonnxImportError(f"{_label(mm)}: dot products up to {layer.acc_max} exceed "
                                   "2^24, so float32 cannot hold them exactly")
        if layer.acc_bits > MAX_ACC_BITS:
            raise QonnxImportError(f"{_label(mm)}: accumulator needs {layer.acc_bits} bits, more "
                                   f"than the {MAX_ACC_BITS} the accelerator has")
        # the real value reaching the chain: z = alpha * acc + gamma (per output channel)
        qmax = (1 << lv.bits) - 1
        n_neg = layer.n_neg.astype(np.float64)
        colsum = layer.k_valid - 2 * n_neg
        alpha = wscale * lv.step
        gamma = wscale * (-lv.step * qmax * n_neg + lv.base * colsum)
        layer.meta = {"acc_bits": layer.acc_bits, "acc_max": layer.acc_max,
                      "onnx_node": _origin(mm).get("node"),
                      "onnx_op": _origin(mm).get("op")}
        return self.chain(layer, out, alpha, gamma, wscale, lv)

    def pad_node(self, node, cur: _Tensor) -> int:
        mode = _attr(node, "mode", "constant")
        pads = self.const(node.input[1]) if len(node.input) > 1 else None
        val = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        value = 0.0 if val is None else float(np.asarray(val).reshape(-1)[0])
        if mode != "constant" or pads is None:
            raise QonnxImportError(f"{_label(node)}: only constant padding is supported")
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        r = len(cur.axes)
        spatial = [i for i, a in enumerate(cur.axes) if a in ("H", "W")]
        amounts = {pads[i] for i in spatial} | {pads[r + i] for i in spatial}
        others = [pads[i] for i in range(r) if i not in spatial] + \
            [pads[r + i] for i in range(r) if i not in spatial]
        if len(amounts) != 1 or any(others):
            raise QonnxImportError(f"{_label(node)}: pads {pads} are not the same on every side "
                                   "of H and W")
        self.check_pad_value(node, value, cur)
        return amounts.pop()

    def check_pad_value(self, node, value: float, cur: _Tensor) -> None:
        lv = cur.levels
        if value != lv.base:
            what = "+-1" if lv.signed else f"{lv.bits}-bit"
            raise QonnxImportError(
                f"{_label(node)}: pads its {what} input with {value:g}, which xnorflow cannot "
                f"represent: its padding is level 0 (the value {lv.base:g}"
                f"{', bit 0' if lv.signed else ''}); pad with {lv.base:g} (an ONNX Pad node) or "
                "use no padding")

    def im2col(self, node, cur: _Tensor, pad: int) -> tuple[int, int, int]:
        if cur.axes != ("N", "H", "W", "C"):
            raise QonnxImportError(f"{_label(node)}: Im2Col on layout {cur.axes}")
        k = list(_attr(node, "kernel_size"))
        s = list(_attr(node, "stride"))
        p = list(_attr(node, "pad_amount", [0, 0, 0, 0]))
        dil = list(_attr(node, "dilations", [1, 1]))
        if _attr(node, "depthwise", 0):
            raise QonnxImportError(f"{_label(node)}: depthwise convolution is not supported")
        if any(d != 1 for d in dil):
            raise QonnxImportError(f"{_label(node)}: dilation {dil} is not supported")
        if k[0] != k[1] or s[0] != s[1] or len(set(p)) > 1:
            raise QonnxImportError(f"{_label(node)}: kernel {k}, stride {s}, pads {p} are not "
                                   "square and symmetric")
        if p[0]:
            self.check_pad_value(node, float(_attr(node, "pad_value", 0)), cur)
        return k[0], s[0], p[0] + pad

    # -- the chain after a MatMul: thresholds, or the score head
    def chain(self, layer: Layer, cur: _Tensor, alpha, gamma, wscale, lv):
        ops_before, ops_after, pool, pool_node = [], [], None, None
        nodes = []
        quant = None
        node = self.next_node(cur.name)
        while node is not None:
            op = node.op_type
            if op in LAYOUT:
                cur = self.layout(node, cur)
            elif op == "MaxPool":
                if pool is not None:
                    raise QonnxImportError(f"{_label(node)}: a second pooling in one layer")
                pool, pool_node = self.maxpool(node, cur), node
                cur = _Tensor(node.output[0], cur.axes, (cur.h - pool[0]) // pool[1] + 1,
                              (cur.w - pool[0]) // pool[1] + 1, cur.c, None)
            elif op in ELEMENTWISE or op in QUANTISERS:
                ev = self.node_eval(node, cur)
                (ops_after if pool is not None else ops_before).append(ev)
                nodes.append(node)
                cur = _Tensor(node.output[0], cur.axes, cur.h, cur.w, cur.c)
                if op in QUANTISERS:
                    quant = node
                    break
            else:
                raise QonnxImportError(f"{_label(node)}: op {op} is not supported in a layer's "
                                       "output chain (elementwise ops, MaxPool, a quantiser)")
            node = self.next_node(cur.name)
        if quant is None:
            return None, self.head(layer, cur, nodes, pool_node, alpha, gamma, lv)
        return self.threshold_stage(layer, cur, quant, ops_before, ops_after, pool, pool_node,
                                    alpha, gamma)

    def maxpool(self, node, cur: _Tensor) -> tuple[int, int]:
        k = list(_attr(node, "kernel_shape", []))
        s = list(_attr(node, "strides", k))
        p = list(_attr(node, "pads", [0, 0, 0, 0]))
        if cur.axes != ("N", "C", "H", "W"):
            raise QonnxImportError(f"{_label(node)}: MaxPool on layout {cur.axes}")
        if len(k) != 2 or k[0] != k[1] or s[0] != s[1] or any(p) or _attr(node, "ceil_mode", 0) \
                or any(d != 1 for d in _attr(node, "dilations", [1, 1])):
            raise QonnxImportError(f"{_label(node)}: MaxPool kernel {k}, strides {s}, pads {p}: "
                                   "only square, unpadded, undilated, floor-mode pooling")
        return k[0], s[0]

    def quant_levels(self, quant, cur_c: int) -> tuple[_Levels, object]:
        """The quantiser's level values and a function ``values -> level index``."""
        op = quant.op_type
        if op == "BipolarQuant":
            s = np.asarray(self.const(quant.input[1]), dtype=np.float32).reshape(-1)
            if len(np.unique(s)) != 1:
                raise QonnxImportError(f"{_label(quant)}: per-channel activation scales {s[:4]}"
                                       "... are not representable; use one scale")
            vals = np.sort(np.array([-s[0], s[0]], dtype=np.float32))
        elif op == "Quant":
            s = np.asarray(self.const(quant.input[1]), dtype=np.float32).reshape(-1)
            z = np.asarray(self.const(quant.input[2]), dtype=np.float32).reshape(-1)
            bw = int(np.asarray(self.const(quant.input[3])).reshape(-1)[0])
            if len(np.unique(s)) != 1 or len(np.unique(z)) != 1:
                raise QonnxImportError(f"{_label(quant)}: per-channel activation scales are not "
                                       "representable; use one scale and zero point")
            signed, narrow = bool(_attr(quant, "signed", 1)), bool(_attr(quant, "narrow", 0))
            if bw == 1 and signed:
                vals = np.sort(np.array([-s[0], s[0]], dtype=np.float32))
            else:
                from qonnx.custom_op.general.intquant import int_quant, max_int, min_int

                q = np.arange(min_int(signed, narrow, bw), max_int(signed, narrow, bw) + 1)
                if len(q) > (1 << MAX_LEVEL_BITS):
                    raise QonnxImportError(f"{_label(quant)}: {bw}-bit activations; xnorflow's "
                                           f"have at most {MAX_LEVEL_BITS} bits")
                vals = int_quant(((q - z[0]) * s[0]).astype(np.float32), s[:1], z[:1],
                                 np.asarray([bw], dtype=np.float32), signed, narrow,
                                 _attr(quant, "rounding_mode", "ROUND"))
                vals = np.sort(np.asarray(vals, dtype=np.float32))
        else:  # MultiThreshold
            th = np.asarray(self.const(quant.input[1]))
            osc, obias = float(_attr(quant, "out_scale", 1.0)), float(_attr(quant, "out_bias", 0.0))
            if osc == 0:
                raise QonnxImportError(f"{_label(quant)}: out_scale 0")
            vals = np.sort((np.float32(osc) * np.arange(th.shape[1] + 1, dtype=np.float32)
                            + np.float32(obias)).astype(np.float32))
        if len(np.unique(vals)) != len(vals):
            raise QonnxImportError(f"{_label(quant)}: levels collide")
        levels = _levels_from_values(vals, quant, "its output")

        def index(v: np.ndarray) -> np.ndarray:
            u = np.searchsorted(vals, v)
            u = np.clip(u, 0, len(vals) - 1)
            if not (vals[u] == v).all():
                bad = v[vals[u] != v][0]
                raise AssertionError(f"{_label(quant)}: produced {bad}, not one of its levels")
            return u.astype(np.int64)

        return levels, index

    def threshold_stage(self, layer, cur, quant, ops_before, ops_after, pool, pool_node, alpha,
                        gamma):
        levels, index = self.quant_levels(quant, layer.out_c)
        acc_max = layer.acc_max

        def z_of(acc: np.ndarray) -> np.ndarray:
            return (alpha[None, :] * acc + gamma[None, :]).astype(np.float32)

        ops = ops_before + ops_after

        def level_of_acc(acc: np.ndarray) -> np.ndarray:
            return index(_run_chain(ops, z_of(acc)))

        nlev = (1 << levels.bits) - 1
        t, pol = fold_thresholds(level_of_acc, acc_max, layer.out_c, nlev)
        try:
            verify_thresholds(level_of_acc, acc_max, t, pol, layer.name)
        except NotMonotoneError as e:
            raise QonnxImportError(
                f"{_label(quant)}: the chain from {layer.meta['onnx_node']!r} to it is not "
                f"monotone per channel, so no thresholds reproduce it ({e})") from None
        layer.thresholds, layer.polarity = t, pol
        layer.out_bits, layer.out_signed = levels.bits, levels.signed
        layer.meta["onnx_quant"] = _origin(quant).get("node")
        out_node = quant
        node = self.next_node(cur.name)
        # a MaxPool right after the quantiser pools the levels (max = OR on bits)
        if node is not None and node.op_type == "MaxPool":
            if pool is not None:
                raise QonnxImportError(f"{_label(node)}: a second pooling in one layer")
            pool = self.maxpool(node, cur)
            layer.pool_ops = np.full(layer.out_c, enc.POOL_OR, dtype=np.uint8)
            cur = _Tensor(node.output[0], cur.axes, (cur.h - pool[0]) // pool[1] + 1,
                          (cur.w - pool[0]) // pool[1] + 1, cur.c)
            out_node = node
        elif pool is not None:
            # pooled before (part of) the chain: max of f(acc); f's direction per channel
            f_ops = ops_before
            ends = np.array([[0] * layer.out_c, [acc_max] * layer.out_c], dtype=np.int64)
            fz = _run_chain(f_ops, z_of(ends)).astype(np.float64)
            f_inc = fz[1] >= fz[0]
            self.check_monotone(f_ops, z_of, acc_max, layer, pool_node, t)
            layer.pool_ops = np.where(f_inc == (pol > 0), enc.POOL_OR, enc.POOL_AND
                                      ).astype(np.uint8)
        if pool is not None:
            layer.pool_k, layer.pool_stride = pool
        layer.meta["onnx_out"] = _origin(out_node).get("out")
        layer.meta["onnx_levels"] = levels.values[: 1 << levels.bits].tolist()
        cur.levels = levels
        return cur, layer

    def check_monotone(self, f_ops, z_of, acc_max, layer, node, t) -> None:
        """The part of a chain before a MaxPool must be monotone for pooling to commute."""
        from .lower import check_points

        for acc in check_points(acc_max, t):
            acc = np.sort(acc, axis=0)  # ascending per channel
            f = _run_chain(f_ops, z_of(acc)).astype(np.float64)
            d = np.diff(f, axis=0)
            if ((d > 0).any(axis=0) & (d < 0).any(axis=0)).any():
                raise QonnxImportError(f"{_label(node)}: the chain before this MaxPool is not "
                                       "monotone, so pooling does not commute with it")

    def head(self, layer, cur, nodes, pool_node, alpha, gamma, lv) -> Layer:
        if pool_node is not None:
            raise QonnxImportError(f"{_label(pool_node)}: pooling in the score layer")
        if (layer.conv_h, layer.conv_w) != (1, 1):
            raise QonnxImportError(
                f"{_label(self.m.find_producer(cur.name) or self.m.graph.node[-1])}: the last "
                f"layer gives a {layer.conv_h}x{layer.conv_w} map; the score layer must give "
                "one value per class")
        # compose the affine chain exactly: y = a * z + b per channel
        a = [Fraction(1)] * layer.out_c
        b = [Fraction(0)] * layer.out_c
        for n in nodes:
            op = n.op_type
            if op not in AFFINE:
                raise QonnxImportError(f"{_label(n)}: op {op} after the last layer; the score "
                                       "head must be affine (Mul/Add/Sub/Div)")
            if op in ("Neg",):
                a, b = [-x for x in a], [-x for x in b]
                continue
            if op == "Identity":
                continue
            dyn_first = n.input[0] in self.dyn_names(n)
            cname = n.input[1] if dyn_first else n.input[0]
            c = self.chan_const(self.const(cname), _Tensor("", ("N", "C"), 1, 1, layer.out_c),
                                n).reshape(-1)
            c = [Fraction(float(v)) for v in (c if c.size > 1 else np.repeat(c, layer.out_c))]
            if op == "Mul":
                a, b = [x * k for x, k in zip(a, c, strict=True)], \
                    [x * k for x, k in zip(b, c, strict=True)]
            elif op == "Add":
                b = [x + k for x, k in zip(b, c, strict=True)]
            elif op == "Sub":
                if dyn_first:
                    b = [x - k for x, k in zip(b, c, strict=True)]
                else:
                    a, b = [-x for x in a], [k - x for x, k in zip(b, c, strict=True)]
            elif op == "Div":
                if not dyn_first or any(k == 0 for k in c):
                    raise QonnxImportError(f"{_label(n)}: division by the scores")
                a, b = [x / k for x, k in zip(a, c, strict=True)], \
                    [x / k for x, k in zip(b, c, strict=True)]
        last = nodes[-1] if nodes else self.m.find_producer(cur.name)
        big_a = [a[n] * Fraction(float(alpha[n])) for n in range(layer.out_c)]
        big_b = [a[n] * Fraction(float(gamma[n])) + b[n] for n in range(layer.out_c)]
        if len(set(big_a)) != 1:
            raise QonnxImportError(f"{_label(last)}: the scores are scaled differently per class "
                                   "(per-channel weight scales or Mul); the IR has one scale")
        scale_a = big_a[0]
        if scale_a <= 0:
            raise QonnxImportError(f"{_label(last)}: the score scale {float(scale_a):g} is not "
                                   "positive, so the class (first argmax) would flip")
        qmax = (1 << lv.bits) - 1
        n_neg = layer.n_neg
        zero_bias = [-layer.k_valid] * layer.out_c if lv.signed else [-qmax * int(v) for v in n_neg]
        canon = 2 if lv.signed else 1
        found = None
        for u in [canon] + [m for m in range(1, 17) if m != canon]:
            step = scale_a / u
            for beta in (Fraction(0), big_b[0] - step * zero_bias[0]):
                off = [(big_b[n] - beta) / step for n in range(layer.out_c)]
                if all(o.denominator == 1 for o in off):
                    found = (u, beta, [int(o) for o in off])
                    break
            if found:
                break
        if found is None:
            raise QonnxImportError(
                f"{_label(last)}: per-class offsets of the scores are not whole multiples of the "
                "score step, so the IR's integer scores cannot represent them")
        u, beta, off = found
        layer.output = "integer"
        layer.score_mul = u
        layer.score_offset = np.asarray(off, dtype=np.int64)
        layer.scale = float(scale_a / u)
        layer.meta["onnx_output"] = self.m.graph.output[0].name
        layer.meta["logit_bias"] = float(beta)
        return layer

    def dyn_names(self, node) -> list[str]:
        return [i for i in node.input if i and self.const(i) is None]

    def run(self) -> CompiledModel:
        cur = self.input_stage()
        first_shape = (cur.h, cur.w, cur.c)
        layers = []
        while cur is not None:
            nxt, layer = self.layer(len(layers), cur)
            layers.append(layer)
            cur = nxt
        h, w, c = first_shape
        n_cls = layers[-1].out_c
        fp32 = int(sum(int(np.prod(i.dims)) for i in self.m.graph.initializer))
        meta = {"source": "qonnx", "onnx": self.source, "input_divisor": self.divisor,
                "inexact_scales": sorted(set(self.inexact)), "fp32_params": fp32,
                "logit_bias": layers[-1].meta.get("logit_bias", 0.0)}
        cm = CompiledModel(h, w, c, layers, classes=[str(i) for i in range(n_cls)], meta=meta)
        cm.validate()
        return cm


def _load(path: str | Path):
    need_interop()
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        proto = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf raises several types on a bad file
        raise UserError(f"{p}: not an ONNX model ({str(e).splitlines()[0][:120]})") from None
    return ModelWrapper(proto), proto


def import_qonnx(path: str | Path, divisor: float | None = None, input_shape=None,
                 classes: list[str] | None = None) -> CompiledModel:
    """Import a QONNX file (as Brevitas' ``export_qonnx`` writes it) as a validated IR.

    ``divisor``: the ONNX input is ``pixel / divisor`` (default: the ``xnorflow.input_divisor``
    metadata property when the file has one, else 255). ``input_shape`` ``(H, W, C)`` is needed
    when the model's input is flat. Raises :class:`QonnxImportError` naming the node for
    anything the IR cannot represent exactly.
    """
    model, proto = _load(path)
    props = {p.key: p.value for p in proto.metadata_props}
    if divisor is None:
        divisor = float(props.get(DIVISOR_PROP, DEFAULT_DIVISOR))
    if not divisor > 0:
        raise UserError(f"--input-divisor must be > 0, not {divisor}")
    _stamp_origins(model)
    try:
        model = _reduce(model)
    except QonnxImportError:
        raise
    except Exception as e:  # noqa: BLE001 - qonnx asserts on graphs it cannot handle
        raise QonnxImportError(f"{path}: qonnx could not clean up and lower the model "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    cm = _Importer(model, divisor, input_shape, str(Path(path).name)).run()
    cm.meta["onnx_sha256"] = digest
    if classes:
        if len(classes) != cm.layers[-1].out_c:
            raise UserError(f"--classes names {len(classes)} classes but the model has "
                            f"{cm.layers[-1].out_c} outputs")
        cm.classes = list(classes)
    return cm


# ----- running the ONNX model as the reference ----------------------------------------------
@dataclass
class OnnxRun:
    """``execute_onnx`` on a model, mapped to the IR's view: per layer the levels ``(N, H, W, C)``
    (``None`` where the layer's output is not a tensor of the file), and the output ``(N, K)``."""

    activations: list
    output: np.ndarray


def run_onnx(path: str | Path, model: CompiledModel, pixels: np.ndarray,
             divisor: float | None = None) -> OnnxRun:
    """Run the ONNX file with qonnx's ``execute_onnx``, one image at a time.

    Hidden outputs are read from the tensors recorded in each layer's ``meta["onnx_out"]`` and
    mapped back to level indices with ``meta["onnx_levels"]``; the result is directly comparable
    with :func:`xnorflow.sw.golden.run`.
    """
    need_interop()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    if divisor is None:
        divisor = float(model.meta.get("input_divisor", DEFAULT_DIVISOR))
    m = ModelWrapper(str(path)).transform(InferShapes())
    iname = m.graph.input[0].name
    ishape = m.get_tensor_shape(iname)
    x = onnx_input(pixels, divisor)
    acts = [[] for _ in model.layers[:-1]]
    outs = []
    for i in range(x.shape[0]):
        ctx = execute_onnx(m, {iname: x[i : i + 1].reshape(ishape)}, return_full_exec_context=True)
        for j, layer in enumerate(model.layers[:-1]):
            t = layer.meta.get("onnx_out")
            if t is None or t not in ctx:
                acts[j] = None
                continue
            if acts[j] is None:
                continue
            v = np.asarray(ctx[t], dtype=np.float32)
            v = v.reshape(1, layer.out_c, layer.out_h, layer.out_w).transpose(0, 2, 3, 1)
            lv = np.asarray(layer.meta["onnx_levels"], dtype=np.float32)  # ascending
            u = np.clip(np.searchsorted(lv, v), 0, len(lv) - 1)
            if not (lv[u] == v).all():
                raise AssertionError(f"layer {layer.name}: ONNX tensor {t!r} holds values that "
                                     "are not its levels")
            acts[j].append(u.astype(np.uint8))
        outs.append(np.asarray(ctx[m.graph.output[0].name]).reshape(1, -1))
    return OnnxRun([None if a is None else np.concatenate(a) for a in acts],
                   np.concatenate(outs))
