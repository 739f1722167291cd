"""The datapath performance model (sw/perf.py): pure Python, consistent formulas. The
simulated-versus-model equality is checked in tests/hw/test_engine.py."""

import subprocess
import sys

import numpy as np
import pytest

from xnorflow.sw import perf
from xnorflow.sw.ir import Layer


def test_importable_without_amaranth():
    code = ("import sys; sys.modules['amaranth'] = None\n"
            "import xnorflow.sw.perf as p\n"
            "print(p.engine_timing(8, 8, 64).pop_latency)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == perf.engine_timing(8, 8, 64).pop_latency


@pytest.mark.parametrize("width,levels", [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 1)])
def test_popcount_schedule_small(width, levels):
    """Hand-computed Wallace levels (e.g. 5 bits: FA + 2 left, then one more FA)."""
    lv, lat = perf.popcount_schedule(width, 2)
    assert lv == levels
    assert lat == -(-levels // 2) + 1
    assert perf.popcount_schedule(width, 1)[1] == levels + 1


@pytest.mark.parametrize("width", [16, 32, 64])
def test_popcount_schedule_within_dadda_bound(width):
    dadda = [2, 3, 4, 6, 9, 13, 19, 28, 42, 63, 94]
    bound = next(i for i, d in enumerate(dadda) if d >= width)
    lv, lat = perf.popcount_schedule(width, 2)
    assert bound - 1 <= lv <= bound
    assert lat == -(-lv // 2) + 1


@pytest.mark.parametrize("rows,cols,width", [(1, 1, 16), (2, 3, 32), (8, 8, 64)])
def test_long_tiles_have_no_bubbles(rows, cols, width):
    t = perf.engine_timing(rows, cols, width)
    ks = [3 * rows + 5, 2 * rows, 40 * rows]
    s = perf.tile_sequence_cycles(t, ks, tail_words=1)
    assert s.last_cycles == list(np.cumsum(ks) - 1)
    assert s.cycles == sum(ks) + t.pop_latency + 2 * (rows - 1) + 1


def test_short_tiles_are_spaced_2r():
    t = perf.engine_timing(4, 2, 16)
    s = perf.tile_sequence_cycles(t, [1, 1, 3])
    assert s.last_cycles == [0, 8, 16]


@pytest.mark.parametrize("rows", [1, 2, 5, 8])
def test_default_fifo_depth_is_the_smallest_without_credit_stalls(rows):
    t = perf.engine_timing(rows, 3, 32)
    ks = [2 * rows] * 12
    ideal = [2 * rows * (i + 1) - 1 for i in range(12)]
    assert perf.tile_sequence_cycles(t, ks).last_cycles == ideal
    small = perf.engine_timing(rows, 3, 32, fifo_depth=t.fifo_depth - 1)
    if small.fifo_depth >= rows:
        assert perf.tile_sequence_cycles(small, ks).last_cycles != ideal


def test_tile_sequence_edge_cases():
    t = perf.engine_timing(2, 2, 16)
    assert perf.tile_sequence_cycles(t, []).cycles == 0
    with pytest.raises(ValueError, match="at least one word, not 0"):
        perf.tile_sequence_cycles(t, [3, 0])


def _layer(kind, in_hw, in_c, out_c, k, stride=1, pad=0, in_bits=1, pool=1, output="threshold"):
    kh = in_hw if kind == "dense" else k
    w = np.zeros((out_c, kh, kh, in_c), np.uint8)
    layer = Layer("l", kind, in_hw, in_hw, in_c, out_c, kh, kh, stride, pad, in_bits,
                  in_bits == 1, w, output)
    if output == "threshold":
        layer.thresholds = np.zeros((out_c, 1), np.int64)
        layer.polarity = np.ones(out_c, np.int8)
        if pool > 1:
            layer.pool_k = layer.pool_stride = pool
            layer.pool_ops = np.zeros(out_c, np.uint8)
    else:
        layer.score_offset = np.zeros(out_c, np.int64)
    layer.validate()
    return layer


def test_layer_tiles():
    conv = _layer("conv", 12, 40, 20, 3, pad=1, in_bits=2, pool=2)  # 12x12 conv -> 6x6 pooled
    assert perf.layer_tiles(conv, 4, 8, 32) == (-(-36 // 4), 3, 4, 2 * 9 * 2)
    dense = _layer("dense", 1, 784, 10, 1, in_bits=8, output="integer")
    assert perf.layer_tiles(dense, 8, 8, 64) == (1, 2, 1, 8 * 13)


def test_layer_cycles_and_utilisation():
    # 1x1 convolution on an 8x8 map: 64 pixels x 64 channels x 4096 bits -> every PE busy
    conv = _layer("conv", 8, 4096, 64, 1)
    p = perf.layer_cycles(conv, 8, 8, 64)
    assert p.tiles == 64 and p.k_words == 64
    assert p.binary_macs == 64 * 64 * 4096
    assert p.cycles == 64 * 64 + perf.engine_timing(8, 8, 64).pop_latency + 14 + 1
    assert 0.9 <= p.utilisation <= 1.0
    # a dense layer on one image fills one row of eight: utilisation <= 1/8
    dense = _layer("dense", 1, 4096, 64, 1)
    assert perf.layer_cycles(dense, 8, 8, 64).utilisation <= 1 / 8
    assert perf.utilisation(100, 1, 1, 1, 0) == 0.0
