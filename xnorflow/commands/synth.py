"""``xnorflow synth``: build a bitstream for a board and geometry, with a report."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  xnorflow synth --board icebreaker        # the up5k target's {icebreaker} (defaults)
  xnorflow synth --board icebreaker --model runs/mlp-up5k --seed 3
  xnorflow synth --board hx8k-evn --freq 60
  xnorflow synth --board ulx3s-85f         # {ulx3s-85f}, about 7 minutes
  xnorflow synth --board icebreaker --geometry 1x1x16 --design loopback   # UART echo only
  xnorflow synth --board icebreaker --swap-model runs/mlp-up5k
      (no synthesis: writes top-<model>.bin with the model's memory images in the BRAMs
       of the existing build, using icebram/ecpbram)

A model compiled for a board's target (runs/mlp-up5k: --target up5k) runs on that board's
default geometry; other geometries re-shape the target's memories (--geometry), and what
does not fit the FPGA fails in nextpnr with what it needed.

Output goes to ./bitstreams/<board>/<geometry>/ (or --out): the bitstream (top.bin for iCE40,
top.bit for ECP5), yosys.log, nextpnr.log, report.json and report.md (LUTs, FFs, RAM
blocks, DSPs, Fmax per clock, the seed, and the images/s of --model at that Fmax next to
the UART-bound images/s). The first run compiles the YoWASP tools (about a minute).
"""


def register(sub) -> None:
    from xnorflow.sw.boards import BOARDS
    from xnorflow.sw.targets import TARGETS
    from xnorflow.synth.build import DESIGNS

    # each board's defaults, read from the registry (sw/boards.py) so the help never goes stale
    defaults = {b.name: f"{TARGETS[b.target].geometry} at {b.default_freq / 1e6:g} MHz"
                for b in BOARDS.values()}

    p = sub.add_parser(
        "synth",
        help="synthesise a board top (yosys + nextpnr) and report resources and Fmax",
        description="Synthesise the accelerator behind its UART bridge for a board with the "
        "open toolchain (YoWASP yosys/nextpnr from PyPI) and write bitstream, logs and report.",
        epilog=EXAMPLES.format_map(defaults),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--board", required=True, choices=sorted(BOARDS),
                   help="board: " + "; ".join(f"{b.name}: {b.description}"
                                              for b in BOARDS.values()))
    p.add_argument("--geometry", default=None,
                   help="array ROWSxCOLSxWIDTH (default: the board's target geometry)")
    p.add_argument("--model", default=None,
                   help="compiled model folder: report its predicted images/s")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--freq", type=float, default=None,
                   help="system clock in MHz made by the PLL (default: the board's, one the "
                   "whole accelerator meets: " + ", ".join(
                       f"{b.name} {b.default_freq / 1e6:g}" for b in BOARDS.values()) + ")")
    p.add_argument("--baud", type=int, default=None,
                   help="UART baud rate: one the board's USB-UART bridge makes and the gateware "
                   "can divide from the system clock (default: the board's: " + ", ".join(
                       f"{b.name} {b.default_baud}" for b in BOARDS.values()) + ")")
    p.add_argument("--design", default="accelerator", choices=DESIGNS,
                   help="what to put behind the UART bridge (default: accelerator)")
    p.add_argument("--depth", action="append", default=[], metavar="MEMORY=WORDS",
                   help="override a memory's depth (repeatable), e.g. --depth weights=512")
    p.add_argument("--out", default=None,
                   help="output folder (default ./bitstreams/BOARD/GEOMETRY)")
    p.add_argument("--swap-model", default=None, metavar="DIR",
                   help="do not synthesise: put DIR's memory images into the existing "
                   "bitstream's RAMs (icebram/ecpbram)")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="write the bitstream even if nextpnr's Fmax is below the system clock "
                   "(default: exit 1 and leave the output folder as it was)")
    p.add_argument("--bram-outreg", action=argparse.BooleanOptionalAction, default=None,
                   help="ECP5: move the registers behind block RAM read ports into the RAMs "
                   "(DP16KD OUTREG, a netlist pass between yosys and nextpnr; default: on for "
                   "the ECP5, docs/synthesis.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(args) -> int:
    from xnorflow.sw.boards import get_board
    from xnorflow.synth import SynthConfig, swap_model, synthesize

    spec = get_board(args.board)
    geometry = args.geometry
    if geometry is None:
        from xnorflow.sw.targets import get_target

        geometry = get_target(spec.target).geometry
    if args.swap_model:
        from xnorflow.sw.boards import bitstream_folder

        folder = args.out or bitstream_folder(spec.name, geometry)
        out = swap_model(folder, args.swap_model, progress=not args.quiet)
        print(f"wrote {out}")
        return 0
    depths = {}
    for item in args.depth:
        name, _, words = item.partition("=")
        if not words.isdigit() or int(words) < 1:
            from xnorflow.sw.errors import UserError

            raise UserError(f"--depth {item!r}: expected MEMORY=WORDS, e.g. weights=512")
        depths[name] = int(words)
    cfg = SynthConfig(board=args.board, geometry=geometry, design=args.design, seed=args.seed,
                      freq_mhz=args.freq, baud=args.baud, model=args.model, out_dir=args.out,
                      depths=depths, publish_failed_timing=args.allow_timing_fail,
                      bram_outreg=args.bram_outreg)
    report = synthesize(cfg, progress=not args.quiet)
    res = report["resources"]
    lc = res["logic_cells"]
    print(f"{report['board']} {report['geometry']} ({report['design']}): "
          f"{res['lut4']} LUT4, {res['ff']} FF, LC {lc.get('used')}/{lc.get('available')}, "
          f"RAM {res['bram'].get('used', 0)}, Fmax {report['fmax_mhz']} MHz "
          f"(system clock {report['clock']['system_mhz']:.2f} MHz, timing "
          f"{'met' if report['timing_met'] else 'NOT met'}), seed {report['seed']}")
    if "model" in report:
        mm = report["model"]
        comp = mm.get("images_per_s_compute")
        print(f"model: {comp:,.0f} images/s compute-bound, " if comp else "model: ",
              end="")
        print(f"{mm['images_per_s_link']:,.0f} images/s over the link at "
              f"{mm['link']['baud']:,.0f} baud, {mm['link']['batch']} per run")
    print(f"report: {report['out_dir']}/report.md")
    if not report["timing_met"]:
        fmax = report["fmax_mhz"]
        print(f"error: timing NOT met: Fmax {fmax} MHz is below the system clock "
              f"{report['clock']['system_mhz']:.2f} MHz; "
              + ("the bitstream was written anyway (--allow-timing-fail)"
                 if report["published"] else
                 "no bitstream written (--allow-timing-fail writes it anyway)")
              + f"; try --freq {int(fmax or 12)} or another --seed", file=sys.stderr)
        return 1
    return 0
