"""Build and convert the Larq Compute Engine models of benchmarks/peers.py (LCE's converter venv).

Runs inside ``.peers/lce-convert`` (TensorFlow 2.15 + larq 0.14 + larq-compute-engine 0.16,
numpy < 2; ``scripts/setup_peers.sh``), never in xnorflow's own venv:

    .peers/lce-convert/bin/python benchmarks/lce_convert.py SPEC.json

``SPEC.json`` lists models ``{"name", "kind", "out", "weights", ...}``; ``weights`` is an
``.npz`` with the binary weights as +-1 values in Keras layout ``(kh, kw, in, out)`` (or
``(in, out)`` for dense layers). Each model is written to ``out`` (a ``.tflite``) with a
``.ops.json`` beside it naming the operators in the converted graph (so the report can show
that LCE's binary kernels, not float fallbacks, are the ones timed). Writes are atomic.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import larq as lq  # noqa: E402
import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BIN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
       "kernel_constraint": "weight_clip", "use_bias": False}


def _set(layer, *arrays) -> None:
    layer.set_weights([np.asarray(a, np.float32) for a in arrays])


def build(spec: dict, w: dict) -> tf.keras.Model:
    kind = spec["kind"]
    if kind == "bconv":
        # one binary convolution, float output (the +-1 dot products, as LCE writes them)
        h, wd, c = spec["input"]
        x = tf.keras.Input((h, wd, c), batch_size=spec.get("batch", 1))
        conv = lq.layers.QuantConv2D(spec["filters"], spec["k"], padding=spec["padding"],
                                     pad_values=1.0, **BIN)
        model = tf.keras.Model(x, conv(x))
        _set(conv, w["kernel"])
        return model
    if kind == "cnn":
        # the Fashion-MNIST CNN's shape: float first conv (binary weights, real pixels), then
        # binary conv, binary dense x2; BatchNorm + sign between layers, max-pool after convs
        b = spec["batch"]
        x = tf.keras.Input((28, 28, 1), batch_size=b)
        c0 = lq.layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                                   kernel_constraint="weight_clip", use_bias=False)
        c1 = lq.layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, **BIN)
        d0 = lq.layers.QuantDense(256, **BIN)
        d1 = lq.layers.QuantDense(10, **BIN)
        bns = [tf.keras.layers.BatchNormalization(scale=False) for _ in range(4)]
        y = tf.keras.layers.MaxPool2D(2)(bns[0](c0(x)))
        y = tf.keras.layers.MaxPool2D(2)(bns[1](c1(y)))
        y = bns[2](d0(tf.keras.layers.Flatten()(y)))
        y = bns[3](d1(y))
        model = tf.keras.Model(x, y)
        for layer, key in ((c0, "c0"), (c1, "c1"), (d0, "d0"), (d1, "d1")):
            _set(layer, w[key])
        for i, bn in enumerate(bns):
            _set(bn, w[f"bn{i}_beta"], w[f"bn{i}_mean"], w[f"bn{i}_var"])
        return model
    raise SystemExit(f"lce_convert: unknown model kind {kind!r}")


def op_names(flatbuffer: bytes) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(flatbuffer, 0))
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for oc in model.operatorCodes:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        custom = oc.customCode.decode() if oc.customCode else None
        codes.append(custom or names.get(code, str(code)))
    ops = []
    for sg in model.subgraphs:
        ops.extend(codes[op.opcodeIndex] for op in sg.operators)
    return ops


def write_atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: lce_convert.py SPEC.json", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        specs = json.load(f)
    for spec in specs:
        w = dict(np.load(spec["weights"]))
        model = build(spec, w)
        flat = lce.convert_keras_model(model)
        ops = op_names(flat)
        write_atomic(spec["out"] + ".ops.json", json.dumps(
            {"ops": ops, "tensorflow": tf.__version__, "larq": lq.__version__}).encode())
        write_atomic(spec["out"], flat)
        print(f"lce_convert: {spec['name']}: {len(flat)} bytes, ops {ops}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
