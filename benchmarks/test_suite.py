"""The default test run as CI runs it: ``.ci/run`` (``make test``) on a clean clone, timed.

Run: ``.venv/bin/python benchmarks/test_suite.py [--rev HEAD] [--keep DIR]`` from the
repository root. It clones the repository at ``--rev``
into a temporary folder (``--keep DIR``: that folder, kept afterwards), runs ``.ci/run``
there from nothing (``scripts/setup.sh`` creates the venv and installs every package; pip's
cache and YoWASP's compiled tools on this machine are reused, as on a CI machine with
caches), and writes ``benchmarks/results/test_suite.txt``: the commit, the wall time, the
pytest summary line and the load average before and after (other jobs on the 2 cores slow
it). Exit status: that of ``.ci/run``; the result file is written either way.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xnorflow.sw import files  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "test_suite.txt"
#: pytest's last line, e.g. "1069 passed, 2 skipped in 766.00s" or "3 failed, 1066 passed ..."
SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed|errors?|skipped)\b.* in [\d.]+s.*?)\s*=*$")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="commit to clone and test (default HEAD)")
    ap.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    args = ap.parse_args(argv)
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify",
                                 f"{args.rev}^{{commit}}"], check=True, text=True,
                                capture_output=True).stdout.strip()
    except subprocess.CalledProcessError:
        print(f"test_suite: --rev {args.rev!r} is not a commit of {REPO}", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists():
        print(f"test_suite: --keep {args.keep} exists; name a new folder", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="xnorflow-ci-") as tmp:
        clone = args.keep if args.keep is not None else Path(tmp) / "xnorflow"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
        load_before = _load()
        t0 = time.monotonic()
        proc = subprocess.run([str(clone / ".ci" / "run")], cwd=clone, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        load_after = _load()
        log = proc.stdout
    summary = next((m.group(1) for line in reversed(log.splitlines())
                    if (m := SUMMARY.match(line.strip()))), "no pytest summary line")
    text = (f"# The default test run (benchmarks/test_suite.py): .ci/run on a clean clone\n\n"
            f"commit        {commit}\n"
            f"exit status   {proc.returncode}\n"
            f"wall time     {wall:.0f} s (setup from nothing with pip's cache, then "
            f"pytest -n 2)\n"
            f"pytest        {summary}\n"
            f"load average  {load_before} before, {load_after} after (1, 5, 15 min)\n"
            f"cpus          {os.cpu_count()}\n")
    if proc.returncode:
        text += "\nlast lines of the run:\n" + "\n".join(log.splitlines()[-40:]) + "\n"
    files.write_text(OUT, text)
    print(text, end="")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
