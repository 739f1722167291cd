"""Lowering: a trained :class:`~xnorflow.sw.models.BinaryNet` -> integer IR (CompiledModel).

Block ``i`` of the model becomes IR layer ``i``:

* weights: ``sign_bits`` of the latent weights (``w >= 0 -> 1``), reordered to the IR's
  ``(out_c, kh, kw, in_c)`` HWC order. Torch flattens a conv map in CHW order before a dense
  layer; the IR reads per-pixel segments (HWC), so such dense weights are permuted.
* hidden layers get thresholds ``(T, pol)`` in the *hardware accumulator* domain (``P`` for
  +-1 inputs, ``A = sum_b 2^b P_b`` for unsigned ``B``-bit inputs). The float chain from the
  accumulator to the next block's BinActiv -- ``dot(acc)`` -> alpha -> (ReLU) -> BN -> sign or
  k-bit quantiser -- is monotone per channel, so each output level ``j`` is
  ``acc >= T_j`` (non-decreasing) or ``acc <= T_j`` (non-increasing). ``T_j`` is found by an
  exact integer binary search that evaluates the *same* float32 code path as the float-sim
  forward (:meth:`Block.pre_pool`, :meth:`Block.activation_levels`), so ties and rounding
  match float-sim bit for bit; the result is then checked against
  :func:`~xnorflow.sw.encoding.threshold_bits` on every accumulator value of every channel.
  Constant channels (e.g. BN gamma = 0): always 1 -> ``T = 0, pol = +1``; always 0 ->
  ``T = acc_max + 1, pol = +1``. Max-pooling after a non-increasing channel is
  :data:`~xnorflow.sw.encoding.POOL_AND`, otherwise ``POOL_OR``.
* the last layer is integer: ``score = score_mul * acc + score_offset`` with ``score = dot +
  round(bias)`` (``dot = 2P - K`` or ``A - (2^B - 1) n_neg``) and ``logits = scale * score``.

The XNOR-Net input scaling ``beta``/``K`` is input dependent and is dropped (recorded in
``meta["beta_dropped"]``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from . import encoding as enc
from .errors import UserError
from .ir import CompiledModel, Layer
from .layers import BinaryConv2d, BinaryLinear, Block, LogitHead
from .models import BinaryNet, build_model

__all__ = ["lower", "lower_checkpoint", "load_checkpoint", "fold_thresholds", "verify_thresholds",
           "torch_levels", "check_finite", "check_state_matches", "NotMonotoneError",
           "FLOAT32_EXACT", "MAX_ACC_BITS"]

#: Dot products must stay below this for float32 training/float-sim to be exact.
FLOAT32_EXACT = 1 << 24
#: Widest accumulator the compiler accepts (the accelerator's accumulators are 32-bit at most).
MAX_ACC_BITS = 32

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


class NotMonotoneError(AssertionError):
    """Folded thresholds disagree with the chain they came from (the chain is not monotone)."""


def fold_thresholds(level_of_acc, acc_max: int, channels: int, nlev: int,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact thresholds for a per-channel monotone map ``acc -> level`` in ``0..nlev``.

    ``level_of_acc(acc)`` maps an int64 array ``(M, channels)`` of hardware accumulators to
    int64 levels (for a trained model: the float-sim code path, see :func:`torch_levels`; for an
    imported QONNX model: the ONNX nodes themselves). Returns ``thresholds (channels, nlev)``
    int64 and ``polarity (channels,)`` int8 such that ``sum_j threshold_bits(acc, T[:, j], pol)
    == level(acc)`` for every ``acc`` in ``0..acc_max`` when the map is monotone per channel
    (:func:`verify_thresholds` checks that it is).
    """

    def lev(acc: np.ndarray) -> np.ndarray:
        return np.asarray(level_of_acc(np.ascontiguousarray(acc, dtype=np.int64)),
                          dtype=np.int64)

    l0 = lev(np.zeros((1, channels), dtype=np.int64))[0]
    l1 = lev(np.full((1, channels), acc_max, dtype=np.int64))[0]
    inc, dec = l1 > l0, l1 < l0
    j = np.arange(1, nlev + 1, dtype=np.int64)[:, None]  # (J, 1)
    fixed = np.where(l0 >= j, 0, acc_max + 1)  # constant and non-decreasing ends
    fixed = np.where(inc & (l1 < j), acc_max + 1, fixed)
    fixed = np.where(dec & (l1 >= j), acc_max, fixed)
    fixed = np.where(dec & (l0 < j), -1, fixed)
    search = (inc & (l0 < j) & (l1 >= j)) | (dec & (l0 >= j) & (l1 < j))
    lo = np.zeros((nlev, channels), dtype=np.int64)
    hi = np.full((nlev, channels), acc_max, dtype=np.int64)
    # invariant: non-decreasing -> level(lo) < j <= level(hi); non-increasing -> reversed
    while True:
        active = search & (hi - lo > 1)
        if not active.any():
            break
        mid = (lo + hi) // 2
        q = lev(mid) >= j
        move_hi = np.where(inc, q, ~q)
        hi = np.where(active & move_hi, mid, hi)
        lo = np.where(active & ~move_hi, mid, lo)
    t = np.where(search, np.where(inc, hi, lo), fixed)
    pol = np.where(dec, -1, 1).astype(np.int8)
    return np.ascontiguousarray(t.T).astype(np.int64), pol


