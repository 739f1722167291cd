"""The synthesis flow: PLL settings, log parsing, and one real iCE40 build with its report."""

import json
import os
import stat

import pytest

from xnorflow.cli import main
from xnorflow.hw.boards import ecp5_pll, ice40_pll
from xnorflow.sw import files
from xnorflow.sw.boards import BOARDS
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import parse_geometry
from xnorflow.synth import SynthConfig, synthesize, tool_env
from xnorflow.synth.report import parse_nextpnr_log, parse_yosys_stat

# The default run's real build is the systolic array behind the UART bridge (~10 s): the
# whole accelerator takes yosys about two minutes even at 1x1x16 and needs ~5900 LCs, more
# than the UP5K has, so its build (HX8K) and the BRAM swap are slow tests.
DESIGN = "array"


@pytest.mark.parametrize(
    "f_out,expect",
    # values printed by `yowasp-icepll -i 12 -o F`
    [(48e6, (0, 63, 4, 1, 48e6)), (120e6, (0, 79, 3, 1, 120e6)), (30e6, (0, 79, 5, 1, 30e6)),
     (24e6, (0, 63, 5, 1, 24e6)), (72e6, (0, 47, 3, 1, 72e6)), (36e6, (0, 47, 4, 1, 36e6)),
     (90e6, (0, 59, 3, 1, 90e6))],
)
def test_ice40_pll_matches_icepll(f_out, expect):
    p = ice40_pll(12e6, f_out)
    got = (p.params["DIVR"], p.params["DIVF"], p.params["DIVQ"], p.params["FILTER_RANGE"],
           p.freq)
    assert got == expect


@pytest.mark.parametrize(
    "f_out,expect",
    # values printed by `yowasp-ecppll -i 25 -o F` (CLKI_DIV, CLKFB_DIV, CLKOP_DIV, MHz)
    [(150e6, (1, 6, 4, 150.0)), (100e6, (1, 4, 6, 100.0)), (48e6, (8, 15, 13, 46.875)),
     (60e6, (5, 12, 10, 60.0))],
)
def test_ecp5_pll_matches_ecppll(f_out, expect):
    p = ecp5_pll(25e6, f_out)
    got = (p.params["CLKI_DIV"], p.params["CLKFB_DIV"], p.params["CLKOP_DIV"], p.freq / 1e6)
    assert got == expect
    assert 400e6 <= p.vco <= 800e6


def test_pll_out_of_range():
    with pytest.raises(ValueError, match="cannot make"):
        ice40_pll(12e6, 500e6)


def test_parse_geometry():
    assert parse_geometry("4x8x32") == (4, 8, 32)
    for bad in ("4x4", "0x1x16", "axbxc"):
        with pytest.raises(UserError, match="ROWSxCOLSxWIDTH"):
            parse_geometry(bad)


NEXTPNR_LOG = """\
Info: Max frequency for clock 'clk': 40.00 MHz (PASS at 12.00 MHz)
Info: Device utilisation:
Info: 	         ICESTORM_LC:   130/ 5280     2%
Info: 	        ICESTORM_RAM:     3/   30    10%
Info: 	              SB_IO:     4/   39    10%
Info: Max frequency for clock 'clk': 59.23 MHz (PASS at 48.00 MHz)
Info: Max frequency for clock 'other': 20.50 MHz (FAIL at 25.00 MHz)
"""

YOSYS_LOG = """\
3. Printing statistics.

=== top ===
      231 cells
       14   $scopeinfo
       32   SB_CARRY
        2   SB_DFF
       71   SB_DFFESR
      103   SB_LUT4
"""


def test_parse_logs():
    r = parse_nextpnr_log(NEXTPNR_LOG)
    assert r["utilisation"]["ICESTORM_LC"] == {"used": 130, "available": 5280, "percent": 2}
    assert r["utilisation"]["ICESTORM_RAM"]["used"] == 3
    assert r["fmax"]["clk"] == {"fmax_mhz": 59.23, "constraint_mhz": 48.0, "pass": True}
    assert r["fmax"]["other"]["pass"] is False
    assert r["total_lut4"] is None  # an iCE40 log has no ECP5 LUT total
    ecp5 = parse_nextpnr_log("Info: Logic utilisation before packing:\n"
                             "Info:     Total LUT4s:     17514/83640    20%\n"
                             "Info:         logic LUTs:  13714/83640    16%\n")
    assert ecp5["total_lut4"] == 17514
    cells = parse_yosys_stat(YOSYS_LOG)
    assert cells == {"SB_CARRY": 32, "SB_DFF": 2, "SB_DFFESR": 71, "SB_LUT4": 103}


