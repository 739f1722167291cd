"""The one committed trained checkpoint (benchmarks/results/models/digits-mlp-xnor-in8-s0,
the README's digits goal row, seed 0) still loads, lowers and scores what
benchmarks/accuracy.py recorded for it: a change to the checkpoint format, the lowering or
the golden model that moved a single prediction would show here."""

import json
from pathlib import Path

import numpy as np

from xnorflow.sw import golden
from xnorflow.sw.data import load_dataset
from xnorflow.sw.lower import load_checkpoint, lower_checkpoint
from xnorflow.sw.train import predict

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
NAME = "digits-mlp-xnor-in8-s0"


def test_committed_checkpoint_reproduces_its_recorded_accuracy():
    recorded = next(r for r in json.loads((RESULTS / "accuracy.digits.json").read_text())
                    ["results"] if r["name"] == NAME)
    folder = RESULTS / "models" / NAME
    assert recorded["checkpoint"] == f"benchmarks/results/models/{NAME}"
    data = load_dataset("digits")
    deployed = golden.run(lower_checkpoint(folder), data.x_test).predictions
    assert float((deployed == data.y_test).mean()) == recorded["deploy_acc"]
    net, _ = load_checkpoint(folder)
    floats = predict(net, data.x_test)
    assert float((floats == deployed).mean()) == recorded["float_vs_deploy_agreement"] == 1.0
    assert float((floats == data.y_test).mean()) == recorded["float_acc"]
    assert np.array_equal(floats, deployed)
