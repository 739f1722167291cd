"""ECP5: move the register behind a block RAM's read port into the RAM (``REGMODE = OUTREG``).

yosys's ``synth_ecp5`` maps a read port to a ``DP16KD`` without its output register, so the
read data leave the RAM 5.8 ns after the clock (speed grade 6) and every path from a RAM
starts with that. The accelerator registers each RAM's read word once more right after the
RAM (``Target.mem_regs = 2``, ``docs/accelerator.md``); this pass, run on yosys's JSON netlist
before nextpnr, puts those registers into the RAM itself: the ``DP16KD``'s output register,
whose data leave ~0.7 ns after the clock. Cycle behaviour does not change: the same register,
moved into the block RAM.

A port's register is moved only where it is exactly that register: every used ``DO`` bit of
the port drives one load, the ``DI`` of a ``TRELLIS_FF`` clocked by the port's clock (not
inverted), with one common clock enable (which becomes the port's output clock enable
``OCE``), power-up value 0 (``REGSET = RESET``, as the RAM's output register), the RAM's
``GSR`` setting, and no reset in use on either side. Anything else leaves the port as it is.
The same conditions as the yosys plugin ``ecp5_infer_bram_outreg`` (which a WebAssembly yosys
cannot load), applied to the netlist file.

``python -m xnorflow.synth.outreg top.json`` rewrites the file in place (atomically) and
prints what it moved; :func:`xnorflow.synth.build.synthesize` runs it between yosys and
nextpnr for every ECP5 build and records the counts in the report (``bram_outregs``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from xnorflow.sw import files

__all__ = ["absorb_output_registers", "rewrite_file", "counts_in", "LOG"]

PORTS = ("A", "B")
#: Where the build scripts put the pass's one line of counts (in the build folder).
LOG = "outreg.log"
_PREFIX = "bram_outregs "
DO_BITS = 18  # DP16KD: DOA0..DOA17, DOB0..DOB17


def _s(v) -> str:
    """A yosys JSON string parameter (string values that look like bits carry a trailing
    space)."""
    return str(v).strip()


def _loads(module: dict) -> dict:
    """Net bit -> the ``(cell, port)`` inputs it drives (module output ports count as loads,
    named ``(None, port)``)."""
    loads: dict = {}
    for name, cell in module["cells"].items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        loads.setdefault(b, []).append((name, port))
    for port, p in module.get("ports", {}).items():
        if p.get("direction") in ("output", "inout"):
            for b in p["bits"]:
                if isinstance(b, int):
                    loads.setdefault(b, []).append((None, port))
    return loads


def _port_flops(cells: dict, ram: dict, P: str, loads: dict):
    """``([(do_port, flop_name)], enable)`` if port ``P``'s register can move into the RAM,
    else ``(None, reason)``."""
    par, con = ram["parameters"], ram["connections"]
    if _s(par.get(f"REGMODE_{P}", "NOREG")) != "NOREG":
        return None, "has an output register already"
    if _s(par.get(f"CLK{P}MUX", "")) != f"CLK{P}":
        return None, "clock not used as is"
    clk = con[f"CLK{P}"][0]
    if con.get(f"RST{P}", ["0"])[0] != "0":
        return None, "RAM reset in use"
    flops, enable = [], None
    for i in range(DO_BITS):
        port = f"DO{P}{i}"
        if port not in con:
            continue
        bit = con[port][0]
        users = loads.get(bit, [])
        if not users:
            continue
        if len(users) != 1:
            return None, "read data drive several loads"
        name, pin = users[0]
        ff = cells.get(name) if name is not None else None
        if ff is None or ff["type"] != "TRELLIS_FF" or pin != "DI":
            return None, "read data drive logic"
        fp, fc = ff["parameters"], ff["connections"]
        if _s(fp.get("CLKMUX", "")) != "CLK" or fc["CLK"][0] != clk:
            return None, "register on another clock"
        lsr = _s(fp.get("LSRMUX", "LSR"))  # "LSR" with LSR tied low, or "0": no reset
        if lsr not in ("LSR", "0") or (lsr == "LSR" and fc.get("LSR", ["0"])[0] != "0"):
            return None, "register reset in use"
        if _s(fp.get("REGSET", "RESET")) != "RESET":
            return None, "register powers up at 1"
        if _s(fp.get("GSR", "DISABLED")) != _s(par.get("GSR", "DISABLED")):
            return None, "GSR differs"
        cemux = _s(fp.get("CEMUX", "1"))
        if cemux == "CE":
            en = fc["CE"][0]
        elif cemux == "1":
            en = "1"
        else:
            return None, "register enable inverted"
        if enable is None:
            enable = en
        elif en != enable:
            return None, "registers with different enables"
        flops.append((port, name))
    if not flops:
        return None, "no used read data"
    return flops, enable


def absorb_output_registers(netlist: dict) -> dict:
    """Move eligible read registers into their ``DP16KD``s, in place; return the counts:
    ``ports`` moved, ``flops`` removed, ``ports_total`` used read ports seen, and ``kept`` (a
    reason -> count of the ports left as they were)."""
    ports = flops = total = 0
    kept: Counter = Counter()
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        rams = [n for n, c in cells.items() if c["type"] == "DP16KD"]
        if not rams:
            continue
        loads = _loads(module)
        for rname in rams:
            ram = cells[rname]
            for P in PORTS:
                found, info = _port_flops(cells, ram, P, loads)
                if found is None:  # info: why the port keeps its register outside
                    if info != "no used read data":
                        total += 1
                        kept[info] += 1
                    continue
                total += 1
                for port, fname in found:
                    q = cells[fname]["connections"]["Q"]
                    ram["connections"][port] = list(q)
                    del cells[fname]
                ram["connections"][f"OCE{P}"] = [info]  # info: the registers' enable
                ram["parameters"][f"REGMODE_{P}"] = "OUTREG"
                ports += 1
                flops += len(found)
    return {"ports": ports, "flops": flops, "ports_total": total, "kept": dict(kept)}


def rewrite_file(path: str | Path) -> dict:
    """:func:`absorb_output_registers` on a yosys JSON file, written back atomically."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    counts = absorb_output_registers(netlist)
    files.write_text(path, json.dumps(netlist))
    return counts


def counts_in(build: str | Path) -> dict | None:
    """The counts the pass printed into ``build``'s :data:`LOG` (None where it did not run)."""
    log = Path(build) / LOG
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        if line.startswith(_PREFIX):
            return json.loads(line[len(_PREFIX):])
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m xnorflow.synth.outreg NETLIST.json", file=sys.stderr)
        return 2
    try:
        counts = rewrite_file(args[0])
    except (OSError, ValueError, KeyError) as e:
        print(f"{args[0]}: {e}", file=sys.stderr)
        return 2
    print(f"{_PREFIX}{json.dumps(counts, sort_keys=True)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
