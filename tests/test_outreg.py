"""The ECP5 netlist pass that moves a block RAM's read register into the RAM
(``xnorflow.synth.outreg``): what it moves, what it must leave alone, and on yosys's own
``synth_ecp5`` output."""

import copy
import json

import pytest

from xnorflow.synth.outreg import absorb_output_registers, main, rewrite_file

CLK, EN, OTHER_CLK, RST = 2, 3, 4, 5


def _ram(do_bits: dict, **params) -> dict:
    """A DP16KD with its port B read data on the given nets (port A unused)."""
    conns = {"CLKA": [CLK], "CLKB": [CLK], "RSTA": ["0"], "RSTB": ["0"], "OCEA": ["1"],
             "OCEB": ["1"], "CEA": ["1"], "CEB": ["1"]}
    dirs = {p: "input" for p in conns}
    for i in range(18):
        conns[f"DOA{i}"] = [1000 + i]
        dirs[f"DOA{i}"] = "output"
    for i, net in do_bits.items():
        conns[f"DOB{i}"] = [net]
    for i in range(18):
        dirs[f"DOB{i}"] = "output"
        conns.setdefault(f"DOB{i}", [2000 + i])
    par = {"CLKAMUX": "CLKA", "CLKBMUX": "CLKB", "REGMODE_A": "NOREG", "REGMODE_B": "NOREG",
           "GSR": "DISABLED", "RESETMODE": "ASYNC"}
    par.update(params)
    return {"type": "DP16KD", "parameters": par, "connections": conns,
            "port_directions": dirs}


def _ff(d: int, q: int, *, clk=CLK, en=None, lsr="0", **params) -> dict:
    par = {"CEMUX": "CE" if en is not None else "1 ", "CLKMUX": "CLK", "GSR": "DISABLED",
           "LSRMUX": "LSR", "REGSET": "RESET"}
    par.update(params)
    conns = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    dirs = {"CLK": "input", "DI": "input", "LSR": "input", "Q": "output"}
    if en is not None:
        conns["CE"], dirs["CE"] = [en], "input"
    return {"type": "TRELLIS_FF", "parameters": par, "connections": conns,
            "port_directions": dirs}


def _lut(*ins: int, out: int) -> dict:
    conns = {f"I{i}": [n] for i, n in enumerate(ins)} | {"Z": [out]}
    return {"type": "LUT4", "parameters": {}, "connections": conns,
            "port_directions": {**{f"I{i}": "input" for i in range(len(ins))}, "Z": "output"}}


def _netlist(cells: dict) -> dict:
    return {"modules": {"top": {"ports": {"out": {"direction": "output", "bits": [900]}},
                                "cells": cells, "netnames": {}}}}


def _three_flops(**ff_kw) -> dict:
    cells = {"ram": _ram({0: 10, 1: 11, 2: 12})}
    for i in range(3):
        cells[f"ff{i}"] = _ff(10 + i, 20 + i, **ff_kw)
    return _netlist(cells)


def test_moves_the_register_into_the_ram():
    n = _three_flops()
    counts = absorb_output_registers(n)
    cells = n["modules"]["top"]["cells"]
    assert counts == {"ports": 1, "flops": 3, "ports_total": 1, "kept": {}}
    assert sorted(cells) == ["ram"]  # the flops are gone
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"  # port A drives nothing
    # the RAM now drives what the flops drove; unused bits keep their nets
    assert [ram["connections"][f"DOB{i}"] for i in range(4)] == [[20], [21], [22], [2003]]
    assert ram["connections"]["OCEB"] == ["1"]


def test_the_registers_enable_becomes_the_output_clock_enable():
    n = _three_flops(en=EN)
    assert absorb_output_registers(n)["ports"] == 1
    assert n["modules"]["top"]["cells"]["ram"]["connections"]["OCEB"] == [EN]


def _refused(n: dict, reason: str):
    before = copy.deepcopy(n)
    counts = absorb_output_registers(n)
    assert counts["ports"] == 0 and counts["flops"] == 0
    assert counts["kept"] == {reason: 1}
    assert n == before  # nothing touched