def test_cli_bad_geometry(capsys):
    assert main(["synth", "--board", "icebreaker", "--geometry", "4x4", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ROWSxCOLSxWIDTH" in err[0]


def test_tool_env_finds_yowasp():
    env = tool_env()
    for var in ("YOSYS", "NEXTPNR_ICE40", "ICEPACK", "NEXTPNR_ECP5", "ECPPACK", "ICEBRAM"):
        assert var in env and os.path.exists(env[var]) or env[var] == "true", var


#: small memories so the default run's build is quick (all in EBR, placeholders swappable)
SMALL = {"program": 256, "weights": 256, "thresholds": 256, "activations": 256, "scores": 32}
#: ecpbram swaps whole 512-word blocks
SMALL_ECP5 = {**SMALL, "program": 512, "weights": 512, "thresholds": 512}


def _build(tmp_path_factory, board: str, design: str):
    tmp = tmp_path_factory.mktemp(f"synth-{board}-{design}")
    out = tmp / "bits"
    cfg = SynthConfig(board=board, geometry="1x1x16", design=design, seed=7,
                      out_dir=str(out), build_dir=str(tmp / "build"),
                      depths=({} if design != "accelerator" else
                              SMALL_ECP5 if board == "ulx3s-85f" else SMALL))
    return tmp, out, synthesize(cfg, progress=False)


@pytest.fixture(scope="module")
def ice40_build(tmp_path_factory):
    """One real bitstream (the default run's synthesis): yosys + nextpnr + icepack."""
    return _build(tmp_path_factory, "icebreaker", DESIGN)


@pytest.fixture(scope="module", params=["hx8k-evn", "ulx3s-85f"])
def accel_build(request, tmp_path_factory):
    """The whole accelerator, 1x1x16 with small memories, on the HX8K (icebram) and the
    ULX3S (ecpbram) (slow: minutes each)."""
    return _build(tmp_path_factory, request.param, "accelerator")


@pytest.mark.toolchain
def test_real_ice40_build(ice40_build):
    tmp_path, out, report = ice40_build
    names = sorted(p.name for p in out.iterdir())
    for name in ("top.bin", "yosys.log", "nextpnr.log", "report.json", "report.md"):
        assert name in names
    # published with the permissions of an ordinary mkdir (the umask), not tempfile's 0700
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~files.umask()
    # an iCE40 UP5K bitstream is ~104 KB (fixed size: CRAM + BRAM of the whole chip)
    assert 100_000 < (out / "top.bin").stat().st_size < 110_000
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["seed"] == 7 and on_disk["board"] == "icebreaker"
    assert "--seed 7" in (tmp_path / "build" / "build_top.sh").read_text()
    res = on_disk["resources"]
    assert 50 < res["lut4"] < 5280 and 30 < res["ff"] < 5280
    assert res["logic_cells"]["available"] == 5280
    assert res["logic_cells"]["used"] >= res["lut4"] * 0.5
    # the board's default clock, from the PLL (which makes it exactly on the iCEBreaker)
    board = BOARDS["icebreaker"]
    assert on_disk["clock"]["system_mhz"] == board.default_freq / 1e6
    # the board's default baud rate: that clock / divisor
    assert on_disk["uart"]["baud"] == board.default_baud
    assert on_disk["uart"]["divisor"] == round(board.default_freq / board.default_baud)
    assert on_disk["device"] == "iCE40UP5K"
    fmax = on_disk["fmax_mhz"]
    assert fmax is not None and 10 < fmax < 400
    assert on_disk["timing_met"] == (fmax >= board.default_freq / 1e6)
    assert report["fmax"][report["clock"]["name"]]["fmax_mhz"] == fmax
    md = (out / "report.md").read_text()
    assert f"{fmax:.2f}" in md and "LUT4" in md and "seed 7" in md
    assert on_disk["design"].startswith("systolic array")
    assert report["peak_gops"] == pytest.approx(2 * 16 * fmax * 1e6 / 1e9)


@pytest.mark.slow
@pytest.mark.toolchain
def test_accelerator_build(accel_build):
    _, out, report = accel_build
    assert report["design"].startswith("accelerator")
    depths = SMALL_ECP5 if report["board"] == "ulx3s-85f" else SMALL
    assert report["memories"]["weights"] == {"width": 16, "depth": depths["weights"]}
    # the model memories are in block RAM (small ones may go to LUT RAM on the ECP5)
    assert report["resources"]["bram"]["used"] >= 3
    assert report["resources"]["logic_cells"]["available"] in (7680, 83640)
    for name in ("program", "weights", "thresholds"):
        lines = (out / "placeholder" / f"{name}.hex").read_text().split()
        assert len(lines) == depths[name] and len(set(lines)) > depths[name] // 2


@pytest.mark.slow
@pytest.mark.toolchain
def test_swap_model_into_bitstream(accel_build, tmp_path):
    """icebram puts a compiled model into the bitstream without synthesis; swap_model checks
    that every model image is then found in the BRAMs (by swapping back). The accelerator
    initialised with exactly those images (the padded hex) classifies as golden does."""
    import numpy as np
    from amaranth.sim import Simulator

    from xnorflow.hw.accelerator import Accelerator
    from xnorflow.hw.link import AcceleratorDriver, AmaranthStreamTransport
    from xnorflow.sw import golden, synthetic
    from xnorflow.sw.images import MemoryImage
    from xnorflow.sw.program import decode_program
    from xnorflow.synth.swap import report_target, swap_model

    _, out, report = accel_build
    target = report_target(BOARDS[report["board"]], report)
    model = synthetic.random_network(3, in_shape=(4, 4, 1), in_bits=2, classes=4,
                                     max_out_c=4, layers=2)
    folder = tmp_path / "model"
    synthetic.write_folder(model, synthetic.geometry_target(1, 1, 16), folder)
    new = swap_model(out, folder, progress=False)
    ext = ".bin" if report["family"] == "ice40" else ".bit"
    assert new.name == f"top-model{ext}"
    old_bin, new_bin = (out / f"top{ext}").read_bytes(), new.read_bytes()
    assert old_bin != new_bin
    if report["family"] == "ice40":  # fixed-size image (ECP5 .bit files are compressed)
        assert len(old_bin) == len(new_bin)
    info = json.loads((out / "top-model.swap.json").read_text())
    assert info["swapped"] == ["program", "thresholds", "weights"]
    check = info["check"]
    assert check["ram_bits_changed"] == check.get("expected", check.get("image_bits_differing"))
    assert check["ram_bits_changed"] > 100

    # the images that are now in the bitstream, read back from the hex swap_model wrote
    from xnorflow.synth.swap import model_hex_images

    hexes = model_hex_images(model, target, out / "placeholder")
    images = [MemoryImage(n, target.word_bits(n),
                          np.array([int(w, 16) for w in t.split()], dtype=np.uint64), "swap")
              for n, t in hexes.items()]
    px = synthetic.random_pixels(5, model, 2)
    ref = golden.run(model, px, width=16)
    dut = Accelerator(target, memories=images)
    got = []

    async def host(ctx):
        drv = AcceleratorDriver(AmaranthStreamTransport(ctx, dut, timeout=200_000))
        await drv.connect()
        prog = next(m for m in images if m.name == "program")
        drv.header, _ = decode_program(prog.words)
        for i in range(len(px)):
            got.append(await drv.classify(px[i]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.run()
    for i, (cls, scores) in enumerate(got):
        assert scores == [int(s) for s in ref.scores[i]] and cls == int(ref.predictions[i])


def test_report_with_model(tmp_path):
    """make_report/report_markdown with a model: images/s at Fmax next to the UART bound."""
    from types import SimpleNamespace

    from xnorflow.sw import synthetic
    from xnorflow.synth.report import make_report, report_markdown

    (tmp_path / "top.rpt").write_text("Yosys 0.70 (git)\n" + YOSYS_LOG)
    (tmp_path / "top.tim").write_text(NEXTPNR_LOG)
    spec = BOARDS["icebreaker"]
    top = SimpleNamespace(freq=48e6, pll=SimpleNamespace(params={"DIVF": 63}), baud=1_000_000,
                          divisor=48, timeout=2_400_000)
    model = synthetic.random_network(2, in_shape=(8, 8, 1), in_bits=4, classes=10,
                                     max_out_c=8, layers=2)
    target = synthetic.geometry_target(2, 2, 16)
    cfg = SynthConfig(board="icebreaker", geometry="2x2x16", model="runs/x")
    r = make_report(cfg, spec, top, tmp_path, 1.0, target, model,
                    {"design": "accelerator + UART bridge", "target": target.name})
    assert r["fmax_mhz"] == 59.23 and r["timing_met"] is True
    assert r["resources"]["lut4"] == 103 and r["resources"]["ff"] == 73
    assert r["peak_gops"] == pytest.approx(2 * 64 * 59.23e6 / 1e9)
    mm = r["model"]
    assert mm["images_per_s_compute"] == pytest.approx(59.23e6 / mm["cycles_per_image"])
    # the link at the top's baud and system clock (not Fmax), max_batch images per run
    assert mm["link"]["baud"] == 1_000_000 and mm["link"]["clock_mhz"] == 48.0
    assert mm["images_per_s_link"] == pytest.approx(mm["link"]["images_per_s"])
    md = report_markdown(r)
    assert "UART at 1,000,000 baud, system clock 48.00 MHz" in md
    assert f"{mm['link']['bytes_per_image']:.1f} bytes/image" in md


def test_failure_message_says_what_did_not_fit(tmp_path):
    from types import SimpleNamespace

    from xnorflow.synth.report import failure_message

    (tmp_path / "top.tim").write_text(
        "Info: Device utilisation:\n"
        "Info: \t         ICESTORM_LC: 12708/ 5280   240%\n"
        "Info: \t        ICESTORM_RAM:    22/   30    73%\n"
        "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type "
        "'ICESTORM_LC'\n")
    msg = failure_message(tmp_path, SimpleNamespace(name="icebreaker"))
    assert msg.startswith("nextpnr failed for icebreaker: ERROR: Unable to place cell")
    assert "the design needs ICESTORM_LC 12708/5280 (240 %)" in msg
    assert "ICESTORM_RAM" not in msg  # only what was over capacity


@pytest.mark.toolchain
def test_missed_timing_exits_1_and_keeps_the_old_build(tmp_path, capsys):
    """`xnorflow synth` at a clock the design cannot meet: exit 1, one line saying so, and
    the output folder keeps what it held; --allow-timing-fail writes the bitstream."""
    out = tmp_path / "bits"
    out.mkdir()
    (out / "top.bin").write_bytes(b"old")
    old_report = json.dumps({"report_version": 1, "board": "icebreaker", "resources": {}})
    (out / "report.json").write_text(old_report)
    argv = ["synth", "--board", "icebreaker", "--geometry", "2x2x16", "--design", "array",
            "--freq", "200", "--out", str(out), "--seed", "1", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "timing NOT met" in err and "no bitstream written" in err
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "top.bin"]
    assert (out / "top.bin").read_bytes() == b"old"
    assert (out / "report.json").read_text() == old_report
    assert main(argv + ["--allow-timing-fail"]) == 1
    assert "written anyway" in capsys.readouterr().err
    assert (out / "top.bin").stat().st_size > 100_000
    assert json.loads((out / "report.json").read_text())["timing_met"] is False


def test_a_committed_build_without_its_bitstream_may_be_replaced(tmp_path):
    """The ECP5-85F's bitstream is not committed (over 1 MB): its folder (a synthesis report,
    logs) is still a build folder; a folder with another report.json is not."""
    from xnorflow.synth.build import is_bitstream_folder

    (tmp_path / "report.json").write_text(json.dumps(
        {"report_version": 1, "board": "ulx3s-85f", "resources": {"lut4": 1}}))
    (tmp_path / "nextpnr.log").write_text("log")
    assert is_bitstream_folder(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"accuracy": 0.9}))
    assert not is_bitstream_folder(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    assert not is_bitstream_folder(tmp_path)


@pytest.mark.toolchain
def test_bram_outreg_runs_between_yosys_and_nextpnr(tmp_path):
    """`--bram-outreg` (the ECP5's default) puts the output-register pass into the build
    script right after yosys and reports its counts; `--no-bram-outreg` leaves the script
    and report without it (the pass itself: tests/test_outreg.py)."""
    for flag in (None, True, False):
        build = tmp_path / f"build-{flag}"
        cfg = SynthConfig(board="ulx3s-85f", design="loopback", out_dir=str(tmp_path / "o"),
                          build_dir=str(build), bram_outreg=flag)
        report = synthesize(cfg, progress=False)
        script = (build / "build_top.sh").read_text().splitlines()
        at = [i for i, line in enumerate(script) if "xnorflow.synth.outreg" in line]
        if flag is not False:
            yosys = next(i for i, line in enumerate(script) if line.startswith('"$YOSYS"'))
            assert at == [yosys + 1]
            assert report["resources"]["bram_outregs"] == {
                "ports": 0, "flops": 0, "ports_total": 0, "kept": {}}  # no RAM in a loopback
        else:
            assert at == [] and report["resources"]["bram_outregs"] is None
