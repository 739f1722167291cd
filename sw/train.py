"""Training loop: Adam + cosine schedule, atomic checkpoints, resume, NaN guard, DDP.

:func:`train` writes into an output folder::

    checkpoint.pt   model + optimiser state, epoch, history (torch.save, atomic)
    config.json     the model configuration (read by xnorflow.sw.lower.lower_checkpoint)
    metrics.json    per-epoch history and the final float-sim / deploy accuracies
    curve.png       the training curve (loss, train and test accuracy per epoch)

Every file is written atomically (:mod:`xnorflow.sw.files`), so a crash never leaves a
half-written checkpoint. A non-finite loss stops
training with :class:`TrainingDiverged` and leaves the last good checkpoint untouched.
``device`` is ``auto`` (CUDA when torch sees it), ``cpu`` or ``cuda``; the data set lives on
the device for the whole run and checkpoints are saved device-free (every tensor on the CPU).
``nproc > 1`` runs ``nproc`` processes with ``torch.distributed`` (gloo on the CPU; NCCL and
one GPU per rank on CUDA) and DistributedDataParallel; rank 0 writes the files.
"""

from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import files
from .data import Dataset, load_dataset
from .errors import UserError
from .layers import clip_weights
from .lower import CHECKPOINT, CONFIG, load_checkpoint, lower
from .models import BinaryNet, build_model, make_config

__all__ = ["TrainingDiverged", "train", "evaluate", "predict"]

