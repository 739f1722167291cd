"""``xnorflow import``: a QONNX model (Brevitas ``export_qonnx``) -> an IR folder to compile."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "import a binary QONNX model (Brevitas export_qonnx) as a model folder to compile"

DESCRIPTION = """\
Read a QONNX file as Brevitas' export_qonnx writes it (binary QuantLinear/QuantConv2d with
BatchNorm and sign or k-bit activations, FINN's TFC/CNV style), reduce it with qonnx's cleanup
and lowering passes, and fold every hidden layer into xnorflow's integer thresholds with the
same exactness check the compiler uses for trained models. Writes OUT_DIR/model.json and
model.npz (the IR) and import.json (what was matched, from which node); compile the folder like
a trained checkpoint: `xnorflow compile OUT_DIR --target up5k -o OUT_DIR-up5k`.

The ONNX model's input is taken to be pixel / DIVISOR in float32, NCHW (DIVISOR 255 is
torchvision's ToTensor); its input quantiser must map pixels to xnorflow's b-bit input,
pixel >> (8 - b). Anything the IR cannot represent exactly (zero padding of +-1 maps, grouped
or dilated convolutions, signed multi-bit inputs, non-monotone chains, branches) is refused
with the node's name and the reason; nothing is written then. Needs the optional packages:
pip install 'xnorflow[interop]'. See docs/interop.md.
"""

EPILOG = """\
examples:
  xnorflow import tfc.onnx --input-shape 8x8x1 -o runs/tfc
  xnorflow import cnv.onnx -o runs/cnv --classes zero,one,two,three,four,five,six,seven
  xnorflow import model.onnx --input-divisor 256 -o runs/m     # input = pixel / 256
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", metavar="MODEL.onnx", help="QONNX file to import")
    p.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="folder to write")
    p.add_argument("--input-shape", metavar="HxWxC", default=None,
                   help="image shape; needed when the model's input is flat (1, H*W*C)")
    p.add_argument("--input-divisor", type=float, default=None, metavar="D",
                   help="the ONNX input is pixel / D (default: what `xnorflow export` recorded "
                   "in the file, else 255)")
    p.add_argument("--classes", default=None, help="comma-separated class names")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.set_defaults(func=run)


def parse_shape(text: str | None) -> tuple[int, int, int] | None:
    from xnorflow.sw.errors import UserError

    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(v) for v in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--input-shape must be HxWxC with positive integers, not {text!r}")
    return shape


def check_ir_destination(out_dir, force: bool = False) -> Path:
    """Like compile's check, but an IR folder (model.json) may be replaced too."""
    from xnorflow.sw.errors import UserError
    from xnorflow.sw.files import existing_folder_only
    from xnorflow.sw.images import check_destination

    out = Path(out_dir)
    if out.is_dir() and not out.is_symlink() and (out / "model.json").is_file():
        if not force:
            raise UserError(f"{out}: already exists; pass --force to replace it")
        existing_folder_only(out)  # a mount point cannot be replaced
        return out
    return check_destination(out, force)


def run(args) -> int:
    from xnorflow.sw.files import atomic_folder
    from xnorflow.sw.ir import json_default
    from xnorflow.sw.qonnx_import import import_qonnx, need_interop

    need_interop()
    shape = parse_shape(args.input_shape)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    check_ir_destination(args.output, args.force)
    cm = import_qonnx(args.onnx, divisor=args.input_divisor, input_shape=shape,
                      classes=classes)
    report = {
        "source": str(Path(args.onnx).resolve()),
        "sha256": cm.meta["onnx_sha256"],
        "input": {"shape_hwc": [cm.in_h, cm.in_w, cm.in_c],
                  "divisor": cm.meta["input_divisor"], "bits": cm.layers[0].in_bits,
                  "signed": cm.layers[0].signed_input},
        "layers": [{k: getattr(ly, k) for k in ("name", "kind", "in_h", "in_w", "in_c", "out_c",
                                                "kh", "stride", "pad", "pool_k", "in_bits",
                                                "out_bits", "output")}
                   | {"onnx_node": ly.meta.get("onnx_node"),
                      "onnx_quant": ly.meta.get("onnx_quant")}
                   for ly in cm.layers],
        "inexact_scales": cm.meta["inexact_scales"],
        "logit_bias": cm.meta["logit_bias"],
    }
    with atomic_folder(args.output, lambda out: check_ir_destination(out, args.force)) as tmp:
        cm.save(tmp)
        (tmp / "import.json").write_text(json.dumps(report, indent=2, default=json_default))
    for ly in cm.layers:
        geo = f" ({ly.kh}x{ly.kw}/{ly.stride}, pad {ly.pad})" if ly.kind == "conv" else ""
        pool = f", pool {ly.pool_k}" if ly.pool_k > 1 else ""
        print(f"{ly.name}: {ly.kind} {ly.in_h}x{ly.in_w}x{ly.in_c} -> {ly.out_c}{geo}{pool}, "
              f"{ly.in_bits}-bit {'+-1' if ly.signed_input else 'unsigned'} in, "
              f"{ly.output} out  <- {ly.meta.get('onnx_node')}")
    for note in cm.meta["inexact_scales"]:
        print(f"note: {note} is not a short power-of-two fraction: the ONNX graph's float32 "
              "execution rounds these dot products, xnorflow computes them exactly (they can "
              "differ only where a value lies within rounding of a threshold)")
    print(f"imported {args.onnx} -> {args.output}: {len(cm.layers)} layers, "
          f"{cm.in_h}x{cm.in_w}x{cm.in_c} input, {cm.layers[-1].out_c} classes; compile it with "
          f"xnorflow compile {args.output} --target up5k -o {args.output}-up5k")
    return 0
