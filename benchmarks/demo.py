"""Time `xnorflow demo` end to end and commit its report: the README's demo figures.

    python benchmarks/demo.py [--cold-yowasp] [-- extra xnorflow demo flags]

``--cold-yowasp`` points YoWASP at an empty cache (``YOWASP_CACHE_DIR``), so the first
compilation of yosys and nextpnr is inside the measured time, as on a fresh machine.
Writes ``benchmarks/results/demo/``: the demo's report.md, report.json and plots, and
``timing.txt`` with the wall time, exit code and machine load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xnorflow.sw import files

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "demo"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold-yowasp", action="store_true",
                    help="start with an empty YoWASP cache (first-use compilation included)")
    ap.add_argument("extra", nargs="*", help="more flags for xnorflow demo")
    args = ap.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        if args.cold_yowasp:
            env["YOWASP_CACHE_DIR"] = str(Path(tmp) / "yowasp")
        report = Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "xnorflow", "demo", "-o", str(report), *args.extra]
        load0 = os.getloadavg()
        t0 = time.monotonic()
        rc = subprocess.run(cmd, env=env).returncode
        wall = time.monotonic() - t0
        if not report.is_dir():
            print(f"demo wrote no report (exit {rc})", file=sys.stderr)
            return 1
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        for name in ("report.md", "report.json", "training_curve.png", "accuracy.png",
                     "resources.png"):
            if (report / name).is_file():
                shutil.copy2(report / name, OUT / name)
    cache = "empty at start (first compilation included)" if args.cold_yowasp else "as found"
    load = " ".join(f"{x:.2f}" for x in load0)
    text = (f"command: {' '.join(['xnorflow', 'demo', *args.extra])}\n"
            f"YoWASP cache: {cache}\n"
            f"wall time: {wall:.0f} s\nexit code: {rc}\n"
            f"load average at start: {load}; cores: {os.cpu_count()}\n"
            f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n")
    files.write_text(OUT / "timing.txt", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
