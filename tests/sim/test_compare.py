"""``xnorflow compare``: report folder, mismatch localisation, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xnorflow.cli import main
from xnorflow.sim import backends
from xnorflow.sim.compare import compare, find_synthesis_report, write_report
from xnorflow.sw import synthetic

from .conftest import make_folder


def test_compare_report_exact(tmp_path):
    folder, model = make_folder(tmp_path, 31)
    px = synthetic.random_pixels(31, model, 8)
    labels = np.arange(8) % len(model.classes)
    r = compare(folder, px, ["golden", "cpu"], labels, progress=False)
    assert r.exact and r.agreements["cpu"].samples_agree == 8
    out = write_report(r, tmp_path / "rep")
    doc = json.loads((out / "report.json").read_text())
    assert doc["exact"] is True and doc["samples"] == 8
    assert doc["accuracy"]["golden"] == doc["accuracy"]["cpu"]
    assert (out / "report.png").stat().st_size > 1000
    assert "all backends bit-exact" in (out / "report.md").read_text()


def _corrupting(real, sample, layer, pos):
    def run(mf, px, **kw):
        out = real(mf, px, **kw)
        out.activations[layer][(sample, *pos)] ^= 1
        return out

    return run


def test_compare_names_first_mismatch(tmp_path, monkeypatch):
    folder, model = make_folder(tmp_path, 32, layers=3)
    px = synthetic.random_pixels(32, model, 6)
    pos = (0, 0, 1 % model.layers[1].out_c)
    monkeypatch.setitem(backends._RUNNERS, "cpu", _corrupting(backends._cpu, 4, 1, pos))
    r = compare(folder, px, ["golden", "cpu"], progress=False)
    a = r.agreements["cpu"]
    assert not r.exact and a.samples_agree == 5 and a.bits_differ == 1
    assert (a.first.sample, a.first.layer, a.first.position) == (4, model.layers[1].name, pos)


def test_compare_cli_mismatch_exit_code(tmp_path, monkeypatch, capsys, digits_folder):
    folder, model = digits_folder
    monkeypatch.setitem(backends._RUNNERS, "cpu", _corrupting(backends._cpu, 2, 0, (0, 0, 0)))
    rc = main(["compare", "--model", str(folder), "--backends", "golden,cpu", "--limit", "5",
               "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MISMATCH" in out and "sample 2" in out and "position (0,0,0)" in out
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["agreement"]["cpu"]["first_mismatch"]["sample"] == 2


def test_compare_cli_ok(tmp_path, capsys, digits_folder):
    folder, model = digits_folder
    rc = main(["compare", "--model", str(folder), "--backends", "golden,cpu", "--limit", "20",
               "-o", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "20/20 samples bit-exact" in out
    assert (tmp_path / "r" / "report.md").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["--model", "{missing}", "--backends", "golden"], "no such model folder"),
    (["--model", "{folder}", "--backends", "golden,bogus"], "unknown backend 'bogus'"),
    (["--model", "{folder}", "--backends", "golden", "--dataset", "nope"], "unknown data set"),
])
def test_compare_cli_errors_one_line(tmp_path, capsys, digits_folder, argv, msg):
    folder, _ = digits_folder
    argv = [a.format(folder=folder, missing=tmp_path / "missing") for a in argv]
    rc = main(["compare", *argv, "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_compare_cli_other_target(tmp_path, capsys):
    """A folder whose target was redefined since it was compiled is refused in one line."""
    model = synthetic.random_network(4, in_shape=(8, 8, 1), in_bits=2, classes=10)
    folder = tmp_path / "m"
    from xnorflow.sw.targets import sim_target

    synthetic.write_folder(model, sim_target(2, 2, 16, name="sim"), folder)  # "sim" is 4x4x32
    rc = main(["compare", "--model", str(folder), "--backends", "golden", "-o",
               str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "recompile" in err and len(err.strip().splitlines()) == 1


def test_run_cli(capsys, digits_folder):
    folder, _ = digits_folder
    assert main(["run", "--model", str(folder), "--backend", "golden", "--limit", "30"]) == 0
    assert "30 images, accuracy" in capsys.readouterr().out


def test_find_synthesis_report(tmp_path):
    """Fmax comes from the report of the target's own board and geometry, of this version."""
    from xnorflow.sw.targets import TARGETS, with_geometry

    root = tmp_path / "bitstreams"
    up5k = with_geometry(TARGETS["up5k"], 4, 4, 16)
    assert find_synthesis_report(up5k, root) is None
    p = root / "icebreaker" / "4x4x16" / "report.json"
    p.parent.mkdir(parents=True)
    good = {"report_version": 1, "board": "icebreaker", "design": "accelerator + UART bridge",
            "fmax_mhz": 48.1}
    p.write_text(json.dumps(good))
    assert find_synthesis_report(up5k, root) == {"path": str(p), "board": "icebreaker",
                                                 "fmax_mhz": 48.1}
    # another board's build of the same geometry is not this target's
    assert find_synthesis_report(with_geometry(TARGETS["hx8k"], 4, 4, 16), root) is None
    assert find_synthesis_report(TARGETS["sim"], root) is None  # no board
    # a stand-in design's report (the bare array behind the UART) never gives images/s
    p.write_text(json.dumps({**good, "design": "systolic array + UART bridge"}))
    assert find_synthesis_report(up5k, root) is None
    # nor a report of another version, or one without the version
    p.write_text(json.dumps({**good, "report_version": 2}))
    assert find_synthesis_report(up5k, root) is None
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "report_version"}))
    assert find_synthesis_report(up5k, root) is None


