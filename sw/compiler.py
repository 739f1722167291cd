"""The compile step: a trained checkpoint -> integer IR -> memory images, in a model folder.

:func:`compile_checkpoint` is what ``xnorflow compile`` (and the demo) run: check the
destination and the checkpoint, lower (:mod:`xnorflow.sw.lower`), check the model fits the
target (:func:`xnorflow.sw.program.check_fits`, before anything is written), build the memory
images and write the folder atomically (:func:`xnorflow.sw.images.write_model_folder`).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .images import check_destination, write_model_folder
from .ir import CompiledModel
from .lower import load_checkpoint, lower_checkpoint
from .program import build_memories, check_fits
from .size import size_report
from .targets import Target, get_target

__all__ = ["check_hidden_bits", "compile_checkpoint", "fp32_parameter_count"]


def fp32_parameter_count(checkpoint: Path) -> int | None:
    """Float parameters of the trained model (the size report's fp32 baseline), or None."""
    try:
        net, _ = load_checkpoint(checkpoint)
    except Exception:  # noqa: BLE001 - only a better baseline; lowering already read it
        return None
    return int(sum(p.numel() for p in net.parameters()))


def check_hidden_bits(model: CompiledModel, target: Target) -> None:
    """Refuse multi-bit hidden activations (DoReFa ``--act-bits`` > 1) for any target, with
    advice that fits: no target's accelerator takes them (only the first layer reads
    multi-bit input), so the way out is retraining or running the model in software.

    :func:`~xnorflow.sw.program.check_fits` refuses them too; this check runs first so
    that ``xnorflow compile`` does not suggest another target."""
    for layer in model.layers:
        if layer.output == "threshold" and layer.out_bits != 1:
            raise UserError(
                f"layer {layer.name!r}: {layer.out_bits}-bit hidden activations (out_bits="
                f"{layer.out_bits}, e.g. --mode dorefa --act-bits {layer.out_bits}); the "
                f"accelerator takes 1-bit hidden activations only, on target {target.name!r} "
                "as on every other (multi-bit input is read by the first layer only): retrain "
                "with --act-bits 1, or run the model in software (xnorflow train reports its "
                "deploy accuracy; xnorflow export --qonnx writes it for other tools)")


def compile_checkpoint(checkpoint: str | Path, target_name: str, out_dir: str | Path,
                       force: bool = False,
                       max_batch: int | None = None) -> tuple[dict, dict, list]:
    """The whole compile step; returns ``(manifest, size_report, memories)`` (the memory
    images written). ``max_batch``: images one run may take (default: the most that fit,
    :func:`~xnorflow.sw.program.default_batch`).

    Order: check the destination and the checkpoint, lower, check the model fits (before
    anything is written), build the memory images, write the folder atomically.
    """
    target = get_target(target_name)  # UserError listing the valid names
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise UserError(f"{ckpt}: checkpoint not found (train one with xnorflow train -o DIR)")
    check_destination(out_dir, force)
    try:
        model = lower_checkpoint(ckpt)
    except FileNotFoundError as e:
        raise UserError(f"{ckpt}: not a complete checkpoint ({e.filename or e}: missing)") from None
    model.validate()
    if "fp32_params" not in model.meta:
        n = fp32_parameter_count(ckpt)
        if n is not None:
            model.meta["fp32_params"] = n
    check_hidden_bits(model, target)
    check_fits(model, target)
    if max_batch is not None:
        check_fits(model, target, batch=max_batch)  # names the batch that does not fit
    memories = build_memories(model, target, max_batch=max_batch)
    size = size_report(model, memories, target)
    manifest = write_model_folder(out_dir, model, target, memories, force=force, size=size)
    return manifest, size, memories
