"""The output stage alone: thresholds (ties, clamped ends, both polarities), OR/AND pooling
over passes, lane writes into words, integer scores with every score_mul; against a
reference written from the contract (:mod:`xnorflow.sw.encoding`)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from xnorflow.hw.memories import threshold_storage
from xnorflow.hw.post import OutputStage, soon_lead, threshold_lane_bits
from xnorflow.sw import encoding as enc
from xnorflow.sw import program as prog
from xnorflow.sw.targets import sim_target

DEPTHS = {"program": 64, "weights": 64, "thresholds": 64, "activations": 256, "scores": 256}


def settings(rng, target, integer):
    """A random layer as the output stage sees it."""
    groups = int(rng.integers(1, 6))
    passes = 1 if integer else int(rng.choice([1, 1, 2, 4]))
    rows_total = int(rng.integers(1, 3 * target.rows + 1))
    stride = groups if integer else -(-groups * target.cols // target.width)
    return {"integer": int(integer), "score_mul": int(rng.choice(prog.SCORE_MULS)),
            "passes": passes, "groups": groups, "thr_base": int(rng.integers(0, 8)),
            "out_stride": stride, "out_base": int(rng.integers(0, 40)),
            "tile_words": target.rows * stride, "rows_total": rows_total}


def thresholds(rng, target, s):
    """Threshold words (32-bit lanes): T over the whole clamped range, ties with the
    accumulators below, both polarities and pool ops; or score offsets."""
    acc_max = (1 << target.acc_bits) - 1
    words = {}
    for g in range(s["groups"]):
        lanes = []
        for _ in range(target.cols):
            if s["integer"]:
                # offsets within what the scores' acc_bits + 3 bits hold (check_fits)
                room = (1 << (prog.score_bits(target) - 1)) - 1 - 2 * acc_max
                lanes.append(int(rng.integers(-room, room + 1)) & prog.LANE_MASK)
            else:
                t = int(rng.choice([-1, 0, 1, 5, 7, 8, 9, acc_max, acc_max + 1]))
                lanes.append(int(rng.integers(0, 2)) << prog.LANE_NEG_BIT
                             | int(rng.integers(0, 2)) << prog.LANE_POOL_BIT
                             | (t & ((1 << prog.LANE_T_BITS) - 1)))
        words[s["thr_base"] + g] = lanes
    return words


def reference(target, s, thr, tiles):
    """Expected activation words (address -> value) and score lanes (address -> lanes)."""
    R, C, W = target.rows, target.cols, target.width
    act, scores = {}, {}
    lanes_per_word = 1 if s["integer"] else W // C
    n_tiles = -(-s["rows_total"] // R)
    it = iter(tiles)
    for t in range(n_tiles):
        n_valid = min(R, s["rows_total"] - t * R)
        for g in range(s["groups"]):
            lanes = thr[s["thr_base"] + g]
            j, lane = divmod(g, lanes_per_word)
            pooled = None
            for _ in range(s["passes"]):
                acc = next(it)  # (R, C)
                if s["integer"]:
                    offs = [lv - (1 << 32) if lv >> 31 else lv for lv in lanes]
                    for r in range(n_valid):
                        scores[s["out_base"] + (t * R + r) * s["out_stride"] + g] = [
                            s["score_mul"] * int(acc[r, c]) + offs[c] for c in range(C)]
                    continue
                t_vals = [(lv & ((1 << prog.LANE_T_BITS) - 1)) for lv in lanes]
                t_vals = [v - (1 << prog.LANE_T_BITS) if v >> (prog.LANE_T_BITS - 1) else v
                          for v in t_vals]
                pol = [-1 if lv >> prog.LANE_NEG_BIT & 1 else 1 for lv in lanes]
                ops = [lv >> prog.LANE_POOL_BIT & 1 for lv in lanes]
                bits = enc.threshold_bits(acc, np.array(t_vals), np.array(pol)).astype(np.uint8)
                if pooled is None:
                    pooled = bits
                else:
                    for c in range(C):
                        pooled[:, c] = (pooled[:, c] & bits[:, c] if ops[c] == enc.POOL_AND
                                        else pooled[:, c] | bits[:, c])
            if s["integer"]:
                continue
            for r in range(n_valid):
                a = s["out_base"] + (t * R + r) * s["out_stride"] + j
                old = act.get(a, None) if lane else 0
                val = 0 if old is None else old
                val &= ~(((1 << C) - 1) << (lane * C))
                act[a] = val | int(sum(int(pooled[r, c]) << c for c in range(C))) << (lane * C)
    return act, scores


def simulate(target, s, thr, tiles, rng, gaps):
    dut = OutputStage(target, DEPTHS)
    R, C = target.rows, target.cols
    act, scores = {}, {}
    sb = prog.score_bits(target)

    async def tb(ctx):
        ctx.set(dut.desc.integer, s["integer"])
        mul = s["score_mul"] & 7
        ctx.set(dut.desc.score_mul.two, int(mul == 2 or mul == 6))
        ctx.set(dut.desc.score_mul.zero, int(mul == 0))
        ctx.set(dut.desc.score_mul.neg, mul >> 2)
        ctx.set(dut.desc.passes_m1, s["passes"] - 1)
        ctx.set(dut.desc.groups_m1, s["groups"] - 1)
        for f in ("thr_base", "out_stride", "out_base", "tile_words", "rows_total"):
            ctx.set(getattr(dut.desc, f), s[f])
        if target.weight_rows > 1:
            ctx.set(dut.desc.ksplit, s.get("ksplit", 0))
            ctx.set(dut.desc.ospread, s.get("ospread", 0))
        ctx.set(dut.layer_start, 1)
        await ctx.tick()
        ctx.set(dut.layer_start, 0)
        # tile_done pulses at least max(R, 2) cycles apart (the array's spacing), plus random
        # gaps; row r of a tile in the (r + 1)-th cycle after its pulse, so a pulse may come
        # in the cycle of the previous tile's last row
        pulses, x = [], 3  # the first tile comes a few cycles after layer_start
        for _ in tiles:
            pulses.append(x)
            x += max(R, 2) + int(rng.integers(0, gaps + 1))
        merged = [(0, None)] * (x + R + 2)
        for x0, acc in zip(pulses, tiles, strict=True):
            merged[x0] = (1, merged[x0][1])
            for r in range(R):
                merged[x0 + 1 + r] = (merged[x0 + 1 + r][0], acc[r])
        # the array's tile_soon: soon_lead cycles before each tile_done
        soon = {x0 - soon_lead(target) for x0 in pulses}
        rd = None
        for cyc in range(len(merged) + 6):
            done, row = merged[cyc] if cyc < len(merged) else (0, None)
            ctx.set(dut.tile_done, done)
            if target.weight_rows > 1:
                ctx.set(dut.tile_soon, int(cyc in soon))
            if row is not None:
                for c in range(C):
                    ctx.set(dut.res[c], int(row[c]))
            # the thresholds memory: one-cycle read
            if rd is not None:
                lanes = thr.get(rd, [0] * C)
                for c in range(C):
                    ctx.set(dut.thr_rdata[c], threshold_storage(lanes[c], target.acc_bits))
            rd = ctx.get(dut.thr_raddr)
            await ctx.tick()
            wen = ctx.get(dut.act_wen)
            if wen:
                a = ctx.get(dut.act_waddr)
                data = ctx.get(dut.act_wdata)
                old = act.get(a, 0)
                for lane_i in range(target.width // C):
                    if wen >> lane_i & 1:
                        m = ((1 << C) - 1) << (lane_i * C)
                        old = (old & ~m) | (data & m)
                act[a] = old
            if ctx.get(dut.score_we):
                a = ctx.get(dut.score_waddr)
                vals = []
                for c in range(C):
                    v = ctx.get(dut.score_wdata[c])
                    vals.append(v - (1 << sb) if v >> (sb - 1) else v)
                scores[a] = vals

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return act, scores


GEOMETRIES = [(1, 1, 16), (2, 2, 16), (3, 4, 32), (8, 2, 32), (4, 8, 32)]


@pytest.mark.parametrize("integer", [False, True], ids=["threshold", "integer"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("seed", range(3))
def test_output_stage_matches_contract(geometry, integer, seed):
    target = sim_target(*geometry)
    target = type(target)(**{**target.__dict__, "acc_bits": 6})  # small: ties are common
    rng = np.random.default_rng(seed * 97 + geometry[0] * 7 + geometry[1] + integer)
    s = settings(rng, target, integer)
    thr = thresholds(rng, target, s)
    n_tiles = -(-s["rows_total"] // target.rows) * s["groups"] * s["passes"]
    tiles = [rng.integers(0, 1 << target.acc_bits, size=(target.rows, target.cols))
             for _ in range(n_tiles)]
    want_act, want_scores = reference(target, s, thr, tiles)
    got_act, got_scores = simulate(target, s, thr, tiles, rng, gaps=3)
    assert got_scores == want_scores
    assert got_act == want_act
    assert want_act or want_scores  # something was written


def test_zero_word_on_clear():
    target = sim_target(2, 2, 16)
    dut = OutputStage(target, DEPTHS)
    seen = []

    async def tb(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        seen.append((ctx.get(dut.act_waddr), ctx.get(dut.act_wdata), ctx.get(dut.act_wen)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [(DEPTHS["activations"] - 1, 0, (1 << 8) - 1)]


def split_reference(target, s, thr, tiles):
    """A split reduction (``ksplit``): each tile is one image's ``R`` partial sums per column;
    their sum is thresholded (or scored) once and written to the tile's one output pixel."""
    R, G = target.rows, s["groups"]
    images = s["rows_total"] // R
    # as one unsplit layer whose rows are the images (row r of tile t: image t * R + r)
    one = {**s, "rows_total": images, "tile_words": R * s["tile_words"]}
    zero = np.zeros_like(tiles[0][0])
    sums = [np.vstack([tiles[(t * R + r) * G + g].sum(axis=0) if t * R + r < images else zero
                       for r in range(R)])
            for t in range(-(-images // R)) for g in range(G)]
    return reference(target, one, thr, sums)


@pytest.mark.parametrize("integer", [False, True], ids=["threshold", "integer"])
@pytest.mark.parametrize("geometry", [(2, 2, 16), (8, 2, 32), (4, 8, 32)],
                         ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("seed", range(3))
def test_split_tiles_add_their_rows(geometry, integer, seed):
    """``ksplit`` (``weight_rows = R``): every row of a tile is a partial sum of one output
    pixel; the stage adds them (row onto row in its one adder per column), thresholds or
    scores the total once (ties included: totals land on the thresholds) and writes it to the
    tile's output address; image after image, group after group, with gaps between tiles."""
    R = geometry[0]
    target = sim_target(*geometry, weight_rows=R)
    target = type(target)(**{**target.__dict__, "acc_bits": 6})
    rng = np.random.default_rng(seed * 31 + R + integer)
    s = settings(rng, target, integer)
    images = int(rng.integers(1, 4))
    s.update(ksplit=1, passes=1, rows_total=R * images, tile_words=s["out_stride"])
    thr = thresholds(rng, target, s)
    acc_max = (1 << target.acc_bits) - 1
    tiles = [rng.integers(0, acc_max // R + 1, size=(R, target.cols))
             for _ in range(images * s["groups"])]
    want_act, want_scores = split_reference(target, s, thr, tiles)
    got_act, got_scores = simulate(target, s, thr, tiles, rng, gaps=3)
    assert got_scores == want_scores
    assert got_act == want_act
    assert len(want_act or want_scores) >= images  # one word (or group) per image at least


def spread_reference(target, s, thr, tiles):
    """Spread groups (``ospread``): tile set ``k`` of image ``n`` holds column groups
    ``k * R + r`` in its rows; row ``r`` is thresholded with its own group's word and written
    to that group's lane of the image's words."""
    R, C, W = target.rows, target.cols, target.width
    lanes_per_word = W // C
    act = {}
    it = iter(tiles)
    for n in range(s["rows_total"] // R):
        for k in range(s["groups"]):
            acc = next(it)
            for r in range(R):
                g = k * R + r
                # row r alone, as a one-group, one-row layer with group g's threshold word
                one = {**s, "groups": 1, "rows_total": 1, "thr_base": 0, "out_stride": 0,
                       "out_base": 0}
                bits, _ = reference(target, one, {0: thr[s["thr_base"] + g]}, [acc[r:r + 1]])
                j, lane = divmod(g, lanes_per_word)
                a = s["out_base"] + n * s["tile_words"] + j
                old = act.get(a, 0) if lane else 0
                act[a] = old & ~(((1 << C) - 1) << (lane * C)) | bits[0] << (lane * C)
    return act


@pytest.mark.parametrize("geometry", [(2, 2, 16), (8, 2, 32), (4, 8, 32), (2, 8, 16),
                                      (8, 8, 32)], ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("seed", range(3))
def test_spread_rows_take_their_own_groups(geometry, seed):
    """``ospread`` (``weight_rows = R``): row ``r`` of tile set ``k`` is column group
    ``k * R + r`` of one image: each row is thresholded with its own group's word (read one
    per cycle from ``tile_soon`` on) and written to its own lane (``R`` below and above the
    lanes per word); image after image, with gaps between tiles."""
    R = geometry[0]
    target = sim_target(*geometry, weight_rows=R)
    target = type(target)(**{**target.__dict__, "acc_bits": 6})
    rng = np.random.default_rng(seed * 53 + R)
    sets, images = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = -(-sets * R * target.cols // target.width)
    s = {"integer": 0, "score_mul": 0, "passes": 1, "groups": sets, "ospread": 1,
         "thr_base": int(rng.integers(0, 8)), "out_stride": stride,
         "out_base": int(rng.integers(0, 40)), "tile_words": stride, "rows_total": R * images}
    thr = thresholds(rng, target, {**s, "groups": sets * R})
    tiles = [rng.integers(0, 1 << target.acc_bits, size=(R, target.cols))
             for _ in range(images * sets)]
    want = spread_reference(target, s, thr, tiles)
    got_act, got_scores = simulate(target, s, thr, tiles, rng, gaps=3)
    assert got_scores == {}
    assert got_act == want
    assert len(want) == images * stride


def test_threshold_register_is_a_plain_register_after_the_ram():
    """``mem_regs = 2`` (ecp5-85f): the threshold word's register ``thr_q`` takes the RAM's
    read data as they are, with no reset and no enable in front of it, so the ECP5 build's
    output-register pass can move it into the DP16KD (``xnorflow.synth.outreg`` moves only
    such registers; with a reset the thresholds' RAMs kept their 5.6 ns clock-to-out on the
    ULX3S's critical path). Other targets have no such register."""
    import re

    from amaranth.back import rtlil

    from xnorflow.hw.memories import memory_depths
    from xnorflow.sw.targets import TARGETS

    def registers_of_thr_q(target):
        text = rtlil.convert(OutputStage(target, memory_depths(target)), name="post")
        cells = re.findall(r"\n  cell (\S+) \S+\n(.*?)\n  end", text, re.S)
        return [(kind, body) for kind, body in cells if "connect \\Q \\thr_q" in body]

    t = TARGETS["ecp5-85f"]
    (kind, body), = registers_of_thr_q(t)
    assert kind == "$dff"  # no $sdff/$adff (reset) and no $dffe (enable)
    width = t.cols * threshold_lane_bits(t.acc_bits)
    assert f"connect \\D \\thr_rdata [{width - 1}:0]" in body
    assert registers_of_thr_q(TARGETS["up5k"]) == []
