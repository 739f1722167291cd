"""Swapping a compiled model into an existing bitstream (no re-synthesis).

Every model memory is synthesised with random placeholder contents
(:func:`xnorflow.synth.build.placeholder_memories`); ``icebram`` (iCE40) or ``ecpbram``
(ECP5) then replace them with a model's images, and :func:`swap_model` checks the result
without the tools, on the RAM bits of the unpacked bitstream.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path

from xnorflow.sw import files
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import parse_geometry

from .build import MODEL_MEMORIES, board_target
from .tools import SynthError, run_tool


def _ram_blocks(path: Path, section: str, fold) -> list[int]:
    """One int per RAM block of a textual bitstream: the lines after each ``section``
    header (up to the next ``.`` header), folded into an int by ``fold(value, line)``."""
    out, cur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("."):
            if cur is not None:
                out.append(cur)
            cur = 0 if line.startswith(section) else None
        elif cur is not None:
            cur = fold(cur, line)
    if cur is not None:
        out.append(cur)
    return out


def _asc_ram_bits(path: Path) -> list[int]:
    """The ``.ram_data`` contents of an iCE40 ``.asc`` file, one int per BRAM (in order):
    each line is hex digits, the block's bits in order."""
    def fold(value: int, line: str) -> int:
        digits = line.strip()
        return (value << (4 * len(digits))) | int(digits or "0", 16)

    return _ram_blocks(path, ".ram_data", fold)


def _config_ram_bits(path: Path) -> list[int]:
    """The ``.bram_init`` contents of an ECP5 textual config, one int per DP16KD: each line
    is 9-bit words in hex."""
    def fold(value: int, line: str) -> int:
        for v in line.split():
            value = (value << 9) | int(v, 16)
        return value

    return _ram_blocks(path, ".bram_init", fold)


def _ram_flips(old: list[int], new: list[int]) -> int:
    if len(old) != len(new):
        raise SynthError(f"swap check failed: {len(old)} RAM blocks before, {len(new)} after")
    return sum((a ^ b).bit_count() for a, b in zip(old, new, strict=True))


def _hex_flips(a: str, b: str) -> int:
    """Bits that differ between two hex files of equal shape."""
    return sum((int(x, 16) ^ int(y, 16)).bit_count()
               for x, y in zip(a.split(), b.split(), strict=True))


def model_hex_images(model, target, placeholder_dir: Path) -> dict[str, str]:
    """Hex text of ``model``'s memory images for ``target``, each padded with zero words to
    the depth of its placeholder (``icebram``/``ecpbram`` need equal sizes)."""
    from xnorflow.sw.program import build_memories

    out = {}
    for image in build_memories(model, target):
        ph = placeholder_dir / f"{image.name}.hex"
        if not ph.exists():
            continue
        depth = sum(1 for ln in ph.read_text().splitlines() if ln.strip())
        if image.depth > depth:
            raise UserError(f"memory {image.name}: model needs {image.depth} words, the "
                            f"bitstream has {depth}")
        digits = (image.width + 3) // 4
        words = [int(w) for w in image.words] + [0] * (depth - image.depth)
        out[image.name] = "".join(f"{w:0{digits}x}\n" for w in words)
    return out


def report_target(spec, report: dict):
    """The accelerator target a build report was synthesised for (geometry + memories)."""
    base = board_target(spec, report["geometry"])
    if not report.get("memories"):
        return base
    rows, cols, width = parse_geometry(report["geometry"])
    mems = {n: (m["width"], m["depth"]) for n, m in report["memories"].items()}
    # the weights' word width says how many rows' words a memory word holds (weight_rows)
    wrows = mems["weights"][0] // (cols * width) if "weights" in mems else base.weight_rows
    return dataclasses.replace(base, name=report["target"], rows=rows, cols=cols, width=width,
                               memories=mems, board=spec.name, weight_rows=wrows)