def test_compare_waves_and_hardware_columns(tmp_path, capsys):
    """golden vs amaranth on one digits image with --waves: VCD in the report, cycles shown."""
    folder, _ = make_folder(tmp_path, 8, geometry=(2, 2, 16), layers=2, in_shape=(8, 8, 1),
                            in_bits=1, classes=10, max_out_c=8)
    out = tmp_path / "r"
    rc = main(["compare", "--model", str(folder), "--backends", "golden,amaranth",
               "--limit", "1", "--waves", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "cycles/image" in text and "utilisation" in text
    vcd = out / "amaranth.vcd"
    assert vcd.is_file() and b"$enddefinitions" in vcd.read_bytes()[:200000]
    doc = json.loads((out / "report.json").read_text())
    assert doc["performance"]["amaranth"]["cycles_per_image"] > 0
    assert doc["waves"]["amaranth"] == str(vcd)


@pytest.mark.parametrize("built", [False, True])
def test_compare_reports_what_a_user_sees(tmp_path, monkeypatch, built):
    """A model for a board's target (up5k): images/s computed at the Fmax of the build's
    report (else at the board's default clock, said so) from the simulated cycles, and over
    the host link from the link model at the build's baud and clock (else the board's)."""
    from xnorflow.hw.link import throughput as tp
    from xnorflow.sw.boards import BOARDS
    from xnorflow.sw.perf import program_cycles
    from xnorflow.sw.program import decode_program
    from xnorflow.sw.targets import TARGETS

    monkeypatch.chdir(tmp_path)
    target = TARGETS["up5k"]
    model = synthetic.random_mlp(sizes=(64, 16, 10), in_shape=(8, 8, 1), in_bits=1, seed=3)
    folder = tmp_path / "m"
    synthetic.write_folder(model, target, folder)
    board = BOARDS["icebreaker"]
    baud, clock = board.default_baud, board.default_freq
    if built:
        baud, clock = 1_000_000, 30e6
        p = tmp_path / "bitstreams" / "icebreaker" / target.geometry / "report.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"report_version": 1, "board": "icebreaker",
                                 "design": "accelerator + UART bridge", "fmax_mhz": 31.5,
                                 "clock": {"system_mhz": 30.0}, "uart": {"baud": baud}}))
    px = synthetic.random_pixels(2, model, 1)
    r = compare(folder, px, ["golden", "amaranth"], progress=False)
    assert r.exact
    p = r.perf["amaranth"]
    cyc = p["cycles_per_image"]
    if built:
        assert p["images_per_s_at_fmax"] == pytest.approx(31.5e6 / cyc)
        assert "images_per_s_at_clock" not in p
    else:
        assert p["clock_mhz"] == clock / 1e6
        assert p["images_per_s_at_clock"] == pytest.approx(clock / cyc)
    mems = backends.load_model(folder).memories
    header, _ = decode_program(mems[0].words)
    sizes = tp.image_bytes(header, target)
    one = tp.link_rate(baud, clock, 1, *sizes, round(cyc))
    n = header["max_batch"]
    many = tp.link_rate(baud, clock, n, *sizes, program_cycles(mems, target, batch=n))
    ln = p["link"]
    assert (ln["baud"], ln["clock_mhz"]) == (baud, clock / 1e6)
    assert p["images_per_s_link"] == pytest.approx(one.images_per_s)
    assert ln["images_per_s_max_batch"] == pytest.approx(many.images_per_s)
    md = (write_report(r, tmp_path / "rep") / "report.md").read_text()
    assert f"{one.images_per_s:.1f} |" in md
    assert f"UART at {baud:,} baud" in md and f"{many.images_per_s:,.1f} images/s" in md
    assert ("(Fmax 31.50 MHz)" if built else f"(at {clock / 1e6:g} MHz, the board's clock") in md
