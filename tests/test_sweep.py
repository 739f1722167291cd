"""``xnorflow sweep``: Pareto marking, outputs, and a real two-build sweep in two processes."""

import csv

import pytest

from xnorflow.cli import main
from xnorflow.synth.sweep import mark_pareto, write_outputs


def test_pareto_and_outputs(tmp_path):
    rows = [
        {"board": "a", "geometry": "1x1x16", "lut4": 100, "gops": 1.0, "fmax_mhz": 50.0},
        {"board": "a", "geometry": "2x2x16", "lut4": 300, "gops": 4.0, "fmax_mhz": 50.0},
        {"board": "a", "geometry": "2x1x16", "lut4": 350, "gops": 2.0, "fmax_mhz": 50.0},
        {"board": "b", "geometry": "2x1x16", "lut4": 350, "gops": 2.0, "fmax_mhz": 50.0},
        {"board": "a", "geometry": "9x9x64", "error": "does not fit"},
    ]
    mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, True, False, True, False]
    write_outputs(rows, tmp_path)
    with open(tmp_path / "sweep.csv") as f:
        got = list(csv.DictReader(f))
    assert [r["geometry"] for r in got] == [r["geometry"] for r in rows]
    assert got[4]["error"] == "does not fit"
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "| a | 2x2x16 |" in (tmp_path / "sweep.md").read_text()


@pytest.mark.toolchain
def test_sweep_cli_two_builds(tmp_path, capsys):
    rc = main(["sweep", "--boards", "icebreaker", "--geometries", "1x1x16,1x2x16",
               "--design", "array", "-j", "2", "-o", str(tmp_path), "-q"])
    assert rc == 0
    with open(tmp_path / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["geometry"] for r in rows] == ["1x1x16", "1x2x16"]
    for r in rows:
        assert r["error"] == "" and int(r["lut4"]) > 0 and float(r["fmax_mhz"]) > 10
    # twice the PEs: more LUTs and twice the ops per cycle
    assert int(rows[1]["lut4"]) > int(rows[0]["lut4"])
    assert (tmp_path / "icebreaker" / "1x2x16" / "top.bin").is_file()
    assert (tmp_path / "sweep.png").stat().st_size > 1000
