"""``xnorflow export``: a compiled or trained model -> QONNX (runs on qonnx's executor)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "export a compiled (or trained) model as QONNX"

DESCRIPTION = """\
Write a model as a QONNX graph: binary Conv/MatMul with BIPOLAR weights, per-channel Add/Mul
followed by BipolarQuant (+-1 activations) or MultiThreshold (k-bit activations), MaxPool, and
the integer score layer scaled to logits. qonnx's execute_onnx runs it and gives the golden
model's activations, scores and classes exactly. The input is pixel / DIVISOR in float32, NCHW
(recorded in the file, which `xnorflow import` reads back). DIR is a compiled model folder
(xnorflow compile, xnorflow import) or a trained checkpoint folder (xnorflow train), which is
lowered first. Needs: pip install 'xnorflow[interop]'. See docs/interop.md.
"""

EPILOG = """\
examples:
  xnorflow export runs/mlp-up5k --qonnx mlp.onnx
  xnorflow export runs/mlp --qonnx mlp-raw.onnx --input-divisor 1  # input = raw pixels
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="DIR", help="compiled model folder or trained checkpoint")
    p.add_argument("--qonnx", metavar="OUT.onnx", required=True, help="file to write")
    p.add_argument("--input-divisor", type=float, default=255.0, metavar="D",
                   help="the ONNX input is pixel / D (default 255, torchvision's ToTensor)")
    p.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists")
    p.set_defaults(func=run)


def load_any(path: str | Path):
    """The IR of a compiled/imported folder (model.json) or of a trained checkpoint."""
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.lower import CHECKPOINT, lower_checkpoint

    p = Path(path)
    if p.is_dir() and ((p / "model.json").is_file() or (p / CHECKPOINT).is_file()) \
            or p.is_file():
        return lower_checkpoint(p)
    raise UserError(f"{p}: neither a model folder (model.json) nor a trained checkpoint "
                    f"({CHECKPOINT})")


def run(args) -> int:
    from onnx import save_model

    from xnorflow.sw.errors import UserError
    from xnorflow.sw.files import atomic_file, check_can_create
    from xnorflow.sw.qonnx_export import export_qonnx
    from xnorflow.sw.qonnx_import import need_interop

    need_interop()
    out = Path(args.qonnx)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give a file name such as model.onnx")
    if out.exists() and not args.force:
        raise UserError(f"{out}: already exists; pass --force to replace it")
    check_can_create(out)
    if not args.input_divisor > 0:
        raise UserError(f"--input-divisor must be > 0, not {args.input_divisor}")
    model = load_any(args.model)
    proto = export_qonnx(model, args.input_divisor)
    with atomic_file(out, suffix=".onnx") as tmp:
        save_model(proto, tmp)
    print(f"exported {args.model} -> {out}: {len(model.layers)} layers, {len(proto.graph.node)} "
          f"nodes, input 1x{model.in_c}x{model.in_h}x{model.in_w} = pixel / "
          f"{args.input_divisor:g}")
    return 0
