"""Data loaders: uint8 images, the digits mapping, IDX/CIFAR parsing and their errors."""

import gzip
import pickle

import numpy as np
import pytest

from xnorflow.sw import data
from xnorflow.sw.errors import UserError


def _idx(path, magic, arr, gz=False, count=None):
    arr = np.asarray(arr, dtype=np.uint8)
    dims = list(arr.shape)
    if count is not None:
        dims[0] = count
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    raw = head + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def _write_set(folder, n_train=6, n_test=4, gz=True, h=5, w=4):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", data.IDX_IMAGES_MAGIC,
             rng.integers(0, 256, (n, h, w)), gz)
        _idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", data.IDX_LABELS_MAGIC,
             rng.integers(0, 10, n), gz)


def test_digits_uint8_fixed_stratified_split():
    d = data.load_digits()
    assert d.x_train.dtype == np.uint8 and d.x_train.shape == (1437, 8, 8, 1)
    assert d.x_test.shape == (360, 8, 8, 1) and d.num_classes == 10
    assert d.x_train.max() == 255 and d.x_train.min() == 0
    # stratified: every class has 35..37 test images
    assert np.bincount(d.y_test).min() >= 35
    again = data.load_digits()
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.y_test, d.y_test)


def test_digits_mapping():
    assert data.digits_to_pixels(np.arange(17)).tolist()[:3] == [0, 16, 32]
    assert data.digits_to_pixels([8, 16]).tolist() == [128, 255]
    with pytest.raises(ValueError):
        data.digits_to_pixels([17])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads(tmp_path, gz):
    _write_set(tmp_path, gz=gz)
    d = data.load_idx_dataset(tmp_path, "mnist")
    assert d.x_train.shape == (6, 5, 4, 1) and d.x_train.dtype == np.uint8
    assert d.y_test.shape == (4,) and d.y_test.dtype == np.int64


def test_bad_magic_names_file_and_fix(tmp_path):
    _write_set(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    _idx(bad, 0x00000802, np.zeros((6, 5, 4)), gz=True)
    with pytest.raises(UserError) as e:
        data.load_idx_dataset(tmp_path, "fashion-mnist")
    msg = str(e.value)
    assert str(bad) in msg and "magic" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_wrong_label_count(tmp_path):
    _write_set(tmp_path, gz=False)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    _idx(lab, data.IDX_LABELS_MAGIC, np.zeros(3), gz=False)
    with pytest.raises(UserError, match="expected 4") as e:
        data.load_idx_dataset(tmp_path, "fashion-mnist")
    assert str(lab) in str(e.value)


def test_truncated_file(tmp_path):
    _write_set(tmp_path, gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    _idx(img, data.IDX_IMAGES_MAGIC, np.zeros((5, 5, 4)), gz=False, count=6)
    with pytest.raises(UserError, match="truncated") as e:
        data.load_idx_dataset(tmp_path, "fashion-mnist")
    assert str(img) in str(e.value)


def test_not_gzip(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz"):
        data.load_idx_dataset(tmp_path, "fashion-mnist")


def test_missing_files(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(UserError, match="train-images-idx3-ubyte"):
        data.load_dataset("fashion", tmp_path)
    with pytest.raises(UserError, match="--data-path"):
        data.load_dataset("mnist")
    with pytest.raises(UserError, match="unknown data set"):
        data.load_dataset("imagenet")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
             b"labels": [0, 1, 2]}
        (tmp_path / name).write_bytes(pickle.dumps(d))
    ds = data.load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    raw = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"]
    assert np.array_equal(ds.x_test[0, :, :, 1], raw[0, 1024:2048].reshape(32, 32))
    (tmp_path / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserError, match="data_batch_3"):
        data.load_cifar10(tmp_path)


@pytest.mark.skipif(not data.FASHION_MNIST_PATH.is_dir(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_default_path():
    d = data.load_dataset("fashion-mnist")
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_test.shape == (10000, 28, 28, 1)
    assert d.classes[9] == "Ankle boot"