def swap_model(folder: str | Path, model_dir: str | Path, *, out: str | Path | None = None,
               progress: bool = True) -> Path:
    """Put ``model_dir``'s memory images into the bitstream in ``folder`` without synthesis.

    ``folder`` is a build output of :func:`synthesize` (report + bitstream + placeholder
    hex). The images are rebuilt for the bitstream's target with
    :func:`xnorflow.sw.program.build_memories`, padded to the memory depths, and replaced in
    the BRAMs with ``icebram`` (iCE40: unpack, replace, pack) or ``ecpbram`` (ECP5). The
    result is checked without the tools: the RAM bits that changed in the ``.asc`` (or ECP5
    config) must be exactly the bits in which the images differ from the placeholders, times
    the copies (icebram reports them; on ECP5 a whole number of copies per memory). Memories
    without a placeholder (SPRAM, which has no initial contents) are listed in
    ``swap.json`` as "load over UART". Returns the new bitstream's path.
    """
    from xnorflow.sw.boards import get_board, load_report
    from xnorflow.sw.ir import CompiledModel

    folder = Path(folder)
    report = load_report(folder)
    spec = get_board(report["board"])
    if not report["design"].startswith("accelerator"):
        raise UserError(f"{folder}: holds a {report['design']!r} build; nothing to swap")
    target = report_target(spec, report)
    model = CompiledModel.load(model_dir)
    images = model_hex_images(model, target, folder / "placeholder")
    if not images:
        raise UserError(f"{folder}/placeholder: no placeholder memories to replace")
    name = Path(model_dir).resolve().name
    ext = Path(spec.family_facts.bitstream).suffix
    dest = Path(out) if out else folder / f"top-{name}{ext}"
    # YoWASP tools see only their working folder: copy everything in, use relative names
    with tempfile.TemporaryDirectory(prefix="xnorflow-swap-") as tmpd:
        tmp = Path(tmpd)
        for mem, text in images.items():
            (tmp / f"to-{mem}.hex").write_text(text)
            shutil.copyfile(folder / "placeholder" / f"{mem}.hex", tmp / f"from-{mem}.hex")
        shutil.copyfile(folder / f"top{ext}", tmp / f"orig{ext}")
        if spec.family == "ice40":
            run_tool("ICEUNPACK", [f"orig{ext}", "a0.asc"], cwd=tmp)
            cur = "a0.asc"
            expected = 0
            for i, mem in enumerate(images):
                nxt = f"a{i + 1}.asc"
                with open(tmp / cur, "rb") as fin, open(tmp / nxt, "wb") as fout:
                    log = run_tool("ICEBRAM", ["-v", f"from-{mem}.hex", f"to-{mem}.hex"],
                                   cwd=tmp, stdin=fin, stdout=fout)
                found = re.search(r"replaced (\d+) instances", log)
                copies = int(found[1]) if found else 0
                if copies < 1:
                    raise SynthError(f"icebram found no instance of memory {mem!r} in "
                                     f"{folder / spec.family_facts.bitstream}")
                expected += copies * _hex_flips((tmp / f"from-{mem}.hex").read_text(),
                                                (tmp / f"to-{mem}.hex").read_text())
                cur = nxt
            # check, independently of icebram: the RAM bits that changed are exactly the
            # bits in which the model images differ from the placeholders
            flipped = _ram_flips(_asc_ram_bits(tmp / "a0.asc"), _asc_ram_bits(tmp / cur))
            if flipped != expected:
                raise SynthError(f"swap check failed: {flipped} RAM bits changed, the images "
                                 f"differ from the placeholders in {expected}")
            swap_check = {"ram_bits_changed": flipped, "expected": expected}
            run_tool("ICEPACK", [cur, "final"], cwd=tmp)
        else:
            run_tool("ECPUNPACK", [f"orig{ext}", "c0.config"], cwd=tmp)
            cur = "c0.config"
            changed = expected = 0
            for i, mem in enumerate(images):
                nxt = f"c{i + 1}.config"
                run_tool("ECPBRAM", ["-i", cur, "-o", nxt, "-f", f"from-{mem}.hex",
                                     "-t", f"to-{mem}.hex"], cwd=tmp)
                # check, independently of ecpbram: this step changed a whole number (>= 1)
                # of copies of the bits in which the image differs from its placeholder
                step = _ram_flips(_config_ram_bits(tmp / cur), _config_ram_bits(tmp / nxt))
                one = _hex_flips((tmp / f"from-{mem}.hex").read_text(),
                                 (tmp / f"to-{mem}.hex").read_text())
                if one and (step == 0 or step % one):
                    raise SynthError(f"swap check failed for {mem!r}: {step} RAM bits changed, "
                                     f"not a multiple of the {one} bits the image differs in")
                changed, expected = changed + step, expected + one
                cur = nxt
            swap_check = {"ram_bits_changed": changed, "image_bits_differing": expected}
            run_tool("ECPPACK", ["--compress", "--input", cur, "--bit", "final"], cwd=tmp)
        files.write_bytes(dest, (tmp / "final").read_bytes())
    placeholders = {p.stem for p in (folder / "placeholder").glob("*.hex")}
    info = {
        "bitstream": dest.name,
        "from": "top" + ext,
        "model": str(model_dir),
        "swapped": sorted(images),
        "not_in_bitstream": sorted(set(MODEL_MEMORIES) - placeholders),
        "check": swap_check,
        "note": "memories in not_in_bitstream (SPRAM, or a depth that is not a whole number "
                "of RAM blocks) keep no model contents: load them over the UART",
    }
    files.write_text(dest.parent / f"{dest.stem}.swap.json", json.dumps(info, indent=2) + "\n")
    return dest
