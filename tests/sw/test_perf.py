"""The performance model (sw/perf.py): pure Python, the documented formulas, consistent sums.
The gateware's ``cycles`` register equals :func:`perf.program_cycles` exactly in
tests/hw/test_sequencer.py, test_accelerator.py and test_host.py."""

import subprocess
import sys

import numpy as np
import pytest

from xnorflow.sw import encoding as enc
from xnorflow.sw import perf, synthetic
from xnorflow.sw.program import build_memories, decode_program
from xnorflow.sw.targets import TARGETS, sim_target


def test_importable_without_amaranth():
    code = ("import sys; sys.modules['amaranth'] = None\n"
            "import xnorflow.sw.perf as p\n"
            "print(p.engine_timing(8, 8, 64).popcount_latency)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == perf.engine_timing(8, 8, 64).popcount_latency


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
    # more levels per stage: fewer registers, never a longer latency
    assert perf.popcount_schedule(width, 3)[1] <= lat


def test_engine_timing_is_the_popcount_plus_two_registers():
    for levels in (1, 2, 3, 4):
        t = perf.engine_timing(4, 2, 32, levels)
        assert t.popcount_latency == perf.popcount_schedule(32, levels)[1]
        assert t.array_latency == t.popcount_latency + 2
        for regs in (1, 2):  # operand register stages: one cycle each
            r = perf.engine_timing(4, 2, 32, levels, mem_regs=regs)
            assert (r.popcount_latency, r.array_latency) == (t.popcount_latency,
                                                             t.array_latency + regs)
    ecp5 = TARGETS["ecp5-85f"]
    assert perf.target_timing(ecp5) == perf.engine_timing(8, 8, 32, ecp5.popcount_levels, 2)


def test_layer_cycles_formula():
    """Fetch + prologue + tiles * groups * entries + drain, tiles = ceil(batch * rows / R)."""
    desc = {"rows_per_image": 10, "groups": 3, "beats": 7, "entries": 2}
    for rows, batch in ((4, 1), (4, 2), (8, 3), (1, 1)):
        tiles, cyc = perf.layer_cycles(desc, rows, batch, popcount_latency=5)
        assert tiles == -(-batch * 10 // rows)
        assert cyc == (perf.LAYER_FETCH + rows + perf.PROLOGUE + tiles * 3 * 7 + 5 + rows
                       + perf.DRAIN)
        # mem_regs: a cycle per stage more through the array and one more to the write
        assert perf.layer_cycles(desc, rows, batch, 5, mem_regs=1) == (tiles, cyc + 2)
        # mem_regs = 2: two stages, the write register, a second decode stage and the
        # descriptor's words from a register
        assert perf.layer_cycles(desc, rows, batch, 5, mem_regs=2) == (tiles, cyc + 5)


def test_utilisation_edge_cases():
    assert perf.utilisation(100, 1, 1, 1, 0) == 0.0
    assert perf.utilisation(2 * 3 * 4 * 10, 2, 3, 4, 10) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_network_perf_is_the_program_sum(seed):
    """Per-layer cycles add up to program_cycles of the very program build_memories writes,
    for random networks, geometries and batches; utilisation within (0, 1]."""
    model = synthetic.random_network(seed)
    target = synthetic.geometry_target(*synthetic.random_geometry(seed))
    for batch in sorted({1, min(2, target.rows)}):
        p = perf.network_perf(model, target, batch=batch, max_batch=batch)
        mems = build_memories(model, target, max_batch=batch)
        assert p.cycles == perf.program_cycles(mems, target, batch)
        assert p.cycles == perf.RUN_START + sum(lp.cycles for lp in p.layers)
        assert p.binary_macs == sum(lp.binary_macs for lp in p.layers)
        assert 0 < p.utilisation <= 1
        assert all(0 < lp.utilisation <= 1 for lp in p.layers)
        _, descs = decode_program(next(m for m in mems if m.name == "program").words)
        assert [(lp.entries, lp.beats) for lp in p.layers] == [(d["entries"], d["beats"])
                                                                 for d in descs]


def test_a_batch_fills_the_rows_of_a_dense_layer():
    """One image of an MLP uses one row of R; R images use them all: per-image cycles of the
    dense layers shrink by about R."""
    model = synthetic.random_mlp((256, 128, 10), in_shape=(16, 16, 1), seed=3)
    target = sim_target(4, 2, 32)
    one = perf.network_perf(model, target, batch=1, max_batch=4)
    four = perf.network_perf(model, target, batch=4, max_batch=4)
    run_one = sum(lp.tiles * lp.groups * lp.beats for lp in one.layers)
    run_four = sum(lp.tiles * lp.groups * lp.beats for lp in four.layers)
    assert run_four == run_one  # the four images share every beat
    assert four.utilisation > 3 * one.utilisation


def test_one_image_uses_every_row_with_a_weight_word_per_row():
    """With a weight word per row (weight_rows = R) one image's dense layers use the rows:
    the digits MLP's hidden layers spread their column groups over them (network_perf names
    each layer's mapping) and take about R times fewer beats than one row of R."""
    model = synthetic.random_mlp((64, 256, 256, 10), in_shape=(8, 8, 1), seed=4)
    wide = sim_target(8, 8, 32, weight_rows=8)
    one = perf.network_perf(model, wide, batch=1, max_batch=1)
    plain = perf.network_perf(model, sim_target(8, 8, 32), batch=1, max_batch=1)
    assert [lp.mapping for lp in one.layers] == ["spread", "spread", "plain"]
    assert [lp.mapping for lp in plain.layers] == ["plain"] * 3
    for a, b in zip(one.layers[:2], plain.layers[:2], strict=True):
        assert a.tiles * a.groups * a.beats * 8 == b.tiles * b.groups * b.beats
    assert one.utilisation > 2 * plain.utilisation


def test_big_convolution_keeps_the_array_busy():
    """A wide 3x3 convolution on the ECP5 geometry: most cycles are beats of the array."""
    model = synthetic.random_model(0, [dict(kind="conv", out_c=64, k=3, stride=1, pad=1),
                                       dict(kind="dense", out_c=10)], (16, 16, 256), in_bits=1)
    p = perf.network_perf(model, TARGETS["ecp5-85f"])
    assert p.layers[0].utilisation > 0.8


@pytest.mark.parametrize("seed", range(12))
def test_the_bound_is_a_bound(seed):
    """network_bound is a lower bound of the cycles the compiler's mapping takes, layer by
    layer, on random networks, geometries and batches (a bound above the model would make
    the ceiling the report prints a lie)."""
    model = synthetic.random_network(seed)
    target = synthetic.geometry_target(*synthetic.random_geometry(seed))
    for batch in sorted({1, target.rows}):
        p = perf.network_perf(model, target, batch=batch, max_batch=batch)
        b = perf.network_bound(model, target, batch=batch)
        assert b.binary_macs == p.binary_macs
        for lp, lb in zip(p.layers, b.layers, strict=True):
            assert lp.name == lb.name
            assert lb.cycles == max(lb.slot_cycles, lb.weight_cycles, lb.result_cycles) > 0
            assert lp.tiles * lp.groups * lp.beats >= lb.cycles
            assert 0 < lb.packing <= 1
        assert p.utilisation <= b.utilisation <= 1


def test_the_bound_is_tight_where_the_array_is_full_and_names_the_limits():
    """A wide convolution at a full batch reaches its slot bound within 1 %; a dense layer of
    one image is bounded by the weight port (C lanes per cycle), and a 1-channel first layer
    by packing (9 window bits of each 32-bit beat)."""
    conv = synthetic.random_model(0, [dict(kind="conv", out_c=64, k=3, stride=1, pad=1),
                                      dict(kind="dense", out_c=10)], (16, 16, 256), in_bits=1)
    t = synthetic.geometry_target(8, 8, 32)  # ecp5-85f's array, memories that hold batch 8
    p = perf.network_perf(conv, t, batch=t.rows)
    b = perf.network_bound(conv, t, batch=t.rows)
    assert b.layers[0].limit == "slots"
    beats = p.layers[0].tiles * p.layers[0].groups * p.layers[0].beats
    assert b.layers[0].cycles <= beats <= 1.01 * b.layers[0].cycles
    fm = synthetic.fashion_cnn(seed=0)
    b1 = perf.network_bound(fm, t, batch=1)
    assert [lb.limit for lb in b1.layers] == ["slots", "slots", "weights", "weights"]
    assert b1.layers[0].packing == pytest.approx(9 / 32)
    # fc0: 256 outputs over 8 columns, 3136 bits = 98 words each: 32 * 98 weight words
    assert b1.layers[2].weight_cycles == 32 * 98


@pytest.mark.parametrize("seg_bits, in_bits, width, planes", [
    (9, 8, 32, 2),    # a 3x3 grey window: [x_b, x_b, x_(b-1)] = 27 bits
    (4, 8, 32, 3),    # 2x2: 4 * 7 = 28 bits
    (1, 8, 32, 5),    # 1 * 31 bits
    (32, 8, 32, 1),   # a full word packs nothing
    (9, 1, 32, 1),    # one plane
    (9, 8, 16, 1),    # 27 > 16
    (5, 2, 16, 2),    # 15 bits, and 2 planes is all there is
])
def test_packed_planes(seg_bits, in_bits, width, planes):
    assert perf.packed_planes(seg_bits, in_bits, width) == planes


@pytest.mark.parametrize("seed", range(6))
def test_plane_packing_is_exact(seed):
    """The identity WhatIf.plane_packing rests on, computed with the encoding contract: a
    word carrying plane b twice and plane b-1 once, against the weights three times, counts
    2 P_b + P_(b-1) (pad bits never agree), so a Horner step of 4 per word gives the
    accumulator sum_b 2^b P_b of the unpacked planes."""
    rng = np.random.default_rng(seed)
    k, bits, W = 9, 8, 32
    u = rng.integers(0, 256, size=k)
    planes = enc.value_planes(u, bits)  # (bits, k), plane b = bit b
    w = rng.integers(0, 2, size=k)
    wword = enc.pack_bits(np.concatenate([w, w, w]), W, enc.WEIGHT_PAD_BIT)
    per_plane = [int(enc.xnor_popcount(enc.pack_bits(planes[b], W),
                                       enc.pack_bits(w, W, enc.WEIGHT_PAD_BIT)))
                 for b in range(bits)]
    acc = 0
    for hi in range(bits - 1, 0, -2):  # planes (7, 6), (5, 4), ...: MSB first
        word = enc.pack_bits(np.concatenate([planes[hi], planes[hi], planes[hi - 1]]), W)
        count = int(enc.xnor_popcount(word, wword))
        assert count == 2 * per_plane[hi] + per_plane[hi - 1]
        acc = 4 * acc + count
    assert acc == int(enc.accumulate_planes(per_plane))


@pytest.mark.parametrize("seed", range(8))
def test_what_if_bounds(seed):
    """WhatIf() is the array as built; each change can only lower a layer's bound, and only
    the bound it names: more weight words per cycle lower `weights`, more result rows
    `results`, plane packing `slots`."""
    model = synthetic.random_network(seed)
    target = synthetic.geometry_target(*synthetic.random_geometry(seed))
    R = target.rows
    for batch in sorted({1, R}):
        base = perf.network_bound(model, target, batch=batch)
        assert perf.network_bound(model, target, batch=batch, hw=perf.WhatIf()) == base
        cases = {"weight_cycles": perf.WhatIf(weight_words=R),
                 "result_cycles": perf.WhatIf(result_rows=R),
                 "slot_cycles": perf.WhatIf(plane_packing=True)}
        for field, hw in cases.items():
            b = perf.network_bound(model, target, batch=batch, hw=hw)
            assert b.utilisation >= base.utilisation
            for lb, l0 in zip(b.layers, base.layers, strict=True):
                for f in ("slot_cycles", "weight_cycles", "result_cycles"):
                    if f == field:
                        assert getattr(lb, f) <= getattr(l0, f)
                    else:
                        assert getattr(lb, f) == getattr(l0, f)


def test_what_if_on_the_fashion_cnn():
    """The figures docs/accelerator.md quotes: on 8x8x32 at batch 1 the Fashion-MNIST CNN's
    fc0 needs the wider weight port, conv0 both packing and more result rows; all three
    together leave every layer slot-bound."""
    t = synthetic.geometry_target(8, 8, 32)
    fm = synthetic.fashion_cnn(seed=0)
    b = perf.network_bound(fm, t, batch=1, hw=perf.WhatIf(weight_words=8))
    assert b.layers[2].weight_cycles == 32 * 98 // 8
    conv0 = [perf.network_bound(fm, t, batch=1, hw=hw).layers[0] for hw in (
        perf.WhatIf(), perf.WhatIf(plane_packing=True), perf.WhatIf(result_rows=8),
        perf.WhatIf(result_rows=8, plane_packing=True))]
    assert [lb.cycles for lb in conv0] == [3136, 3136, 3136, 1568]
    every = perf.network_bound(fm, t, batch=1, hw=perf.WhatIf(8, 8, True))
    assert {lb.limit for lb in every.layers} == {"slots"}
