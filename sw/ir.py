"""The compiled model: xnorflow's integer intermediate representation (IR).

One format, produced by the compiler (``xnorflow.sw.lower``) and consumed by every backend
(golden model, CPU kernels, the memory-image writer, the RTL backends). It holds integers
only, except the float ``scale`` that the host multiplies into the last layer's scores to
give logits. Semantics are those of :mod:`xnorflow.sw.encoding`; the golden model
(:mod:`xnorflow.sw.golden`) is their executable definition.

Every layer reads an input map ``(in_h, in_w, in_c)`` of unsigned ``in_bits``-bit values
(``signed_input``: one bit meaning -1/+1) and is a convolution: ``dense`` is the special case
whose kernel covers the whole input map (``kh = in_h``, ``kw = in_w``, no padding), giving a
``1 x 1 x out_c`` output. Weights are bits ``(out_c, kh, kw, in_c)`` in HWC order (channels
innermost), which is also the order of the packed segments.

Output stages:

* ``threshold``: ``thresholds[n, j]`` and ``polarity[n]``; the output value is the number of
  thresholds passed (``out_bits = 1``: one threshold, a bit), then optional pooling on the
  output map with ``pool_ops[n]`` (OR/AND, i.e. max/min on levels).
* ``integer`` (last layer): ``score[n] = score_mul * acc[n] + score_offset[n]``, where ``acc``
  is the hardware accumulator; ``logits = scale * score``; the class is the first argmax of
  ``score`` (``scale > 0``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

IR_VERSION = 1
KINDS = ("dense", "conv")
OUTPUTS = ("threshold", "integer")


class IRError(UserError, ValueError):
    """A compiled model that breaks the IR's rules; the message names the layer."""


