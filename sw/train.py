"""Training loop: Adam + cosine schedule, atomic checkpoints, resume, NaN guard, DDP.

:func:`train` writes into an output folder::

    checkpoint.pt   model + optimiser state, epoch, history (torch.save, atomic)
    config.json     the model configuration (read by xnorflow.sw.lower.lower_checkpoint)
    metrics.json    per-epoch history and the final float-sim / deploy accuracies
    curve.png       the training curve (loss, train and test accuracy per epoch)

Every file is written to a temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint. A non-finite loss stops
training with :class:`TrainingDiverged` and leaves the last good checkpoint untouched.
``nproc > 1`` runs ``nproc`` processes with ``torch.distributed`` (gloo on CPU, nccl on
CUDA) and DistributedDataParallel; rank 0 writes the files.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .data import Dataset, load_dataset
from .errors import UserError
from .layers import clip_weights
from .lower import CHECKPOINT, CONFIG, load_checkpoint, lower
from .models import BinaryNet, build_model, make_config

__all__ = ["TrainingDiverged", "train", "evaluate", "predict", "atomic_write_bytes"]

METRICS = "metrics.json"
CURVE = "curve.png"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_checkpoint(out: Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(out / CHECKPOINT, buf.getvalue())


def _write_json(path: Path, doc: dict) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def predict(model: BinaryNet, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Float-sim predictions (eval-mode forward, argmax of logits)."""
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(model(x[s : s + batch]).argmax(dim=1).numpy())
    if was:
        model.train()
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def evaluate(model: BinaryNet, data: Dataset) -> dict:
    """Float-sim accuracy, deploy accuracy and prediction agreement on the test set."""
    fpred = predict(model, data.x_test)
    res = {"float_acc": float((fpred == data.y_test).mean())}
    if model.config["mode"] == "bwn":
        res.update(deploy_acc=None, agreement=None,
                   deploy_note="bwn has real activations: not deployable")
        return res
    from .deploy import run

    beta = bool(model.config.get("beta"))
    cm = lower(model)
    dpred = run(cm, data.x_test).predictions
    res["deploy_acc"] = float((dpred == data.y_test).mean())
    if beta:
        model.set_beta(False)
        nobeta = predict(model, data.x_test)
        model.set_beta(True)
        res["float_acc_beta_dropped"] = float((nobeta == data.y_test).mean())
        res["agreement"] = float((nobeta == dpred).mean())
        res["beta_cost"] = res["float_acc"] - res["deploy_acc"]
    else:
        res["agreement"] = float((fpred == dpred).mean())
    return res


