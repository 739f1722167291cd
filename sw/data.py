"""Data sets as ``uint8`` images ``(N, H, W, C)`` in ``0..255`` plus ``int64`` labels.

Every loader returns a :class:`Dataset` whose images are 8-bit unsigned pixels, the format
the accelerator takes (the first layer quantises them with
:func:`xnorflow.sw.encoding.quantize_pixels`). Supported:

* ``digits`` -- scikit-learn's embedded 8x8 ``load_digits`` (no download). Its pixel values
  ``v`` in ``0..16`` are mapped once, here, to ``pixel = (255 * v + 8) // 16`` (16 -> 255,
  8 -> 128, 0 -> 0: rounding of ``v * 255 / 16``). The split is fixed and stratified: 80 %
  train / 20 % test with ``random_state=0`` (1437 / 360 images).
* ``fashion-mnist`` and ``mnist`` -- the four IDX files (gzipped or not) in a folder; the
  default folder for Fashion-MNIST is ``/usr/share/datasets/fashion-mnist`` (Debian package
  ``dataset-fashion-mnist``).
* ``cifar10`` -- the python-pickle batches (``data_batch_1..5``, ``test_batch``) in a folder.

A missing or corrupt file raises :class:`~xnorflow.sw.errors.UserError` naming the file, what
was expected and how to get the data.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["Dataset", "DATASETS", "load_dataset", "load_digits", "load_idx_dataset",
           "load_cifar10", "read_idx", "digits_to_pixels"]

FASHION_MNIST_PATH = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]

HOW_TO_GET = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` (files land in "
    "/usr/share/datasets/fashion-mnist) or pass --data-path to a folder holding "
    "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] "
    "and t10k-labels-idx1-ubyte[.gz]",
    "mnist": "download the four MNIST IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into "
    "one folder and pass it with --data-path",
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html,"
    " unpack it and pass the cifar-10-batches-py folder with --data-path",
}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


@dataclass
class Dataset:
    """A train/test split of ``uint8`` images ``(N, H, W, C)`` and ``int64`` labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image shape ``(H, W, C)``."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def digits_to_pixels(v) -> np.ndarray:
    """Map scikit-learn digits values ``0..16`` to 8-bit pixels: ``(255 * v + 8) // 16``."""
    v = np.asarray(v)
    if v.size and (v.min() < 0 or v.max() > 16):
        raise ValueError("digits values must lie in 0..16")
    return ((255 * v.astype(np.int64) + 8) // 16).astype(np.uint8)


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits: fixed stratified 80/20 split (``random_state=0``)."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    x = digits_to_pixels(d.images).reshape(-1, 8, 8, 1)
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)])


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path, magic: int, dataset: str = "fashion-mnist",
             count: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in ``.gz``) of unsigned bytes.

    ``magic`` is :data:`IDX_IMAGES_MAGIC` or :data:`IDX_LABELS_MAGIC`; ``count`` (if given)
    is the number of items expected. Returns ``(N, H, W)`` images or ``(N,)`` labels.
    """
    path = Path(path)
    how = HOW_TO_GET.get(dataset, "")
    if not path.is_file():
        raise UserError(f"{path}: file not found (expected an IDX file of {dataset}); {how}")
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"{path}: cannot read ({e}); the file is damaged, {how}") from None
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: {len(raw)} bytes is too short for an IDX header; {how}")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise UserError(
            f"{path}: bad IDX magic 0x{got:08x}, expected 0x{magic:08x} "
            f"({'images' if ndim == 3 else 'labels'}, unsigned bytes); {how}"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if count is not None and dims[0] != count:
        raise UserError(f"{path}: header says {dims[0]} items, expected {count}; {how}")
    body = raw[4 + 4 * ndim :]
    need = int(np.prod(dims))
    if len(body) != need:
        raise UserError(
            f"{path}: header says {'x'.join(map(str, dims))} = {need} bytes of data but the "
            f"file holds {len(body)}; truncated or damaged, {how}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _find(folder: Path, stem: str, dataset: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"{folder / stem}[.gz]: file not found (expected {dataset} IDX file {stem}); "
        f"{HOW_TO_GET.get(dataset, '')}"
    )


def load_idx_dataset(folder: str | Path, name: str = "fashion-mnist") -> Dataset:
    """Fashion-MNIST or MNIST from the four IDX files in ``folder`` (gzipped or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (expected the {name} IDX files); "
                        f"{HOW_TO_GET.get(name, '')}")
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ipath = _find(folder, f"{prefix}-images-idx3-ubyte", name)
        lpath = _find(folder, f"{prefix}-labels-idx1-ubyte", name)
        images = read_idx(ipath, IDX_IMAGES_MAGIC, name)
        labels = read_idx(lpath, IDX_LABELS_MAGIC, name, count=images.shape[0])
        if labels.size and labels.max() > 9:
            raise UserError(f"{lpath}: label {labels.max()} out of range 0..9; {HOW_TO_GET[name]}")
        parts[split] = (images[..., None], labels.astype(np.int64))
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return Dataset(name, parts["train"][0], parts["train"][1], parts["test"][0],
                   parts["test"][1], list(classes))


def load_cifar10(folder: str | Path) -> Dataset:
    """CIFAR-10 from the python-pickle batches in ``folder`` (``cifar-10-batches-py``)."""
    folder = Path(folder)
    how = HOW_TO_GET["cifar10"]

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path}: file not found (expected a CIFAR-10 python batch); {how}")
        try:
            with open(path, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            data = np.asarray(d[b"data"], dtype=np.uint8)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise UserError(f"{path}: not a CIFAR-10 python batch ({e}); {how}") from None
        if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
            raise UserError(f"{path}: expected data (N, 3072) and N labels, got "
                            f"{data.shape} and {labels.shape}; {how}")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels

    tr = [batch(f"data_batch_{i}") for i in range(1, 6)]
    te = batch("test_batch")
    return Dataset("cifar10", np.concatenate([t[0] for t in tr]),
                   np.concatenate([t[1] for t in tr]), te[0], te[1], list(CIFAR10_CLASSES))


DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10")
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist":
            "fashion-mnist", "cifar-10": "cifar10"}


def canonical_name(name: str) -> str:
    """The canonical data set name (``fashion`` -> ``fashion-mnist``); UserError if unknown."""
    n = _ALIASES.get(name.lower(), name.lower())
    if n not in DATASETS:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return n


def load_dataset(name: str, path: str | Path | None = None) -> Dataset:
    """Load a data set by name; ``path`` is the folder for file-based data sets."""
    n = canonical_name(name)
    if n == "digits":
        return load_digits()
    if n == "fashion-mnist":
        return load_idx_dataset(path or FASHION_MNIST_PATH, n)
    if path is None:
        raise UserError(f"data set {n} needs --data-path; {HOW_TO_GET[n]}")
    if n == "mnist":
        return load_idx_dataset(path, n)
    return load_cifar10(path)
