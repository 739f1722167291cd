"""benchmarks/accuracy.py's headline part: every row compiles for its target (refused before
any training otherwise), and a smoke run trains, evaluates and records where it trained."""

import importlib.util
import json
from pathlib import Path

import pytest

from xnorflow.sw.data import FASHION_MNIST_PATH

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench",
                                                  ROOT / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_headline_rows_fit_their_target(bench):
    import numpy as np

    from xnorflow.sw.data import Dataset

    img, lab = np.zeros((1, 28, 28, 1), np.uint8), np.zeros(1, np.int64)
    fmnist_shape = Dataset("fashion-mnist", img, lab, img, lab, [str(i) for i in range(10)])
    rows = bench.jobs("headline", [0])
    assert len(rows) == 1 + len(bench.HEADLINE_CNNS)
    for job in rows:
        assert job["target"] == "ecp5-85f"
        bench.check_job_fits(job, fmnist_shape)
    too_big = {**rows[1], "cfg": {**rows[1]["cfg"], "widths": {"conv": [64, 128],
                                                               "dense": [512]}}}
    from xnorflow.sw.errors import UserError

    with pytest.raises(UserError, match="weights"):
        bench.check_job_fits(too_big, fmnist_shape)


@pytest.mark.skipif(not FASHION_MNIST_PATH.is_dir(), reason="needs dataset-fashion-mnist")
def test_headline_smoke_run_records_where_it_trained(bench, tmp_path):
    rc = bench.main(["--part", "headline", "--quick", "--limit", "128", "--only", "mlp",
                     "--golden-limit", "20", "--out", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "accuracy.headline.mlp.json").read_text())
    (r,) = doc["results"]
    assert r["trained_on"]["device"] == "cpu" and r["trained_on"]["epochs"] == 1
    assert r["compiles_for"] == "ecp5-85f" and not r.get("EXACTNESS_FAILURE")
    assert doc["meta"]["teacher"]["epochs"] == 1 and r["hparams"]["kd_alpha"] == 0.7
    md = (tmp_path / "accuracy.headline.mlp.md").read_text()
    assert "Smoke test" in md and "CPU (" in md
