"""Building a board top: Amaranth -> yosys -> nextpnr -> bitstream, published with a report.

:func:`synthesize` builds one board x geometry and leaves in ``bitstreams/<board>/<geometry>/``
under the working folder (:func:`xnorflow.sw.boards.bitstream_folder`; or ``out_dir``):

* ``top.bin`` (iCE40) or ``top.bit`` (ECP5): the bitstream;
* ``yosys.log``, ``nextpnr.log``: the tool logs;
* ``report.json`` + ``report.md`` (:mod:`xnorflow.synth.report`);
* ``placeholder/<memory>.hex``: the memory contents the bitstream was synthesised with
  (random, seeded), the "from" side of a BRAM swap (:mod:`xnorflow.synth.swap`).

The build itself runs in ``build/synth/<board>/<geometry>-s<seed>/`` under the working
folder (kept for debugging).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xnorflow.sw import files
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import parse_geometry

from .report import failure_message, make_report, report_markdown
from .tools import SynthError, require_tool, run_tool, run_with_progress, tool_env

DESIGNS = ("accelerator", "array", "loopback")


#: Memories whose contents come from the compiled model (the others are run-time data).
MODEL_MEMORIES = ("program", "weights", "thresholds")


@dataclass
class SynthConfig:
    """What to build. ``design``: ``accelerator`` (the whole thing), ``array`` (the bare
    systolic array behind the UART bridge) or ``loopback`` (the UART bridge around an echo
    core: bring-up and the flow's own tests). ``out_dir``/``build_dir`` default to
    ``bitstreams/<board>/<geometry>`` and ``build/synth/...`` under the working folder."""

    board: str
    geometry: str = "4x4x32"
    design: str = "accelerator"
    seed: int = 1
    freq_mhz: float | None = None
    baud: int | None = None
    model: str | None = None
    out_dir: str | None = None
    build_dir: str | None = None
    depths: dict = field(default_factory=dict)  # memory name -> words (overrides the target)
    #: publish the bitstream even when nextpnr's Fmax is below the requested clock (False:
    #: ``out_dir`` is left as it was and the report stays in the build folder)
    publish_failed_timing: bool = True
    #: ECP5: move the registers behind block RAM read ports into the RAMs (``OUTREG``,
    #: :mod:`xnorflow.synth.outreg`); None: on for the ECP5 (:func:`uses_outreg`)
    bram_outreg: bool | None = None


def uses_outreg(cfg: SynthConfig, spec) -> bool:
    """Whether the build of ``cfg`` for board ``spec`` runs the output-register pass: asked
    for, or by default on the ECP5 (the iCE40's RAMs have no output register)."""
    return spec.family == "ecp5" if cfg.bram_outreg is None else cfg.bram_outreg


def make_core(cfg: SynthConfig, spec, memories=None):
    """The core behind the UART bridge for ``cfg.design``; returns ``(core, target, info)``."""
    if cfg.design == "loopback":
        from xnorflow.hw.boards import EchoCore

        return EchoCore(), None, {"design": "loopback (UART bridge + echo core)"}
    if cfg.design == "array":
        from xnorflow.hw.array import SystolicArray
        from xnorflow.hw.boards import DatapathCore

        rows, cols, width = parse_geometry(cfg.geometry)
        target = board_target(spec, cfg.geometry)
        arr = SystolicArray(rows, cols, width, target.acc_bits, target.popcount_levels,
                            target.mem_regs)
        return DatapathCore(arr), None, {
            "design": "systolic array + UART bridge (inputs from a shift register, outputs "
                      "XOR-folded; no memories, no sequencer)", "target": target.name}
    if cfg.design != "accelerator":
        raise UserError(f"design {cfg.design!r}: choose one of {', '.join(DESIGNS)}")
    from xnorflow.hw.accelerator import Accelerator

    target = board_target(spec, cfg.geometry, cfg.depths)
    return Accelerator(target, memories=memories), target, {
        "design": "accelerator + UART bridge", "target": target.name}


def board_target(board, geometry: str, depths: dict | None = None):
    """``board``'s compiler target re-shaped for the array ``geometry``
    (:func:`~xnorflow.sw.targets.with_geometry`), with the memory depths in ``depths``
    (name -> words) replaced."""
    from xnorflow.sw.targets import get_target, with_depths, with_geometry

    target = with_geometry(get_target(board.target), *parse_geometry(geometry))
    return with_depths(target, depths) if depths else target


def is_bitstream_folder(folder: Path) -> bool:
    """Whether ``folder`` is empty or holds what :func:`synthesize` publishes (a report and
    a bitstream, or a synthesis report alone where the bitstream is not committed): the only
    folders a build may replace."""
    from xnorflow.sw.boards import FAMILIES

    folder = Path(folder)
    if not any(folder.iterdir()):
        return True
    if not (folder / "report.json").is_file():
        return False
    # a committed build whose bitstream is not committed (over 1 MB: the ECP5-85F's) is
    # recognised by its report alone
    return (any((folder / f.bitstream).is_file() for f in FAMILIES.values())
            or files.report_holds(folder, ("report_version", "board", "resources")))


def check_out_folder(out: Path) -> None:
    """Refuse an output folder a build may not replace: not a folder, a mount point, or a
    folder that is not a previous build's (a model folder, a report, a home folder)."""
    out = Path(out)
    files.existing_folder_only(out)
    if out.is_dir() and not is_bitstream_folder(out):
        raise UserError(f"{out}: exists and is not a bitstream folder (no report.json and "
                        "bitstream); refusing to replace it: choose another --out")


def check_config(cfg: SynthConfig):
    """Check everything about ``cfg`` that can be checked before synthesis (minutes of
    work): board, design, geometry, memory depths, clock, baud rate, the model and the
    output folder. Returns ``(board, target, model, out)``; raises :class:`UserError`, one
    line naming the flag and the value, on the first problem."""
    import math

    from xnorflow.sw.boards import bitstream_folder, get_board

    spec = get_board(cfg.board)
    if cfg.design not in DESIGNS:
        raise UserError(f"design {cfg.design!r}: choose one of {', '.join(DESIGNS)}")
    target = board_target(spec, cfg.geometry, cfg.depths)
    if cfg.baud is not None and not cfg.baud > 0:
        raise UserError(f"--baud {cfg.baud}: must be a positive number of bits per second")
    if cfg.freq_mhz is not None and not (cfg.freq_mhz > 0 and math.isfinite(cfg.freq_mhz)):
        raise UserError(f"--freq {cfg.freq_mhz}: must be a positive number of MHz")
    check_link(spec, cfg)
    if not 0 <= cfg.seed < 1 << 31:
        raise UserError(f"--seed {cfg.seed}: nextpnr seeds are 0 .. 2^31 - 1")
    if cfg.bram_outreg is True and spec.family != "ecp5":
        raise UserError(f"--bram-outreg: board {spec.name} is an {spec.family}; only the "
                        f"ECP5's DP16KD block RAMs have output registers")
    model = None
    if cfg.model:
        from xnorflow.sw.ir import CompiledModel
        from xnorflow.sw.program import check_fits

        if cfg.design != "accelerator":
            raise UserError(f"--model {cfg.model}: images/s are predicted for the accelerator; "
                            f"drop --model or use --design accelerator, not {cfg.design}")
        if not Path(cfg.model).is_dir():
            raise UserError(f"--model {cfg.model}: no such model folder (make one with "
                            "xnorflow compile)")
        model = CompiledModel.load(cfg.model)
        try:
            check_fits(model, target)
        except UserError as e:
            raise UserError(f"--model {cfg.model} does not fit {spec.name} {target.geometry}: "
                            f"{e}") from None
    out = Path(cfg.out_dir) if cfg.out_dir else bitstream_folder(spec.name, cfg.geometry)
    check_out_folder(out)
    files.check_can_create(out)
    return spec, target, model, out


def check_link(spec, cfg: SynthConfig) -> None:
    """Refuse a clock the board's PLL cannot make, and a baud rate (``--baud``, or the
    board's default) its UART bridge or the gateware at that clock cannot run
    (:func:`xnorflow.hw.link.throughput.baud_problem`)."""
    from xnorflow.hw.link.throughput import baud_problem, board_clock

    freq = None if cfg.freq_mhz is None else cfg.freq_mhz * 1e6
    try:
        clock = board_clock(spec, freq)
    except ValueError as e:
        raise UserError(f"--freq {cfg.freq_mhz}: board {spec.name}: {e}") from None
    baud = spec.default_baud if cfg.baud is None else cfg.baud
    problem = baud_problem(spec, baud, clock)
    if problem:
        flag = (f"--baud {cfg.baud}" if cfg.baud is not None
                else f"the {spec.name}'s default baud {baud} (pass --baud)")
        raise UserError(f"{flag}: {problem}")


def synthesize(cfg: SynthConfig, *, progress: bool = True) -> dict:
    """Build ``cfg`` and write bitstream, logs and report; return the report.

    Everything :func:`check_config` checks is checked first, before any tool runs."""
    from xnorflow.hw.boards import PlatformTop, make_platform
    from xnorflow.hw.memories import YOSYS_AFTER_READ

    spec, target, model, out = check_config(cfg)
    env_tools = tool_env()
    for var in ("YOSYS", f"NEXTPNR_{spec.family.upper()}",
                "ICEPACK" if spec.family == "ice40" else "ECPPACK"):
        require_tool(var)

    placeholders = {}
    if cfg.design == "accelerator":
        placeholders = placeholder_memories(target, spec, seed=cfg.seed)
    core, target, info = make_core(cfg, spec, memories=list(placeholders.values()) or None)

    freq = None if cfg.freq_mhz is None else cfg.freq_mhz * 1e6
    baud = spec.default_baud if cfg.baud is None else cfg.baud
    try:
        top = PlatformTop(spec, core, freq=freq, baud=baud)
    except ValueError as e:
        raise UserError(f"board {spec.name}: {e}") from None

    build = (Path(cfg.build_dir) if cfg.build_dir
             else Path("build") / "synth" / spec.name / f"{cfg.geometry}-s{cfg.seed}")
    if build.exists():
        shutil.rmtree(build)
    files.make_dirs(build)

    platform = make_platform(spec)
    # --timing-allow-fail: a missed clock target is reported (timing_met), not an error
    nextpnr_opts = f"--seed {int(cfg.seed)} --timing-allow-fail"
    t0 = time.monotonic()
    # ECP5: compressed bitstreams (~half the size; the 85F's is over 1 MB uncompressed)
    extra = {"ecppack_opts": "--compress"} if spec.family == "ecp5" else {}
    plan = platform.prepare(top, name="top", nextpnr_opts=nextpnr_opts,
                            synth_opts="", script_after_read=YOSYS_AFTER_READ,
                            script_after_synth="stat", **extra)
    plan.extract(build)
    if uses_outreg(cfg, spec):
        _insert_outreg_pass(build)
    if sys.platform.startswith("win"):
        cmd = ["cmd", "/c", "build_top.bat"]
    else:
        cmd = ["sh", "build_top.sh"]
    env = dict(os.environ)
    env.update(env_tools)
    stages = [("nextpnr (place & route)", "top.tim"),
              ("pack", "top.asc" if spec.family == "ice40" else "top.config")]
    rc = run_with_progress(cmd, build, env, build / "build.log", stages,
                           f"synth {spec.name} {cfg.geometry} ({info['design']})", progress)
    elapsed = time.monotonic() - t0
    if rc != 0:
        raise SynthError(failure_message(build, spec))

    report = make_report(cfg, spec, top, build, elapsed, target, model, info)
    if cfg.design == "accelerator" and report["resources"]["lut4"]:
        arr = array_lut4(spec, target, build / "array")
        report["resources"]["array_lut4"] = arr
        report["array_lut_share"] = round(arr / report["resources"]["lut4"], 4)
    if not report["timing_met"] and not cfg.publish_failed_timing:
        # nothing replaces what `out` holds: a bitstream that misses its clock may not work
        report["out_dir"] = str(build)
        report["published"] = False
        files.write_text(build / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        files.write_text(build / "report.md", report_markdown(report))
        return report
    report["out_dir"] = str(out)
    report["published"] = True
    _publish(out, build, spec, report, placeholders)
    return report


def _insert_outreg_pass(build: Path) -> None:
    """Run :mod:`xnorflow.synth.outreg` on yosys's netlist in the build scripts Amaranth
    wrote (``build_top.sh`` and ``.bat``), right after the yosys line."""
    from .outreg import LOG

    cmd = f'"{sys.executable}" -m xnorflow.synth.outreg top.json > {LOG}'
    for script, yosys, fail in (("build_top.sh", '"$YOSYS"', ""),
                                ("build_top.bat", '"%YOSYS%"', " || exit /b")):
        path = build / script
        lines = path.read_text().splitlines(keepends=True)
        at = [i for i, line in enumerate(lines) if line.startswith(yosys)]
        if len(at) != 1:
            raise SynthError(f"{path}: expected one yosys line, found {len(at)}")
        lines.insert(at[0] + 1, cmd + fail + "\n")
        path.write_text("".join(lines))


def array_lut4(spec, target, work: Path) -> int:
    """LUT4s of the systolic array alone (``SystolicArray`` of ``target``), synthesised by
    yosys with the board family's script: how much of the whole design is datapath. On the
    ECP5 each carry cell counts as its two LUTs (as nextpnr's total does)."""
    from amaranth.back import rtlil

    from xnorflow.hw.array import SystolicArray

    from .report import parse_yosys_stat

    work.mkdir(parents=True, exist_ok=True)
    arr = SystolicArray(target.rows, target.cols, target.width, target.acc_bits,
                        target.popcount_levels, target.mem_regs)
    (work / "array.il").write_text(rtlil.convert(arr, name="array"))
    (work / "array.ys").write_text(
        f"read_rtlil array.il\nsynth_{spec.family} -top array\nstat\n")
    run_tool("YOSYS", ["-q", "-l", "array.log", "array.ys"], cwd=work)
    cells = parse_yosys_stat((work / "array.log").read_text(errors="replace"))
    if spec.family == "ice40":
        return cells.get("SB_LUT4", 0)
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)


def placeholder_memories(target, board, seed: int) -> dict:
    """Random (seeded) contents for every memory of ``target`` with a bounded depth.

    Synthesising with random contents keeps every memory a RAM with a unique, recognisable
    pattern, which is what ``icebram``/``ecpbram`` need to find and replace it later. Only
    the model memories (:data:`MODEL_MEMORIES`) get one, except those ``board`` builds
    without initial contents (``board.no_init``: SPRAM) and those whose depth is not a
    whole number of RAM blocks (``swap_depth_multiple`` of the board's family). The program
    placeholder starts with a valid empty header (so the accelerator runs nothing until a
    model is swapped in).
    """
    import numpy as np

    from xnorflow.sw import program
    from xnorflow.sw.images import MemoryImage

    rng = np.random.default_rng(0xB17 + seed)
    out = {}
    for name, (width, depth) in sorted(target.memories.items()):
        if depth is None or name not in MODEL_MEMORIES or name in board.no_init:
            continue
        if depth % board.family_facts.swap_depth_multiple:  # cannot be swapped: no init
            continue
        words = [int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1)
                 for _ in range(depth)]
        if name == "program":  # a valid, empty program header: magic, 0 layers
            words[: program.HEADER_WORDS] = [0] * program.HEADER_WORDS
            words[0] = program.MAGIC
        arr = np.array(words, dtype=np.uint64) if width <= 64 else np.array(words, dtype=object)
        out[name] = MemoryImage(name=name, width=width, words=arr,
                                layout="random placeholder (synthesis init, swap source)")
    return out


def _write_hex(path: Path, image) -> None:
    digits = (image.width + 3) // 4
    path.write_text("".join(f"{int(w):0{digits}x}\n" for w in image.words))


def _publish(out: Path, build: Path, spec, report: dict, placeholders: dict) -> None:
    """Write bitstream, logs, placeholders and report into ``out`` atomically."""
    with files.atomic_folder(out, check_out_folder) as tmp:
        bit = spec.family_facts.bitstream
        shutil.copyfile(build / bit, tmp / bit)
        shutil.copyfile(build / "top.rpt", tmp / "yosys.log")
        shutil.copyfile(build / "top.tim", tmp / "nextpnr.log")
        if placeholders:
            (tmp / "placeholder").mkdir()
            for name, image in placeholders.items():
                _write_hex(tmp / "placeholder" / f"{name}.hex", image)
        report["files"] = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        report["files"] += ["report.json", "report.md"]
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (tmp / "report.md").write_text(report_markdown(report))