def check_points(acc_max: int, t: np.ndarray, chunk: int = 4096,
                 exhaustive_limit: int = 1 << 22) -> list[np.ndarray]:
    """Accumulator rows ``(M, channels)`` on which folded thresholds are checked.

    Every accumulator value of every channel when ``(acc_max + 1) * channels`` is at most
    ``exhaustive_limit``; otherwise the values ``T - 2 .. T + 2`` around every threshold plus
    4097 evenly spaced values (the ends included).
    """
    channels = t.shape[0]
    if (acc_max + 1) * channels <= exhaustive_limit:
        ends = [(a0, min(acc_max + 1, a0 + chunk)) for a0 in range(0, acc_max + 1, chunk)]
        return [np.broadcast_to(np.arange(a, b, dtype=np.int64)[:, None], (b - a, channels))
                for a, b in ends]
    near = t.T.astype(np.int64)  # (J, channels)
    near = np.clip(np.concatenate([near + d for d in (-2, -1, 0, 1, 2)]), 0, acc_max)
    even = np.round(np.linspace(0, acc_max, 4097)).astype(np.int64)[:, None]
    return [near, np.broadcast_to(even, (even.shape[0], channels))]


def verify_thresholds(level_of_acc, acc_max: int, t: np.ndarray, pol: np.ndarray,
                      name: str, chunk: int = 4096, exhaustive_limit: int = 1 << 22) -> None:
    """Check folded thresholds against the map they came from (see :func:`check_points`).

    Raises :class:`NotMonotoneError` naming the layer, channel and accumulator value.
    """
    for acc in check_points(acc_max, t, chunk, exhaustive_limit):
        acc = np.ascontiguousarray(acc)
        want = np.asarray(level_of_acc(acc), dtype=np.int64)
        got = sum(enc.threshold_bits(acc, t[:, j], pol).astype(np.int64)
                  for j in range(t.shape[1]))
        if not np.array_equal(want, got):
            bad = np.argwhere(want != got)[0]
            raise NotMonotoneError(
                f"layer {name!r}: folded thresholds disagree with the float chain at "
                f"acc={int(acc[bad[0], bad[1]])}, channel {int(bad[1])}: float gives "
                f"{int(want[tuple(bad)])}, thresholds give {int(got[tuple(bad)])} "
                "(the chain is not monotone?)"
            )


def torch_levels(levels_fn, to_dot):
    """``level_of_acc`` for :func:`fold_thresholds` from torch functions.

    ``levels_fn(dot)`` maps a float32 tensor ``(M, channels)`` of dot products to levels (the
    float-sim code path); ``to_dot(acc)`` maps int64 accumulators to float32 dot products.
    """

    def level_of_acc(acc: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return levels_fn(to_dot(torch.from_numpy(acc))).to(torch.int64).numpy()

    return level_of_acc


def _weights_hwc(block: Block, in_map: tuple[int, int, int], first: bool) -> np.ndarray:
    """The block's binary weights as IR bits ``(out_c, kh, kw, in_c)``."""
    op = block.op.linear if isinstance(block.op, LogitHead) else block.op
    w = op.weight.detach().cpu().numpy()
    h, wd, c = in_map
    if isinstance(op, BinaryConv2d):
        w = w.transpose(0, 2, 3, 1)  # (out, C, kh, kw) -> (out, kh, kw, C)
    elif block.flatten_in:
        w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1)  # torch flattens CHW
    elif first:
        w = w.reshape(w.shape[0], h, wd, c)  # the model flattens the HWC image directly
    else:
        w = w.reshape(w.shape[0], 1, 1, c)
    return enc.sign_bits(np.ascontiguousarray(w))


