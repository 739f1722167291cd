"""`xnorflow demo`, shrunk: one epoch, software backends plus the Amaranth simulator on one
image, no synthesis (the synthesis flow and the RTL backends have their own tests)."""

import json

import pytest

from xnorflow.cli import main


def test_demo_writes_a_report_with_every_backend_agreeing(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "-o", str(out), "--epochs", "1", "--limit", "40", "--hw-limit", "1",
               "--backends", "torch,golden,cpu,amaranth", "--no-synth"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "every backend bit-exact" in text
    for name in ("report.md", "report.html", "report.json", "training_curve.png",
                 "accuracy.png", "model/manifest.json", "checkpoint/metrics.json"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "report.json").read_text())
    assert doc["exact"] is True
    sw = doc["compare"]["software"]
    assert sw["samples"] == 40 and set(sw["backends"]) == {"torch", "golden", "cpu"}
    hw = doc["compare"]["hardware"]
    assert hw["agreement"]["amaranth"]["exact"] and hw["agreement"]["amaranth"]["bits_compared"]
    assert hw["performance"]["amaranth"]["cycles_per_image"] > 0
    md = (out / "report.md").read_text()
    assert "| hardware | amaranth | 1 |" in md and "skipped (--no-synth)" in md
    # what a user sees: computed at the board's clock (no synthesis, so no Fmax) from the
    # simulated cycles, and over the host link at the board's default baud
    from xnorflow.sw.boards import BOARDS

    t = doc["throughput"]
    board = BOARDS[t["link"]["board"]]
    cyc = hw["performance"]["amaranth"]["cycles_per_image"]
    assert t["images_per_s_at_clock"] == pytest.approx(board.default_freq / cyc)
    assert t["link"]["baud"] == board.default_baud and t["link"]["source"] == "board defaults"
    assert "## Throughput a user sees" in md
    assert f"computed at {board.default_freq / 1e6:g} MHz (the board's default clock" in md
    assert f"**{t['link']['images_per_s']:,.0f} images/s** one image per run" in md
    assert "throughput: over the host link" in text


def test_demo_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--dataset", "imagenet"])
    assert e.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err
    rc = main(["demo", "--dataset", "fashion-mnist", "--model", "mlp", "--data-path",
               str(tmp_path / "nowhere"), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nowhere" in err[0]
    assert not (tmp_path / "x").exists()


def test_preset_with_a_committed_model(tmp_path, monkeypatch):
    """A preset naming a trained model uses it (evaluated as train would); a missing one, or
    --epochs, falls back to training with the preset's hyper-parameters."""
    from xnorflow import demo
    from xnorflow.sw.data import load_digits
    from xnorflow.sw.train import train

    d = load_digits()
    src = tmp_path / "models" / "m"
    train({"model": "mlp", "dataset": "digits", "widths": [16]}, src, epochs=1, data=d,
          progress=False, log=lambda *a, **k: None)
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    p = {"widths": None, "epochs": 3, "checkpoint": "models/m"}
    logs = []
    assert demo._trained_preset(p, "digits", "mlp", None, logs.append)["checkpoint"] == str(src)
    assert demo._trained_preset(p, "digits", "mlp", 2, logs.append)["retrain"] is True
    missing = demo._trained_preset({**p, "checkpoint": "models/none"}, "digits", "mlp", None,
                                   logs.append)
    assert missing["retrain"] is True and "not found" in logs[-1]
    m = demo.use_trained(src, tmp_path / "copy", d)
    assert m["final"]["agreement"] == 1.0 and m["source"] == str(src) and m["epochs"] == 1
    assert (tmp_path / "copy" / "metrics.json").is_file()


def test_committed_preset_models_compile_for_their_targets():
    from xnorflow.demo import PRESETS, ROOT, _preset
    from xnorflow.sw.lower import lower_checkpoint
    from xnorflow.sw.program import check_fits
    from xnorflow.sw.targets import get_target

    named = [_preset(*key) for key, p in PRESETS.items() if p.get("checkpoint")]
    assert named  # the Fashion-MNIST MLP preset uses the committed headline model
    for p in named:
        check_fits(lower_checkpoint(ROOT / p["checkpoint"]), get_target(p["target"]))