@dataclass
class Layer:
    """One layer of a compiled model (see the module docstring for the semantics)."""

    name: str
    kind: str
    in_h: int
    in_w: int
    in_c: int
    out_c: int
    kh: int
    kw: int
    stride: int
    pad: int
    in_bits: int
    signed_input: bool
    weights: np.ndarray  # uint8 bits (out_c, kh, kw, in_c); 1 = +1
    output: str
    out_bits: int = 1
    out_signed: bool = True  # 1-bit outputs read as -1/+1 by the next layer (False: 0/1 levels)
    thresholds: np.ndarray | None = None  # int64 (out_c, 2**out_bits - 1)
    polarity: np.ndarray | None = None  # int8 (out_c,), +1 or -1
    pool_k: int = 1
    pool_stride: int = 1
    pool_ops: np.ndarray | None = None  # uint8 (out_c,), encoding.POOL_OR / POOL_AND
    score_mul: int = 1
    score_offset: np.ndarray | None = None  # int64 (out_c,)
    scale: float = 1.0
    meta: dict = field(default_factory=dict)

    # ----- derived geometry -------------------------------------------------------------
    @property
    def conv_h(self) -> int:
        return (self.in_h + 2 * self.pad - self.kh) // self.stride + 1

    @property
    def conv_w(self) -> int:
        return (self.in_w + 2 * self.pad - self.kw) // self.stride + 1

    @property
    def out_h(self) -> int:
        return (self.conv_h - self.pool_k) // self.pool_stride + 1

    @property
    def out_w(self) -> int:
        return (self.conv_w - self.pool_k) // self.pool_stride + 1

    @property
    def k_valid(self) -> int:
        """Valid bits in one output's reduction vector: ``K = kh * kw * in_c``."""
        return self.kh * self.kw * self.in_c

    @property
    def n_neg(self) -> np.ndarray:
        """Number of -1 weights per output channel."""
        return self.k_valid - self.weights.reshape(self.out_c, -1).astype(np.int64).sum(axis=1)

    @property
    def acc_max(self) -> int:
        """Largest possible hardware accumulator: ``K * (2^in_bits - 1)``."""
        return self.k_valid * ((1 << self.in_bits) - 1)

    @property
    def acc_bits(self) -> int:
        """Unsigned bits that hold any accumulator value of this layer."""
        return max(1, int(self.acc_max).bit_length())

    @property
    def binary_macs(self) -> int:
        """Binary multiply-accumulates per image (each bit-plane counts)."""
        return self.conv_h * self.conv_w * self.out_c * self.k_valid * self.in_bits

    def validate(self) -> None:
        """Raise :class:`IRError` naming this layer if any field breaks the IR's rules."""

        def bad(msg: str) -> IRError:
            return IRError(f"layer {self.name!r}: {msg}")

        if self.kind not in KINDS:
            raise bad(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.output not in OUTPUTS:
            raise bad(f"output must be one of {OUTPUTS}, not {self.output!r}")
        for attr in ("in_h", "in_w", "in_c", "out_c", "kh", "kw", "stride", "in_bits",
                     "out_bits", "pool_k", "pool_stride"):
            v = getattr(self, attr)
            if int(v) != v or v < 1:
                raise bad(f"{attr} must be a positive integer, not {v!r}")
        if self.pad < 0:
            raise bad(f"pad must be >= 0, not {self.pad}")
        if self.pool_k == 1 and self.pool_stride != 1:
            raise bad(f"pool_k 1 means no pooling, so pool_stride must be 1, not "
                      f"{self.pool_stride}")
        if self.out_signed and self.out_bits != 1:
            raise bad(f"signed (+-1) output must be 1 bit, not {self.out_bits}")
        if self.signed_input and self.in_bits != 1:
            raise bad(f"signed (+-1) input must be 1 bit, not {self.in_bits}")
        if self.kind == "dense" and (self.kh, self.kw, self.pad, self.stride) != (
            self.in_h, self.in_w, 0, 1
        ):
            raise bad("a dense layer's kernel must cover its whole input with no padding")
        if self.conv_h < 1 or self.conv_w < 1:
            raise bad(f"kernel {self.kh}x{self.kw} does not fit input {self.in_h}x{self.in_w}")
        if self.out_h < 1 or self.out_w < 1:
            raise bad(f"pool {self.pool_k} does not fit {self.conv_h}x{self.conv_w}")
        w = np.asarray(self.weights)
        if w.shape != (self.out_c, self.kh, self.kw, self.in_c):
            raise bad(f"weights shape {w.shape} != {(self.out_c, self.kh, self.kw, self.in_c)}")
        if w.dtype != np.uint8 or (w.size and w.max() > 1):
            raise bad("weights must be uint8 bits (0/1)")
        if self.output == "threshold":
            t = self.thresholds
            if t is None or np.asarray(t).shape != (self.out_c, (1 << self.out_bits) - 1):
                raise bad(f"thresholds must have shape {(self.out_c, (1 << self.out_bits) - 1)}")
            if self.polarity is None or np.asarray(self.polarity).shape != (self.out_c,):
                raise bad(f"polarity must have shape ({self.out_c},)")
            if not np.isin(self.polarity, (-1, 1)).all():
                raise bad("polarity must be +1 or -1")
            if self.pool_k > 1 and (
                self.pool_ops is None or np.asarray(self.pool_ops).shape != (self.out_c,)
            ):
                raise bad(f"pool_ops must have shape ({self.out_c},) when pooling")
        else:
            if self.pool_k != 1:
                raise bad("an integer output layer cannot pool")
            if (self.out_h, self.out_w) != (1, 1):
                raise bad(
                    f"an integer output layer gives one score per class, so its output map "
                    f"must be 1x1, not {self.out_h}x{self.out_w}"
                )
            if self.score_offset is None or np.asarray(self.score_offset).shape != (self.out_c,):
                raise bad(f"score_offset must have shape ({self.out_c},)")
            if not self.scale > 0:
                raise bad(
                    f"scale must be > 0 (argmax of scores = argmax of logits), not {self.scale}"
                )


@dataclass
class CompiledModel:
    """A whole compiled network: input geometry, layers, class names and provenance."""

    in_h: int
    in_w: int
    in_c: int
    layers: list[Layer]
    classes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        if not self.layers:
            raise IRError("a compiled model needs at least one layer")
        h, w, c, bits, signed = self.in_h, self.in_w, self.in_c, None, False
        for i, layer in enumerate(self.layers):
            layer.validate()
            if (layer.in_h, layer.in_w, layer.in_c) != (h, w, c):
                raise IRError(
                    f"layer {layer.name!r}: input {layer.in_h}x{layer.in_w}x{layer.in_c} "
                    f"but the previous stage gives {h}x{w}x{c}"
                )
            if bits is not None and (layer.in_bits, layer.signed_input) != (bits, signed):
                raise IRError(
                    f"layer {layer.name!r}: reads {layer.in_bits}-bit "
                    f"{'signed' if layer.signed_input else 'unsigned'} input but the previous "
                    f"layer gives {bits}-bit {'signed' if signed else 'unsigned'}"
                )
            last = i == len(self.layers) - 1
            if (layer.output == "integer") != last:
                raise IRError(f"layer {layer.name!r}: only the last layer has integer output")
            h, w, c = layer.out_h, layer.out_w, layer.out_c
            bits = layer.out_bits
            signed = layer.out_signed

    @property
    def binary_macs(self) -> int:
        return sum(layer.binary_macs for layer in self.layers)

    # ----- persistence: model.json (+ arrays in model.npz) -----------------------------
    _ARRAYS = ("weights", "thresholds", "polarity", "pool_ops", "score_offset")

    def save(self, folder: str | Path) -> None:
        """Write ``model.json`` and ``model.npz`` into ``folder`` (which must exist)."""
        folder = Path(folder)
        arrays, layers = {}, []
        for i, layer in enumerate(self.layers):
            d = {}
            for k, v in layer.__dict__.items():
                if k in self._ARRAYS:
                    if v is not None:
                        arrays[f"{i}.{k}"] = np.asarray(v)
                else:
                    d[k] = v
            layers.append(d)
        np.savez(folder / "model.npz", **arrays)
        digest = hashlib.sha256((folder / "model.npz").read_bytes()).hexdigest()
        doc = {
            "ir_version": IR_VERSION,
            "input": [self.in_h, self.in_w, self.in_c],
            "classes": self.classes,
            "meta": self.meta,
            "layers": layers,
            "arrays_sha256": digest,
        }
        (folder / "model.json").write_text(json.dumps(doc, indent=2, default=json_default))

    @classmethod
    def load(cls, folder: str | Path) -> CompiledModel:
        """Read a model written by :meth:`save`, checking version and checksum."""
        folder = Path(folder)
        jpath, npath = folder / "model.json", folder / "model.npz"
        for p in (jpath, npath):
            if not p.is_file():
                raise IRError(f"{p}: missing (is {folder} a compiled model folder?)")
        try:
            doc = json.loads(jpath.read_text())
        except json.JSONDecodeError as e:
            raise IRError(f"{jpath}: not valid JSON ({e})") from None
        if doc.get("ir_version") != IR_VERSION:
            raise IRError(f"{jpath}: IR version {doc.get('ir_version')!r}, expected {IR_VERSION}")
        digest = hashlib.sha256(npath.read_bytes()).hexdigest()
        if digest != doc.get("arrays_sha256"):
            raise IRError(f"{npath}: sha256 {digest[:12]}... does not match model.json; damaged?")
        with np.load(npath) as arrays:
            layers = []
            for i, d in enumerate(doc["layers"]):
                kw = dict(d)
                for k in cls._ARRAYS:
                    key = f"{i}.{k}"
                    kw[k] = arrays[key] if key in arrays.files else None
                layers.append(Layer(**kw))
        h, w, c = doc["input"]
        model = cls(h, w, c, layers, classes=doc.get("classes", []), meta=doc.get("meta", {}))
        model.validate()
        return model


def json_default(o):
    """``json.dumps(default=...)`` for NumPy scalars and arrays and paths."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