def _plot_curve(out: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ep, [h["loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="train loss")
    ax[1].plot(ep, [h["train_acc"] for h in history], marker="o", label="train")
    ax[1].plot(ep, [h["test_acc"] for h in history], marker="o", label="test (float-sim)")
    ax[1].set(xlabel="epoch", ylabel="accuracy")
    ax[1].legend()
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{CURVE}.", suffix=".png", dir=out)
    os.close(fd)
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out / CURVE)


def random_shift(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Augmentation: move each ``(N, H, W, C)`` image by up to ``shift`` pixels (zero fill)."""
    if shift <= 0:
        return x
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    d = rng.integers(0, 2 * shift + 1, size=(n, 2))
    return np.stack([padded[i, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(d)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: dict, out: str | Path, epochs: int = 10, batch: int = 64, lr: float = 1e-3,
          seed: int = 0, resume: bool = False, nproc: int = 1, data_path: str | None = None,
          progress: bool = True, log=print, data: Dataset | None = None,
          augment: int = 0, final_eval: bool = True) -> dict:
    """Train ``config`` (see :func:`xnorflow.sw.models.make_config`) into folder ``out``.

    ``config`` may be partial (``model``, ``dataset``, ``mode``, ...); the input shape and
    classes are filled in from the data set. Returns the metrics dict also written to
    ``out/metrics.json``. ``augment`` > 0 shifts training images randomly by up to that many
    pixels. ``final_eval=False`` skips the end-of-training float-sim/deploy report (callers
    that evaluate themselves). Raises :class:`TrainingDiverged` on a non-finite loss.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        cfg_path = out / CONFIG
        if not (out / CHECKPOINT).is_file() or not cfg_path.is_file():
            raise UserError(f"{out}: nothing to resume (no {CHECKPOINT} + {CONFIG}); "
                            "drop --resume to start afresh")
        config = json.loads(cfg_path.read_text())
    if data is None:
        data = load_dataset(config["dataset"], data_path)
    if not resume:
        config = make_config(config["model"], data.name, data.shape, data.classes,
                             **{k: v for k, v in config.items()
                                if k not in ("model", "dataset", "input_shape", "classes")})
        build_model(config)  # validate before writing anything
        _write_json(out / CONFIG, config)
    hp = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "nproc": nproc,
          "augment": augment, "final_eval": final_eval}
    if nproc > 1:
        import torch.multiprocessing as mp

        port = _free_port()
        mp.spawn(_worker, args=(nproc, port, config, str(out), hp, resume, data),
                 nprocs=nproc, join=True)
        metrics = json.loads((out / METRICS).read_text())
        if metrics.get("diverged"):
            raise TrainingDiverged(metrics["diverged"])
    else:
        metrics = _train_loop(0, 1, config, out, hp, resume, data, progress, log)
    return metrics


def _worker(rank: int, nproc: int, port: int, config: dict, out: str, hp: dict, resume: bool,
            data: Dataset) -> None:
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=nproc)
    torch.set_num_threads(1)
    try:
        _train_loop(rank, nproc, config, Path(out), hp, resume, data, progress=rank == 0,
                    log=print if rank == 0 else (lambda *a, **k: None))
    except TrainingDiverged:
        pass  # rank 0 recorded it in metrics.json
    finally:
        dist.destroy_process_group()


def _train_loop(rank: int, world: int, config: dict, out: Path, hp: dict, resume: bool,
                data: Dataset, progress: bool, log) -> dict:
    epochs, batch, lr, seed = hp["epochs"], hp["batch"], hp["lr"], hp["seed"]
    torch.manual_seed(seed)
    model = build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start, history = 0, []
    if resume:
        model, state = load_checkpoint(out)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]), list(state.get("history", []))
        seed = int(state.get("seed", seed))
    for g in opt.param_groups:
        g["lr"] = lr
        g.setdefault("initial_lr", lr)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model)
    x_tr, y_tr = data.x_train, torch.from_numpy(data.y_train)
    n = len(x_tr)
    per_rank = max(1, batch // world)
    steps = max(1, (n // world) // per_rank)
    total = max(epochs, 1)
    diverged = None
    t0 = time.time()
    for epoch in range(start, epochs):
        model.train()
        for g in opt.param_groups:  # cosine schedule over the whole run
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / total))
        perm = np.random.default_rng(seed * 1000 + epoch).permutation(n)
        mine = perm[: (n // world) * world][rank::world]
        aug_rng = np.random.default_rng([seed, epoch, rank])
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, unit="batch")
        for s in bar:
            idx = mine[s * per_rank : (s + 1) * per_rank]
            xb, yb = random_shift(x_tr[idx], hp.get("augment", 0), aug_rng), y_tr[idx]
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0])
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(bad)
            if bad.item() > 0:
                diverged = (f"loss became {loss.item()} in epoch {epoch + 1}, step {s + 1}; "
                            f"stopped, the last good checkpoint ({out / CHECKPOINT}, "
                            f"epoch {epoch}) is kept; try a lower --lr")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clip_weights(model)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                            refresh=False)
        bar.close()
        if diverged:
            break
        if rank == 0:
            test_acc = float((predict(model, data.x_test) == data.y_test).mean())
            history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                            "train_acc": correct / max(seen, 1), "test_acc": test_acc,
                            "lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0})
            log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / max(seen, 1):.4f} train "
                f"{correct / max(seen, 1):.4f} test (float-sim) {test_acc:.4f}")
            _save_checkpoint(out, {"state_dict": model.state_dict(),
                                   "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                   "history": history, "config": config, "seed": seed,
                                   "hparams": hp})
    if rank != 0:
        if diverged:
            raise TrainingDiverged(diverged)
        return {}
    if diverged:
        _write_json(out / METRICS, {"diverged": diverged, "history": history,
                                    "config": config, "hparams": hp})
        log(f"error: {diverged}")
        raise TrainingDiverged(diverged)
    if not (out / CHECKPOINT).is_file():
        raise UserError(f"{out}: no epoch was trained (epochs={epochs}); nothing to report")
    model, _ = load_checkpoint(out)
    if not hp.get("final_eval", True):
        metrics = {"config": config, "hparams": hp, "history": history, "final": None,
                   "train_time_s": time.time() - t0}
        _write_json(out / METRICS, metrics)
        return metrics
    final = evaluate(model, data)
    metrics = {"config": config, "hparams": hp, "history": history, "final": final,
               "train_time_s": time.time() - t0,
               # the headline numbers also at the top level, for callers and scripts
               "float_acc": final["float_acc"], "deploy_acc": final.get("deploy_acc")}
    _write_json(out / METRICS, metrics)
    try:
        _plot_curve(out, history)
    except Exception as e:  # noqa: BLE001 - a plot must never lose a training run
        log(f"warning: training curve not plotted ({e})")
    msg = f"float-sim accuracy {final['float_acc']:.4f}"
    if final.get("deploy_acc") is not None:
        msg += (f", deploy (integer) accuracy {final['deploy_acc']:.4f}, prediction agreement "
                f"{final['agreement']:.4f}")
    if "beta_cost" in final:
        msg += f" (beta dropped at deploy costs {100 * final['beta_cost']:.2f} points)"
    log(msg)
    return metrics
