"""Where the iCEBreaker (iCE40 UP5K) logic goes: yosys-only per-module resource breakdown of
the whole accelerator + UART board top, for iterating on fit without place and route.

Run: ``.venv/bin/python benchmarks/ice40_fit.py [--flatten] 4x4x16 [2x4x16 ...]``.
For each geometry it builds the same design as
``xnorflow synth --board icebreaker --geometry G`` (the board top around
:class:`~xnorflow.hw.accelerator.Accelerator` with the seeded placeholder memories), runs
``synth_ice40 -spram -noflatten`` and prints, per module (each line counts that module
only, not its submodules), SB_LUT4, flip-flops, SB_CARRY and SB_RAM40_4K, then the totals
(``--flatten``: the real flow's flattened synthesis, its totals, the logic cells after
nextpnr's packer, and the cells per block attributed by the hierarchical name of the net
each drives). Output:
``benchmarks/results/ice40_fit.<G>[.flat].txt``. The UP5K has 5280 logic cells (one LUT4 +
one FF each), 30 EBR and 4 SPRAM; nextpnr's logic cells are at least max(LUT4, FF).
Per module (``-noflatten``), ABC9 in YoWASP's yosys crashes on the v2 board top (on the
small `top` module); ``--flatten`` works. Takes 1-6 minutes per geometry; ``--top
top.top.core.host`` (any module path of the per-module listing) synthesises just that
module, faster, for iterating on one block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from xnorflow.hw.boards import DEFAULT_BAUD, PlatformTop, make_platform  # noqa: E402
from xnorflow.hw.memories import YOSYS_AFTER_READ  # noqa: E402
from xnorflow.sw import files  # noqa: E402
from xnorflow.sw.boards import get_board  # noqa: E402
from xnorflow.synth.build import board_target, placeholder_memories  # noqa: E402
from xnorflow.synth.tools import tool_env  # noqa: E402


def _count(body: str, pattern: str) -> int:
    return sum(int(x) for x in re.findall(r"(\d+)\s+" + pattern + r"\b", body))


def breakdown(geometry: str, build: Path, flatten: bool = False, module: str = "top") -> str:
    from xnorflow.hw.accelerator import Accelerator

    tool_env()
    spec = get_board("icebreaker")
    target = board_target(spec, geometry)
    ph = placeholder_memories(target, spec, seed=1)
    core = Accelerator(target, memories=list(ph.values()))
    top = PlatformTop(spec, core, baud=DEFAULT_BAUD)
    plan = make_platform(spec).prepare(top, name="top")
    plan.extract(build)
    opt = "" if flatten else " -noflatten"
    (build / "fit.ys").write_text(f"read_rtlil top.il\n{YOSYS_AFTER_READ}\n"
                                  f"synth_ice40 -top {module} -spram{opt}\n"
                                  "tee -o fit.stat stat\n"
                                  + ("write_json fit.json\n" if flatten and module == "top"
                                     else ""))
    subprocess.run([os.environ["YOSYS"], "-q", "fit.ys"], cwd=build, check=True)
    stat = (build / "fit.stat").read_text()
    packed = ""
    if flatten and module == "top":
        # nextpnr's packer: the logic cells the design really needs (a flip-flop shares a
        # cell only with the LUT that drives it alone; a carry only with a matching LUT)
        subprocess.run([os.environ["NEXTPNR_ICE40"], "--quiet", "--pack-only", "--up5k",
                        "--package", "sg48", "--json", "fit.json", "--pcf", "top.pcf",
                        "--log", "pack.log"], cwd=build, capture_output=True)
        m = re.search(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", (build / "pack.log").read_text())
        if m:
            packed = (f"nextpnr --pack-only: {m.group(1)} of {m.group(2)} logic cells "
                      f"({100 * int(m.group(1)) / int(m.group(2)):.0f} %)")
    lines = [f"geometry {geometry}, target {target.name}, "
             + (f"only {module}, " if module != "top" else "")
             + f"{'flattened (as the real flow)' if flatten else 'per module (-noflatten)'}: "
             "memories "
             + ", ".join(f"{n} {w}b x {d}" for n, (w, d) in target.memories.items()),
             f"{'module':56s} {'LUT4':>6} {'FF':>6} {'CARRY':>6} {'EBR':>4} {'SPRAM':>5}"]
    tot = [0, 0, 0, 0, 0]
    parts = re.split(r"^=== (\S+) ===$", stat, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.split("=== design hierarchy ===")[0]
        v = [_count(body, "SB_LUT4"), _count(body, r"SB_DFF\w*"), _count(body, "SB_CARRY"),
             _count(body, "SB_RAM40_4K"), _count(body, "SB_SPRAM256KA")]
        tot = [a + b for a, b in zip(tot, v, strict=True)]
        if any(v):
            lines.append(f"{name:56s} {v[0]:6d} {v[1]:6d} {v[2]:6d} {v[3]:4d} {v[4]:5d}")
    lines.append(f"{'total':56s} {tot[0]:6d} {tot[1]:6d} {tot[2]:6d} {tot[3]:4d} {tot[4]:5d}")
    lines.append(f"UP5K: 5280 LCs, 30 EBR, 4 SPRAM; LUT4 {100 * tot[0] / 5280:.0f} %, "
                 f"FF {100 * tot[1] / 5280:.0f} %, EBR {tot[3]}/30")
    if packed:
        lines.append(packed)
    if flatten and module == "top":
        lines += ["", "per block of the flattened netlist (each cell counted for the "
                  "hierarchical name of the net it drives: ABC9 keeps no source attributes, "
                  "so a LUT shared by two blocks' logic counts for one; PEs summed):",
                  f"{'block':56s} {'LUT4':>6} {'FF':>6} {'CARRY':>6}"]
        for name, v in by_driven_net(json.loads((build / "fit.json").read_text())):
            lines.append(f"{name:56s} {v['LUT4']:6d} {v['FF']:6d} {v['CARRY']:6d}")
    return "\n".join(lines) + "\n"


def by_driven_net(netlist: dict, depth: int = 4) -> list:
    """``(block, {"LUT4", "FF", "CARRY"})`` of a flattened yosys JSON netlist, each cell
    attributed to the hierarchical name (first ``depth`` levels) of the net it drives."""
    mod = netlist["modules"]["top"]
    names: dict = {}
    for n, info in mod["netnames"].items():
        for b in info["bits"]:
            if isinstance(b, int):
                names.setdefault(b, []).append((info.get("hide_name", 0), n))
    counts: dict = {}
    ports = {"SB_LUT4": ("O", "LUT4"), "SB_CARRY": ("CO", "CARRY")}
    for cell in mod["cells"].values():
        port, kind = ports.get(cell["type"], ("Q", "FF") if cell["type"].startswith("SB_DFF")
                               else (None, None))
        if port is None:
            continue
        cands = sorted(names.get(cell["connections"][port][0], []))
        net = next((n for hide, n in cands if "." in n and not hide),
                   next((n.lstrip("$") for _, n in cands if "." in n), "(unnamed)"))
        block = re.sub(r"pe_\d+_\d+", "pe_*", ".".join(net.split(".")[:-1][:depth]) or net)
        counts.setdefault(block, {"LUT4": 0, "FF": 0, "CARRY": 0})[kind] += 1
    return sorted(counts.items(), key=lambda kv: -kv[1]["LUT4"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("geometry", nargs="+", help="RxCxW, e.g. 4x4x16")
    ap.add_argument("--flatten", action="store_true",
                    help="flatten like the real flow (totals only, fewer cells) and count the "
                         "logic cells after nextpnr's packer")
    ap.add_argument("--top", default="top", metavar="MODULE",
                    help="synthesise only this module of the design, e.g. top.top.core.host, "
                         "top.top.core.sequencer, top.top.core.sequencer.engine.post (fast; "
                         "printed, not written to benchmarks/results)")
    args = ap.parse_args()
    out = REPO / "benchmarks" / "results"
    for g in args.geometry:
        with tempfile.TemporaryDirectory(prefix="ice40fit-") as tmp:
            text = breakdown(g, Path(tmp), args.flatten, args.top)
        print(text)
        if args.top != "top":
            continue
        dst = out / f"ice40_fit.{g}{'.flat' if args.flatten else ''}.txt"
        files.write_text(dst, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
