"""Targets with other pipelining (``Target.popcount_levels``, ``Target.mem_regs``): results
unchanged, cycles exactly as the performance model predicts for that target."""

import dataclasses

import pytest

from xnorflow.hw.memories import weight_banks
from xnorflow.sw import perf, program, synthetic
from xnorflow.sw.targets import sim_target

from .test_sequencer import check_run


@pytest.mark.parametrize("levels, geometry", [(1, (2, 2, 16)), (4, (3, 4, 16)), (6, (2, 2, 32))])
def test_cycles_follow_the_targets_popcount_levels(levels, geometry):
    model = synthetic.random_cnn(in_shape=(6, 6, 2), convs=((5, 3, 1, 1, 2),), dense=(6,),
                                 in_bits=2, seed=levels)
    target = dataclasses.replace(sim_target(*geometry), popcount_levels=levels)
    mems = program.build_memories(model, target)
    img = synthetic.random_images(1, 6, 6, 2, seed=levels + 1)
    (out,) = check_run(model, target, img, mems=mems)  # == golden, cycles == the model
    # the pipelining changes the cycle count (a cycle of drain per popcount stage)
    other = dataclasses.replace(target, popcount_levels=2)
    if perf.engine_timing(*geometry, levels) != perf.engine_timing(*geometry, 2):
        assert out["cycles"] != perf.program_cycles(mems, other)


@pytest.mark.parametrize("mem_regs", [1, 2])
@pytest.mark.parametrize("geometry, batch", [((2, 2, 16), 1), ((3, 4, 32), 2), ((8, 8, 32), 1)])
def test_cycles_follow_the_targets_mem_regs(geometry, batch, mem_regs):
    """Registered operands and activation writes (``mem_regs = 1``, ``hx8k``; 2, ``ecp5-85f``:
    one more register beside the memories, the weights' per bank, a two-stage beat decode
    and registered header and descriptor words): the whole accelerator gives golden's
    results in exactly 2 (``mem_regs = 1``) or 5 (``mem_regs = 2``, and 1 per run) cycles per
    layer more. With 2 the
    weights memory is as deep as the network needs (93, 31 and 20 words: not powers of
    two), so the network's weights span several banks."""
    model = synthetic.random_cnn(in_shape=(6, 6, 3), convs=((8, 3, 1, 1, 2),), dense=(12, 5),
                                 in_bits=8, seed=geometry[0] + batch)
    target = dataclasses.replace(sim_target(*geometry), mem_regs=mem_regs)
    mems = program.build_memories(model, target, max_batch=batch)
    if mem_regs == 2:
        need = next(m for m in mems if m.name == "weights").depth
        target = synthetic.banked_target(target, need)
        assert weight_banks(need)[0][1] < need  # the weights use two banks or more
    (out,) = check_run(model, target, img_of(batch), mems=mems, batch=batch)  # == golden
    plain = perf.program_cycles(mems, dataclasses.replace(target, mem_regs=0), batch)
    per_layer, per_run = {1: (2, 0), 2: (5, 1)}[mem_regs]
    assert out["cycles"] == plain + per_layer * len(model.layers) + per_run
    with pytest.raises(ValueError, match="mem_regs must be 0, 1 or 2, not 3"):
        dataclasses.replace(target, mem_regs=3)


def img_of(batch):
    return synthetic.random_images(batch, 6, 6, 3, seed=batch)
