"""Targets with other popcount pipelining (``Target.popcount_levels``): results unchanged,
cycles exactly as the performance model predicts for that target."""

import dataclasses

import pytest

from xnorflow.sw import golden, perf, program, synthetic
from xnorflow.sw.targets import sim_target

from .test_sequencer import run_sequencer, signed32


@pytest.mark.parametrize("levels, geometry", [(1, (2, 2, 16)), (4, (3, 4, 16)), (6, (2, 2, 32))])
def test_cycles_follow_the_targets_popcount_levels(levels, geometry):
    model = synthetic.random_cnn(in_shape=(6, 6, 2), convs=((5, 3, 1, 1, 2),), dense=(6,),
                                 in_bits=2, seed=levels)
    target = dataclasses.replace(sim_target(*geometry), popcount_levels=levels)
    mems = program.build_memories(model, target)
    img = synthetic.random_images(1, 6, 6, 2, seed=levels + 1)[0]
    header, _ = program.decode_program(mems[0].words)
    out = run_sequencer(target, mems, program.pack_input(img, header, target.width))
    gold = golden.run(model, img)
    assert out["error"] == 0 and out["done"] == 1
    assert [signed32(v) for v in out["scores"][:6]] == gold.scores[0].tolist()
    assert out["result"] == int(gold.predictions[0])
    assert out["cycles"] == perf.predict_network_cycles(model, target)
    # the pipelining changes the cycle count (one cycle of latency per tile drain at least)
    if levels != 2:
        assert out["cycles"] != perf.predict_network_cycles(model, target, levels_per_stage=2)

