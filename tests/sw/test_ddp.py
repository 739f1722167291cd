"""--nproc 2: DistributedDataParallel on CPU (gloo) for one digits epoch."""

import json

import numpy as np

from xnorflow.cli import main
from xnorflow.sw import deploy
from xnorflow.sw.data import load_digits
from xnorflow.sw.lower import load_checkpoint, lower_checkpoint
from xnorflow.sw.train import predict


def test_ddp_two_processes_one_epoch(tmp_path):
    out = tmp_path / "ddp"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--widths", "64,64",
                 "--epochs", "1", "--nproc", "2", "--device", "cpu", "--quiet", "-o",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hparams"]["nproc"] == 2 and len(metrics["history"]) == 1
    d = load_digits()
    model, state = load_checkpoint(out)
    assert state["epoch"] == 1
    fpred = predict(model, d.x_test)
    dpred = deploy.run(lower_checkpoint(out), d.x_test).predictions
    assert np.array_equal(fpred, dpred)
    assert (dpred == d.y_test).mean() > 0.5
    assert metrics["final"]["deploy_acc"] == (dpred == d.y_test).mean()