METRICS = "metrics.json"
CURVE = "curve.png"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _save_checkpoint(out: Path, state: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    files.write_bytes(out / CHECKPOINT, buf.getvalue())


def _write_json(path: Path, doc: dict) -> None:
    files.write_text(path, json.dumps(doc, indent=2) + "\n")


def predict(model: BinaryNet, x, batch: int = 1000) -> np.ndarray:
    """Float-sim predictions (eval-mode forward, argmax of logits) as a NumPy array.

    ``x`` is a ``uint8`` NumPy array or tensor; batches run on the model's device.
    """
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(model(x[s : s + batch]).argmax(dim=1).cpu().numpy())
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
    with files.atomic_file(out / CURVE, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cpu``; ``cuda``
    or ``cuda:N``. Raises :class:`UserError` (one line) for an unknown name or for CUDA asked
    for where there is none.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA device is available here (torch "
                            f"{torch.__version__} sees none); use --device cpu or auto")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                            "device(s) here")
        return name
    raise UserError(f"--device {name!r}: choose auto, cpu, cuda or cuda:N")


def rank_device(device: str, rank: int, world: int) -> torch.device:
    """The device of DDP rank ``rank``: ``cuda:rank`` for ``cuda``, else ``device`` itself."""
    if device == "cuda" and world > 1:
        return torch.device("cuda", rank)
    return torch.device(device)


def dist_backend(device: str) -> str:
    """The ``torch.distributed`` backend for ``device``: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.startswith("cuda") else "gloo"


def check_nproc(device: str, nproc: int) -> None:
    """Refuse more CUDA processes than devices (one GPU per DDP rank)."""
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: must be >= 1")
    if device.startswith("cuda") and nproc > 1:
        if ":" in device:
            raise UserError(f"--device {device} with --nproc {nproc}: DDP gives rank r GPU r; "
                            "use --device cuda")
        n = torch.cuda.device_count()
        if nproc > n:
            raise UserError(f"--nproc {nproc}: only {n} CUDA device(s) here (one per process)")


def _holds_run(out: Path) -> bool:
    """Whether the folder ``out`` holds (part of) a training run."""
    return any((out / f).exists() for f in (CHECKPOINT, CONFIG, METRICS))


def check_run_destination(out: Path, resume: bool = False, force: bool = False) -> None:
    """Refuse an output folder ``train`` may not write (one line naming it and the fix).

    New or empty: fine. A training run: only with ``resume`` (continue it) or ``force``
    (replace it). Anything else (a file, a link, a mount point to replace, a folder holding
    other things): refused even with ``force``."""
    out = Path(out)
    if resume and force:
        raise UserError(f"--resume and --force: choose one (continue the run in {out}, or "
                        "replace it)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UserError(f"{out}: exists and is not a folder; choose another -o")
    if resume:
        if not (out / CHECKPOINT).is_file() or not (out / CONFIG).is_file():
            raise UserError(f"{out}: nothing to resume (no {CHECKPOINT} + {CONFIG}); "
                            "drop --resume to start afresh")
        return
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not _holds_run(out):
        raise UserError(f"{out}: exists and is not a training run (no {CHECKPOINT} or "
                        f"{CONFIG}); refusing to write into it even with --force: choose "
                        "another -o")
    if not force:
        raise UserError(f"{out}: holds a training run already; pass --resume to continue it "
                        "or --force to replace it")
    files.existing_folder_only(out)  # a mount point cannot be replaced


#: Seeds go to torch.manual_seed and NumPy's SeedSequence: non-negative, below 2^32 here.
SEED_LIMIT = 1 << 32
#: Most torch threads a process may ask for.
MAX_THREADS = 1024


def check_common(*, epochs: int, batch: int, lr: float, seed: int, nproc: int = 1,
                 threads: int | None = None) -> None:
    """The flags every training command shares (``train``, ``teacher``): :class:`UserError`
    naming the flag and the value for the first one out of range."""
    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise UserError(f"--lr {lr}: must be a positive number")
    if nproc >= 1 and batch // nproc < 2:
        per = f" per process (--nproc {nproc})" if nproc > 1 else ""
        raise UserError(f"--batch {batch}: must be >= {2 * nproc}; BatchNorm needs at least "
                        f"2 images per training step{per}")
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"--seed {seed}: must be in 0 .. 2^32 - 1")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads {threads}: must be in 1 .. {MAX_THREADS}")


def check_hyperparameters(*, batch: int, nproc: int, augment: int, epochs: int, lr: float,
                          seed: int, bn_momentum: float, label_smoothing: float,
                          kd_alpha: float, weight_decay: float, kd_temp: float) -> None:
    """:class:`UserError` naming the flag and the value for the first one out of range."""
    check_common(epochs=epochs, batch=batch, lr=lr, seed=seed, nproc=nproc)
    if augment < 0:
        raise UserError(f"--augment {augment}: must be >= 0 pixels (0: no shifts)")
    for name, v, lo, hi in (("--bn-momentum", bn_momentum, 0.0, 1.0),
                            ("--label-smoothing", label_smoothing, 0.0, 1.0),
                            ("--kd-alpha", kd_alpha, 0.0, 1.0)):
        if not lo <= v <= hi:
            raise UserError(f"{name} {v}: must be in [{lo}, {hi}]")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise UserError(f"--weight-decay {weight_decay}: must be >= 0")
    if not (kd_temp > 0 and math.isfinite(kd_temp)):
        raise UserError(f"--kd-temp {kd_temp}: must be > 0")


def random_shift(x: torch.Tensor, shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Augmentation: move each ``(N, H, W, C)`` image by up to ``shift`` pixels (zero fill).

    The offsets come from ``rng`` (NumPy, so a run draws the same ones on any device); the
    images stay on their device.
    """
    if shift <= 0:
        return x
    n, h, w, _ = x.shape
    padded = F.pad(x, (0, 0, shift, shift, shift, shift))
    d = torch.from_numpy(rng.integers(0, 2 * shift + 1, size=(n, 2))).to(x.device)
    rows = d[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = d[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    nidx = torch.arange(n, device=x.device)[:, None, None]
    return padded[nidx, rows[:, :, None], cols[:, None, :]]


def _to_cpu(obj):
    """A copy of a (nested) state dict with every tensor on the CPU (device-free files)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: dict, out: str | Path, epochs: int = 10, batch: int = 64, lr: float = 1e-3,
          seed: int = 0, resume: bool = False, nproc: int = 1, data_path: str | None = None,
          progress: bool = True, log=print, data: Dataset | None = None,
          augment: int = 0, final_eval: bool = True, device: str = "auto",
          bn_momentum: float = 0.1, weight_decay: float = 0.0, label_smoothing: float = 0.0,
          teacher: str | Path | None = None, kd_alpha: float = 0.0,
          kd_temp: float = 4.0, force: bool = False) -> dict:
    """Train ``config`` (see :func:`xnorflow.sw.models.make_config`) into folder ``out``.

    ``config`` may be partial (``model``, ``dataset``, ``mode``, ...); the input shape and
    classes are filled in from the data set. Returns the metrics dict also written to
    ``out/metrics.json``. ``augment`` > 0 shifts training images randomly by up to that many
    pixels. ``final_eval=False`` skips the end-of-training float-sim/deploy report (callers
    that evaluate themselves). ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda``;
    the data set is moved to the device once. ``bn_momentum`` is BatchNorm's running-average
    momentum, ``weight_decay`` Adam's (on the latent weights), ``label_smoothing`` that of the
    cross-entropy. ``teacher`` names a ``.npy`` file of float teacher logits for the training
    images (:mod:`xnorflow.sw.teacher`): the loss is then ``(1 - kd_alpha) * CE + kd_alpha *
    T^2 * KL(teacher || student)`` at temperature ``kd_temp`` (knowledge distillation).
    Raises :class:`TrainingDiverged` on a non-finite loss.

    ``out`` must be new, an empty folder, or (with ``resume``) a run to continue; a run
    already there is replaced only with ``force``, and then only once the new run has
    finished (until then, and if training fails, the old run is left as it was). Every
    argument is checked, and ``out`` made and tried for writing, before training starts.
    """
    out = Path(out)
    check_run_destination(out, resume, force)
    check_hyperparameters(batch=batch, nproc=nproc, augment=augment, epochs=epochs, lr=lr,
                          seed=seed, bn_momentum=bn_momentum, label_smoothing=label_smoothing,
                          kd_alpha=kd_alpha, weight_decay=weight_decay, kd_temp=kd_temp)
    device = resolve_device(device)
    check_nproc(device, nproc)
    if resume:
        cfg_path = out / CONFIG
        try:
            config = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{cfg_path}: not valid JSON ({e}); cannot resume") from None
        if not isinstance(config, dict) or "dataset" not in config:
            raise UserError(f"{cfg_path}: not a model configuration (no dataset); cannot "
                            "resume")
        load_checkpoint(out)  # a damaged or mismatched checkpoint is refused before any work
    if data is None:
        data = load_dataset(config["dataset"], data_path)
    if not resume:
        config = make_config(config["model"], data.name, data.shape, data.classes,
                             **{k: v for k, v in config.items()
                                if k not in ("model", "dataset", "input_shape", "classes")})
        build_model(config)  # validate before writing anything
    if teacher is not None:
        from .teacher import load_teacher_logits

        load_teacher_logits(teacher, data)  # a bad file is refused before anything is written
        teacher = str(teacher)
    elif kd_alpha > 0:
        raise UserError(f"--kd-alpha {kd_alpha}: needs --teacher LOGITS.npy")
    hp = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "nproc": nproc,
          "augment": augment, "final_eval": final_eval, "device": device,
          "bn_momentum": bn_momentum, "weight_decay": weight_decay,
          "label_smoothing": label_smoothing, "teacher": teacher, "kd_alpha": kd_alpha,
          "kd_temp": kd_temp}
    if force and _holds_run(out):
        # the old run stays until the new one has finished (atomic_folder swaps it in)
        with files.atomic_folder(out) as work:
            return _train_into(work, config, hp, resume, data, progress, log, replacing=out)
    files.make_dirs(out)
    files.check_writable(out)
    return _train_into(out, config, hp, resume, data, progress, log)


def _train_into(out: Path, config: dict, hp: dict, resume: bool, data: Dataset,
                progress: bool, log, replacing: Path | None = None) -> dict:
    """Train into the folder ``out``; ``replacing`` names the run that ``out`` will replace
    when training finishes (``--force``), for the messages."""
    if not resume:
        _write_json(out / CONFIG, config)
    nproc = hp["nproc"]
    if nproc > 1:
        import torch.multiprocessing as mp

        port = _free_port()
        mp.spawn(_worker, args=(nproc, port, config, str(out), hp, resume, data, replacing),
                 nprocs=nproc, join=True)
        metrics = json.loads((out / METRICS).read_text())
        if metrics.get("diverged"):
            raise TrainingDiverged(metrics["diverged"])
        return metrics
    return _train_loop(0, 1, config, out, hp, resume, data, progress, log, replacing)


def _worker(rank: int, nproc: int, port: int, config: dict, out: str, hp: dict, resume: bool,
            data: Dataset, replacing: Path | None = None) -> None:
    import torch.distributed as dist

    dev = rank_device(hp["device"], rank, nproc)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(dist_backend(hp["device"]), init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=nproc)
    torch.set_num_threads(1)
    try:
        _train_loop(rank, nproc, config, Path(out), hp, resume, data, progress=rank == 0,
                    log=print if rank == 0 else (lambda *a, **k: None), replacing=replacing)
    except TrainingDiverged:
        pass  # rank 0 recorded it in metrics.json
    finally:
        dist.destroy_process_group()


def _set_bn_momentum(model: torch.nn.Module, momentum: float) -> None:
    from .layers import ChannelBN

    for m in model.modules():
        if isinstance(m, ChannelBN):
            m.momentum = momentum


def _kd_loss(logits: torch.Tensor, teacher: torch.Tensor, temp: float) -> torch.Tensor:
    """Hinton's distillation term ``T^2 * KL(softmax(t / T) || softmax(s / T))``."""
    return F.kl_div(F.log_softmax(logits / temp, dim=1), F.log_softmax(teacher / temp, dim=1),
                    reduction="batchmean", log_target=True) * (temp * temp)


def _train_loop(rank: int, world: int, config: dict, out: Path, hp: dict, resume: bool,
                data: Dataset, progress: bool, log, replacing: Path | None = None) -> dict:
    epochs, batch, lr, seed = hp["epochs"], hp["batch"], hp["lr"], hp["seed"]
    dev = rank_device(hp["device"], rank, world)
    torch.manual_seed(seed)
    model = build_model(config)
    start, history = 0, []
    opt_state = None
    if resume:
        model, state = load_checkpoint(out)
        opt_state = state["optimizer"]
        start, history = int(state["epoch"]), list(state.get("history", []))
        seed = int(state.get("seed", seed))
    model.to(dev)
    _set_bn_momentum(model, hp["bn_momentum"])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=hp["weight_decay"])
    if opt_state is not None:
        opt.load_state_dict(opt_state)  # moves the state to the parameters' device
    for g in opt.param_groups:
        g["lr"] = lr
        g["weight_decay"] = hp["weight_decay"]
        g.setdefault("initial_lr", lr)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    # the whole data set lives on the device: no host round trip per batch
    x_tr = torch.from_numpy(data.x_train).to(dev)
    y_tr = torch.from_numpy(data.y_train).to(dev)
    x_te = torch.from_numpy(data.x_test).to(dev)
    t_tr = None
    if hp["teacher"]:
        from .teacher import load_teacher_logits

        t_tr = torch.from_numpy(load_teacher_logits(hp["teacher"], data)).to(dev)
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
        mine = torch.from_numpy(perm[: (n // world) * world][rank::world]).to(dev)
        aug_rng = np.random.default_rng([seed, epoch, rank])
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, unit="batch")
        for s in bar:
            idx = mine[s * per_rank : (s + 1) * per_rank]
            xb, yb = random_shift(x_tr[idx], hp["augment"], aug_rng), y_tr[idx]
            logits = net(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=hp["label_smoothing"])
            if t_tr is not None and hp["kd_alpha"] > 0:
                loss = ((1 - hp["kd_alpha"]) * loss
                        + hp["kd_alpha"] * _kd_loss(logits, t_tr[idx], hp["kd_temp"]))
            bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(bad)
            if bad.item() > 0:  # the one host sync per step: a NaN must stop before step()
                kept = (f"the last good checkpoint ({out / CHECKPOINT}, epoch {epoch}) is kept"
                        if replacing is None else
                        f"the run in {replacing} is left as it was (--force replaces it only "
                        "when training finishes)")
                diverged = (f"loss became {loss.item()} in epoch {epoch + 1}, step {s + 1}; "
                            f"stopped, {kept}; try a lower --lr")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clip_weights(model)
            loss_sum += loss.detach().double() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(idx)
            if progress and s % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                acc=f"{correct.item() / seen:.3f}", refresh=False)
        bar.close()
        if diverged:
            break
        if rank == 0:
            test_acc = float((predict(model, x_te) == data.y_test).mean())
            ep_loss, ep_acc = loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1)
            history.append({"epoch": epoch + 1, "loss": ep_loss, "train_acc": ep_acc,
                            "test_acc": test_acc, "lr": opt.param_groups[0]["lr"],
                            "time_s": time.time() - t0})
            log(f"epoch {epoch + 1}/{epochs}: loss {ep_loss:.4f} train {ep_acc:.4f} test "
                f"(float-sim) {test_acc:.4f}")
            _save_checkpoint(out, {"state_dict": _to_cpu(model.state_dict()),
                                   "optimizer": _to_cpu(opt.state_dict()), "epoch": epoch + 1,
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