@pytest.mark.parametrize("change, reason", [
    (lambda c: c.update(lut=_lut(11, out=30)), "read data drive several loads"),
    (lambda c: c.update(ff1=_lut(11, out=21)), "read data drive logic"),
    (lambda c: c["ff2"]["connections"].update(CLK=[OTHER_CLK]), "register on another clock"),
    (lambda c: c["ff1"]["parameters"].update(CLKMUX="INV"), "register on another clock"),
    (lambda c: c["ff0"]["connections"].update(LSR=[RST]), "register reset in use"),
    (lambda c: c["ff0"]["parameters"].update(REGSET="SET"), "register powers up at 1"),
    (lambda c: c["ff0"]["parameters"].update(GSR="ENABLED"), "GSR differs"),
    (lambda c: c["ff2"].update(_ff(12, 22, en=EN)), "registers with different enables"),
    (lambda c: c["ff0"]["parameters"].update(CEMUX="INV"), "register enable inverted"),
    (lambda c: c["ram"]["connections"].update(RSTB=[RST]), "RAM reset in use"),
    (lambda c: c["ram"]["parameters"].update(CLKBMUX="INV"), "clock not used as is"),
    (lambda c: c["ram"]["parameters"].update(REGMODE_B="OUTREG"),
     "has an output register already"),
])
def test_leaves_alone_what_is_not_exactly_a_read_register(change, reason):
    n = _three_flops()
    change(n["modules"]["top"]["cells"])
    _refused(n, reason)


def test_a_read_word_that_is_a_module_output_stays():
    n = _three_flops()
    n["modules"]["top"]["ports"]["out"]["bits"] = [11]
    _refused(n, "read data drive several loads")


def test_command_rewrites_the_file(tmp_path, capsys):
    p = tmp_path / "top.json"
    p.write_text(json.dumps(_three_flops()))
    assert main([str(p)]) == 0
    assert '"ports": 1' in capsys.readouterr().out
    assert json.loads(p.read_text())["modules"]["top"]["cells"].keys() == {"ram"}
    assert main([str(tmp_path / "missing.json")]) == 2
    assert main([]) == 2


@pytest.mark.toolchain
def test_on_yosys_synth_ecp5_output(tmp_path):
    """A RAM read into a register (moved) beside one whose read data go through logic
    (kept), as yosys maps them."""
    from amaranth.back import rtlil
    from amaranth.hdl import Cat, Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from xnorflow.hw.memories import YOSYS_AFTER_READ, _ram, _read
    from xnorflow.synth.tools import run_tool

    class Top(wiring.Component):
        addr: In(9)
        q: Out(16)
        q2: Out(16)

        def elaborate(self, platform):
            m = Module()
            for name, dest, logic in (("m1", self.q, False), ("m2", self.q2, True)):
                mem = _ram(m, name, 16, 512, init=range(7, 519))
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(~self.addr), wr.data.eq(Cat(self.addr, self.addr[:7])),
                             wr.en.eq(self.addr[0])]
                data = _read(m, mem, self.addr, name)  # the RAM's read register
                # m1: one more register; m2: logic, then a register (no reset: a RAM's output
                # register has none here)
                reg = Signal(16, reset_less=True)
                m.d.sync += reg.eq(data + 1 if logic else data)
                m.d.comb += dest.eq(reg)
            return m

    (tmp_path / "top.il").write_text(rtlil.convert(Top(), name="top"))
    (tmp_path / "top.ys").write_text(
        f"read_rtlil top.il\n{YOSYS_AFTER_READ}\nsynth_ecp5 -top top\nwrite_json top.json\n")
    run_tool("YOSYS", ["-q", "top.ys"], cwd=tmp_path)
    counts = rewrite_file(tmp_path / "top.json")
    assert counts["ports"] == 1 and counts["flops"] == 16
    assert sum(counts["kept"].values()) == 1  # m2's port (its read data feed an adder)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    rams = [c for c in cells.values() if c["type"] == "DP16KD"]
    modes = sorted(c["parameters"][f"REGMODE_{p}"] for c in rams for p in "AB")
    assert modes.count("OUTREG") == 1