def lower(model: BinaryNet, meta: dict | None = None, verify: bool = True) -> CompiledModel:
    """Lower a trained model to a validated :class:`~xnorflow.sw.ir.CompiledModel`.

    Raises :class:`~xnorflow.sw.errors.UserError` for models the integer hardware cannot run
    (``bwn``'s real activations, accumulators that overflow).
    """
    cfg = model.config
    check_finite(model, (meta or {}).get("checkpoint"))
    if cfg["mode"] == "bwn":
        raise UserError("mode bwn has real-valued hidden activations and cannot be lowered to "
                        "the integer IR; train with --mode xnor, bnn or dorefa")
    was_training = model.training
    model.eval()
    h, w, c = (int(v) for v in cfg["input_shape"])
    in_map, in_bits, signed = (h, w, c), int(cfg["in_bits"]), False
    layers: list[Layer] = []
    blocks = list(model.blocks)
    for i, block in enumerate(blocks):
        name = f"L{i}"
        last = isinstance(block.op, LogitHead)
        op = block.op.linear if last else block.op
        conv = isinstance(op, BinaryConv2d)
        bits = _weights_hwc(block, in_map, i == 0)
        out_c = bits.shape[0]
        if conv:
            geo = dict(kind="conv", kh=op.kernel_size, kw=op.kernel_size, stride=op.stride,
                       pad=op.padding)
        else:
            if not isinstance(op, BinaryLinear):
                raise TypeError(f"block {i}: cannot lower {type(op).__name__}")
            geo = dict(kind="dense", kh=in_map[0], kw=in_map[1], stride=1, pad=0)
        layer = Layer(name=name, in_h=in_map[0], in_w=in_map[1], in_c=in_map[2], out_c=out_c,
                      in_bits=in_bits, signed_input=signed, weights=bits,
                      output="integer" if last else "threshold", **geo)
        k, acc_max = layer.k_valid, layer.acc_max
        if acc_max >= FLOAT32_EXACT:
            raise UserError(f"layer {name}: dot products up to {acc_max} exceed 2^24, so "
                            "float32 training is not exact; use fewer --in-bits or narrower "
                            "layers")
        if layer.acc_bits > MAX_ACC_BITS:
            raise UserError(f"layer {name}: accumulator needs {layer.acc_bits} bits, more than "
                            f"the {MAX_ACC_BITS} the accelerator has")
        n_neg = torch.from_numpy(layer.n_neg)
        qmax = (1 << in_bits) - 1

        def to_dot(acc, k=k, qmax=qmax, n_neg=n_neg, signed=signed):
            d = 2 * acc - k if signed else acc - qmax * n_neg[None, :]
            return d.to(torch.float32)

        layer.meta = {"acc_bits": layer.acc_bits, "acc_max": acc_max}
        if last:
            head = block.op
            with torch.no_grad():
                bias = head.int_bias().detach().to(torch.int64).numpy()
                scale = float(head.scale().item())
            if signed:
                layer.score_mul, layer.score_offset = 2, (bias - k).astype(np.int64)
            else:
                layer.score_mul = 1
                layer.score_offset = (bias - qmax * layer.n_neg).astype(np.int64)
            layer.scale = scale
        else:
            nxt = blocks[i + 1]
            nbits = nxt.act.bits

            def levels_fn(dot, block=block, nxt=nxt):
                return nxt.activation_levels(block.pre_pool(dot))

            level_of_acc = torch_levels(levels_fn, to_dot)
            t, pol = fold_thresholds(level_of_acc, acc_max, out_c, (1 << nbits) - 1)
            if verify:
                verify_thresholds(level_of_acc, acc_max, t, pol, name)
            layer.thresholds, layer.polarity = t, pol
            layer.out_bits, layer.out_signed = nbits, bool(nxt.act.signed)
            if block.pool > 1:
                layer.pool_k = layer.pool_stride = block.pool
                layer.pool_ops = np.where(pol < 0, enc.POOL_AND, enc.POOL_OR).astype(np.uint8)
            in_bits, signed = nbits, bool(nxt.act.signed)
        layers.append(layer)
        in_map = (layer.out_h, layer.out_w, layer.out_c)
    if was_training:
        model.train()
    cm = CompiledModel(h, w, c, layers, classes=[str(x) for x in cfg["classes"]],
                       meta={"dataset": cfg.get("dataset"), "model": cfg["model"],
                             "mode": cfg["mode"], "config": dict(cfg),
                             "beta_dropped": bool(cfg.get("beta", False)),
                             "fp32_params": int(sum(p.numel() for p in model.parameters())),
                             **(meta or {})})
    cm.validate()
    return cm


