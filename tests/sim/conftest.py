"""Shared fixtures of the sim tests: small compiled model folders made from random networks."""

from __future__ import annotations

import pytest

from xnorflow.sw import synthetic


def make_folder(tmp_path, seed: int = 1, geometry=(4, 4, 32), **kw):
    """A compiled model folder of ``random_network(seed, **kw)`` for ``sim-RxCxW``."""
    model = synthetic.random_network(seed, **kw)
    folder = tmp_path / f"model-{seed}"
    synthetic.write_folder(model, synthetic.geometry_target(*geometry), folder)
    return folder, model


@pytest.fixture
def digits_folder(tmp_path):
    """A random network with the digits input shape (8x8x1, 4-bit pixels, 10 classes)."""
    return make_folder(tmp_path, 7, in_shape=(8, 8, 1), in_bits=4, classes=10)
