"""--device plumbing: auto/cpu/cuda resolution, one-line errors, DDP backend per device,
device-side augmentation and quantisation equal to the NumPy definitions, device-free
checkpoints. The CUDA tests at the end run only where torch sees a GPU."""

import json

import numpy as np
import pytest
import torch

from xnorflow.cli import main
from xnorflow.sw import encoding as enc
from xnorflow.sw.data import load_digits
from xnorflow.sw.errors import UserError
from xnorflow.sw.lower import load_checkpoint, lower
from xnorflow.sw.models import quantize_pixels_torch
from xnorflow.sw.train import (
    check_nproc,
    dist_backend,
    predict,
    random_shift,
    rank_device,
    resolve_device,
    train,
)

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):  # only the resolution logic: nothing touches a GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == "cpu" and resolve_device("CPU") == "cpu"
    with pytest.raises(UserError, match="no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="choose auto, cpu, cuda"):
        resolve_device("tpu")


def test_auto_is_cuda_with_cuda(two_gpus):
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UserError, match="only 2 CUDA"):
        resolve_device("cuda:2")


def test_ddp_backend_and_rank_devices(two_gpus):
    assert dist_backend("cuda") == "nccl" and dist_backend("cuda:0") == "nccl"
    assert dist_backend("cpu") == "gloo"
    assert rank_device("cuda", 1, 2) == torch.device("cuda", 1)
    assert rank_device("cuda", 0, 1) == torch.device("cuda")
    assert rank_device("cpu", 1, 2) == torch.device("cpu")
    check_nproc("cuda", 2)
    check_nproc("cpu", 8)  # gloo: any number of CPU processes
    with pytest.raises(UserError, match="only 2 CUDA device"):
        check_nproc("cuda", 3)
    with pytest.raises(UserError, match="use --device cuda"):
        check_nproc("cuda:1", 2)
    with pytest.raises(UserError, match="must be >= 1"):
        check_nproc("cpu", 0)


def test_cli_cuda_without_gpu_is_one_line_exit_2(no_cuda, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--epochs", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda" in err[0] and "no CUDA device" in err[0]
    assert not out.exists()  # nothing written
    assert main(["train", "--device", "gpu", "-o", str(out)]) == 2
    assert "--device 'gpu'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--bn-momentum", "1.5"), ("--label-smoothing", "-1"),
                                        ("--weight-decay", "-0.1"), ("--kd-temp", "0")])
def test_cli_bad_recipe_flags(tmp_path, capsys, flag, value):
    out = tmp_path / "run"
    assert main(["train", flag, value, "--epochs", "1", "-o", str(out)]) == 2
    assert flag in capsys.readouterr().err and not out.exists()


def _shift_numpy(x, shift, rng):  # the NumPy definition the torch version must equal
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    d = rng.integers(0, 2 * shift + 1, size=(n, 2))
    return np.stack([padded[i, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(d)])


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_random_shift_on_tensors_equals_numpy(shift):
    x = np.random.default_rng(1).integers(0, 256, (7, 6, 5, 2), dtype=np.uint8)
    got = random_shift(torch.from_numpy(x), shift, np.random.default_rng(3))
    want = _shift_numpy(x, shift, np.random.default_rng(3)) if shift else x
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)


def test_quantize_torch_equals_contract():
    px = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    for bits in range(1, 9):
        got = quantize_pixels_torch(torch.from_numpy(px), bits).numpy()
        assert np.array_equal(got, enc.quantize_pixels(px, bits))
    with pytest.raises(TypeError):
        quantize_pixels_torch(torch.zeros(1, dtype=torch.int32), 8)


def _quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_checkpoint_is_device_free_and_loads_anywhere(tmp_path, digits):
    cfg = {"model": "mlp", "dataset": "digits", "mode": "xnor", "widths": [16]}
    m = train(cfg, tmp_path, epochs=1, batch=128, progress=False, log=_quiet, data=digits,
              device="cpu")
    assert m["hparams"]["device"] == "cpu"
    state = torch.load(tmp_path / "checkpoint.pt", map_location="meta", weights_only=True)
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for t in list(raw["state_dict"].values()) + [
            v for s in raw["optimizer"]["state"].values() for v in s.values()]:
        assert t.device.type == "cpu"
    assert state["epoch"] == 1
    model, _ = load_checkpoint(tmp_path)
    assert model.device.type == "cpu"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_training_matches_cpu_and_deploy_is_exact(tmp_path, digits):
    """On a GPU: the same run on cuda and cpu agrees up to float rounding, the GPU model's
    eval forward is bit-identical on both devices, and deploy == float-sim on every image."""
    cfg = {"model": "cnn", "dataset": "digits", "mode": "xnor", "widths": {
        "conv": ["8", "8p", "16s2"], "dense": [16]}}
    res = {}
    for dev in ("cpu", "cuda"):
        res[dev] = train(cfg, tmp_path / dev, epochs=2, batch=64, lr=1e-2, progress=False,
                         log=_quiet, data=digits, device=dev)
    a, b = res["cpu"]["history"], res["cuda"]["history"]
    assert abs(a[0]["loss"] - b[0]["loss"]) < 0.05
    assert abs(a[-1]["test_acc"] - b[-1]["test_acc"]) < 0.05
    assert res["cuda"]["final"]["agreement"] == 1.0
    model, _ = load_checkpoint(tmp_path / "cuda")  # a GPU-trained checkpoint on the CPU
    cpu_logits = model.eval()(digits.x_test).detach()
    gpu_logits = model.to("cuda")(torch.from_numpy(digits.x_test).cuda()).detach().cpu()
    assert torch.equal(cpu_logits, gpu_logits)
    model.to("cpu")
    from xnorflow.sw import deploy

    cm = lower(model)
    d_cpu = deploy.run(cm, digits.x_test, hidden=True)
    d_gpu = deploy.run(cm, digits.x_test, hidden=True, device="cuda")
    assert np.array_equal(d_cpu.predictions, predict(model, digits.x_test))
    assert np.array_equal(d_cpu.scores, d_gpu.scores)
    for a, b in zip(d_cpu.activations, d_gpu.activations, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_nccl_two_gpus(tmp_path):
    out = tmp_path / "ddp"
    assert main(["train", "--model", "mlp", "--dataset", "digits", "--widths", "64,64",
                 "--epochs", "1", "--nproc", "2", "--device", "cuda", "--quiet", "-o",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["hparams"]["device"] == "cuda" and metrics["final"]["agreement"] == 1.0