def _checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    ckpt = p / CHECKPOINT if p.is_dir() else p
    cfg = ckpt.parent / CONFIG
    if not ckpt.is_file():
        raise UserError(f"{ckpt}: no checkpoint there (expected the {CHECKPOINT} written by "
                        "`xnorflow train -o DIR`)")
    if not cfg.is_file():
        raise UserError(f"{cfg}: missing; a checkpoint needs the {CONFIG} that "
                        "`xnorflow train` writes beside it")
    return ckpt, cfg


def load_checkpoint(path: str | Path) -> tuple[BinaryNet, dict]:
    """Load a trained model (folder or ``checkpoint.pt``) with its JSON config."""
    ckpt, cfg_path = _checkpoint_paths(path)
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_path}: not valid JSON ({e})") from None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on damaged files
        raise UserError(f"{ckpt}: cannot load checkpoint ({_first_line(e)}); damaged?") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise UserError(f"{ckpt}: not a checkpoint written by xnorflow train (no state_dict)")
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path}: not a model configuration (a JSON object)")
    try:
        model = build_model(cfg)
    except UserError as e:
        raise UserError(f"{cfg_path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a hand-edited config can fail anywhere
        what = f"missing {e}" if isinstance(e, KeyError) else _first_line(e)
        raise UserError(f"{cfg_path}: not a valid model configuration ({what})") from None
    check_state_matches(state["state_dict"], model, f"{ckpt}", f"{cfg_path}")
    try:
        model.load_state_dict(state["state_dict"])
    except Exception as e:  # noqa: BLE001 - anything check_state_matches did not foresee
        raise UserError(f"{ckpt}: cannot load checkpoint ({_first_line(e)}); damaged, "
                        f"or does not match {cfg_path}?") from None
    model.eval()
    return model, state


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def check_state_matches(state_dict: dict, model: torch.nn.Module, ckpt: str, cfg: str) -> None:
    """:class:`UserError` naming the first tensor of ``state_dict`` (a checkpoint's) that
    ``model`` (built from the configuration ``cfg``) lacks, does not have, or has in another
    shape, with both shapes."""
    want = model.state_dict()
    conf = getattr(model, "config", {}) or {}
    built = f"the model {cfg} describes ({conf.get('model')}, widths {conf.get('widths')})"
    for k, v in want.items():
        if k not in state_dict:
            raise UserError(f"{ckpt}: has no tensor {k}, which {built} needs; the checkpoint "
                            f"and {cfg} come from different runs?")
        got = state_dict[k]
        if not isinstance(got, torch.Tensor):
            raise UserError(f"{ckpt}: {k} is not a tensor; damaged?")
        if tuple(got.shape) != tuple(v.shape):
            raise UserError(f"{ckpt}: tensor {k} has shape {tuple(got.shape)}, but {built} "
                            f"needs {tuple(v.shape)}; the checkpoint and {cfg} come from "
                            "different runs?")
    for k in state_dict:
        if k not in want:
            raise UserError(f"{ckpt}: has a tensor {k} that {built} does not; the checkpoint "
                            f"and {cfg} come from different runs?")


def check_finite(model: torch.nn.Module, where: str | None = None) -> None:
    """:class:`UserError` naming the first parameter or buffer (BatchNorm statistics
    included) of ``model`` that holds a NaN or an infinity, with how many and where.

    Lowering would turn them into bits silently (``sign_bits(NaN)`` is 0, a NaN threshold
    chain is constant), so a damaged checkpoint or a diverged run is refused instead.
    ``where`` (the checkpoint's path) starts the message."""
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        bad = ~torch.isfinite(t)
        if bad.any():
            idx = tuple(int(i) for i in torch.nonzero(bad)[0]) if t.dim() else ()
            at = f" at {list(idx)}" if idx else ""
            head = f"{where}: " if where else ""
            raise UserError(f"{head}tensor {name}: {int(bad.sum())} of {t.numel()} values are "
                            f"not finite (first: {float(t[idx])}{at}); the checkpoint is "
                            "damaged or its training diverged: retrain or use an earlier "
                            "checkpoint")


def lower_checkpoint(path: str | Path) -> CompiledModel:
    """Load a checkpoint written by ``xnorflow train`` and lower it (records its sha256).

    A folder that already holds an IR and no checkpoint (``model.json``: written by
    ``xnorflow import``, or a compiled folder) is read as it is, so ``xnorflow compile`` takes
    it like a trained checkpoint.
    """
    p = Path(path)
    if p.is_dir() and (p / "model.json").is_file() and not (p / CHECKPOINT).is_file():
        return CompiledModel.load(p)
    ckpt, _ = _checkpoint_paths(path)
    model, state = load_checkpoint(ckpt)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    return lower(model, meta={"checkpoint": str(ckpt.resolve()), "checkpoint_sha256": digest,
                              "epoch": int(state.get("epoch", 0))})
