"""Program and memory layout: the images alone reproduce the golden model exactly."""

import dataclasses

import numpy as np
import pytest

from xnorflow.sw import golden, program, synthetic
from xnorflow.sw.errors import UserError
from xnorflow.sw.targets import TARGETS, sim_target

MODELS = {
    "mlp": lambda: synthetic.random_mlp(),
    "cnn": lambda: synthetic.random_cnn(),
    "cnn-odd": lambda: synthetic.random_cnn(
        in_shape=(9, 7, 3), convs=((5, 3, 2, 1, 1), (40, 3, 1, 0, 2)), dense=(20, 7),
        in_bits=3, seed=3),
    "cnn-overlap-pool": lambda: synthetic.random_cnn(
        in_shape=(10, 10, 2), convs=((6, 2, 1, 2, 3, 2), (33, 3, 2, 1, 1)), dense=(5,),
        in_bits=1, seed=4),
    # a 3-wide window over a 2-wide padded input: row_skip = (in_w - kw) * cw < 0
    "cnn-narrow": lambda: synthetic.random_cnn(
        in_shape=(6, 2, 3), convs=((4, 3, 1, 1, 1),), dense=(5,), in_bits=2, seed=5),
}
GEOMETRIES = [(4, 4, 32), (3, 2, 16), (1, 8, 64), (5, 1, 16)]


@pytest.mark.parametrize("windows", [None, False], ids=["auto", "segments"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("name", list(MODELS))
def test_execute_equals_golden(name, geometry, windows):
    model = MODELS[name]()
    target = sim_target(*geometry)
    mems = program.build_memories(model, target, input_windows=windows)
    images = synthetic.random_images(6, model.in_h, model.in_w, model.in_c, seed=11)
    gold = golden.run(model, images)
    for i in range(len(images)):
        res = program.execute(mems, images[i], target)
        assert res.scores.tolist() == gold.scores[i].tolist()
        assert res.predicted == int(gold.predictions[i])
        assert len(res.layer_outputs) == len(gold.activations)
        for mine, ref in zip(res.layer_outputs, gold.activations, strict=True):
            np.testing.assert_array_equal(mine, ref[i])


def test_hidden_bits_are_not_constant():
    model = MODELS["cnn"]()
    gold = golden.run(model, synthetic.random_images(8, 8, 8, 1, seed=2))
    for act in gold.activations:
        assert 0.2 < act.mean() < 0.8


def test_memories_have_declared_widths():
    target = TARGETS["up5k"]
    mems = {m.name: m for m in program.build_memories(MODELS["mlp"](), target)}
    assert set(mems) == {"program", "weights", "thresholds"}
    for name, m in mems.items():
        assert m.width == target.word_bits(name)
        assert m.depth <= target.depth(name)
        assert int(max(int(v) for v in m.words)) < 1 << m.width


def test_program_header_round_trip():
    model = MODELS["cnn-odd"]()
    target = sim_target(3, 2, 16)
    mems = {m.name: m for m in program.build_memories(model, target, input_windows=False)}
    header, descs = program.decode_program(mems["program"].words)
    assert header["n_layers"] == len(model.layers) == len(descs)
    assert program.decode_geometry(header["geometry"]) == (3, 2, 16)
    R, C, W = 3, 2, 16
    for i, (lay, d) in enumerate(zip(model.layers, descs, strict=True)):
        cw = -(-lay.in_c // W)
        groups = -(-lay.out_c // C)
        beats = lay.in_bits * lay.kh * lay.kw * cw  # one beat per weight word and plane
        entries = lay.pool_k ** 2 * max(beats, program.tile_beats(target))
        entries = max(entries, -(-(R + 1) // groups))  # time to prefetch the next rows
        stride = groups if lay.output == "integer" else -(-lay.out_c // W)
        assert (d["index"], d["out_c"], d["integer"]) == (i, lay.out_c, lay.output == "integer")
        assert (d["groups"], d["passes"], d["beats"]) == (groups, lay.pool_k ** 2, entries)
        assert 2 <= d["entries"] <= d["beats"]
        assert d["group_words"] == lay.kh * lay.kw * cw
        assert (d["out_stride"], d["tile_words"]) == (stride, R * stride)
        assert d["rows_per_image"] == d["out_h"] * d["out_w"]
    # layers follow each other in the weights and thresholds memories
    for a, b in zip(descs, descs[1:], strict=False):
        assert b["w_base"] == a["w_base"] + a["groups"] * a["group_words"]
        assert b["thr_base"] == a["thr_base"] + a["groups"]


def test_too_big_names_layer_memory_and_bits():
    model = synthetic.random_mlp(sizes=(256, 512, 10), in_shape=(16, 16, 1), batch=8)
    with pytest.raises(UserError) as e:
        program.build_memories(model, TARGETS["hx8k"])
    msg = str(e.value)
    assert "fc0" in msg and "'weights'" in msg and "bits" in msg and "hx8k" in msg


def test_multibit_hidden_activations_refused():
    model = MODELS["mlp"]()
    model.layers[0].out_bits = 2
    model.layers[0].out_signed = False
    model.layers[0].thresholds = np.zeros((32, 3), dtype=np.int64)
    model.layers[1].in_bits = 2
    model.layers[1].signed_input = False
    with pytest.raises(UserError, match="fc0.*out_bits=2"):
        program.check_fits(model, TARGETS["sim"])


def test_wrong_geometry_refused():
    model = MODELS["mlp"]()
    mems = program.build_memories(model, sim_target(4, 4, 32))
    with pytest.raises(UserError, match="built for 4x4x32"):
        program.execute(mems, np.zeros((8, 8, 1), np.uint8), sim_target(2, 4, 32))


def test_bad_magic_refused():
    with pytest.raises(UserError, match="magic"):
        program.decode_program(np.zeros(64, dtype=np.uint64))


def test_input_windows_cut_first_layer_beats():
    """A 1-channel first layer: host-side windows take 1 word per output instead of 9."""
    model = synthetic.random_cnn(in_shape=(8, 8, 1), in_bits=8, seed=1)
    target = sim_target(4, 4, 32)
    assert program.windows_pay(model.layers[0], 32)
    hw, used = program.hardware_model(model, target)
    assert used and hw.layers[0].kh == 1 and hw.layers[0].in_c == 9
    for windows, kwords in ((True, 1), (False, 9)):
        mems = program.build_memories(model, target, input_windows=windows)
        header, descs = program.decode_program(mems[0].words)
        assert descs[0]["group_words"] == kwords
        assert header["input_mode"] == int(windows)
        assert (header["in_h"], header["in_w"], header["in_c"]) == (8, 8, 1)


def test_windows_not_used_when_input_memory_grows():
    model = synthetic.random_cnn(in_shape=(6, 6, 40), convs=((8, 3, 1, 1, 1),), dense=(4,),
                                 in_bits=1, seed=2)
    assert not program.windows_pay(model.layers[0], 32)  # 360 bits: 12 words vs 2 per pixel


@pytest.mark.parametrize("name", sorted(MODELS))
def test_run_length_tables_play_the_same_beats(name):
    """compress_table keeps every beat (expand_table gives them back), runs stay within
    MAX_RUN, the last entry is a single beat, and runs never cross a flag boundary."""
    model = MODELS[name]()
    for target in (sim_target(3, 2, 16), sim_target(8, 2, 32)):
        for layer in program.hardware_model(model, target)[0].layers:
            single = program.beat_table(layer, target)
            table = program.compress_table(single)
            def norm(b):  # a bubble's offset and taps are never used
                b = tuple(int(x) for x in b)
                return b if b[2] else (0, 0, *b[2:])

            beats = [norm(program._beat(v)[:6]) for v in single]
            assert [norm(b) for b in program.expand_table(table)] == beats
            runs = [program._beat(v)[6] for v in table]
            assert max(runs) <= program.MAX_RUN and runs[-1] == 0 and len(table) >= 2
            assert len(table) <= len(single)


def test_dense_8bit_input_layer_is_two_entries_per_run_of_words():
    """784 8-bit pixels at W = 32: each plane's 25 consecutive words are runs (16 + 9)."""
    model = synthetic.random_mlp((784, 32, 10), in_shape=(28, 28, 1), seed=0)
    target = sim_target(8, 2, 32)
    hw, _ = program.hardware_model(model, target)
    table = program.compress_table(program.beat_table(hw.layers[0], target))
    assert sum(program._beat(v)[6] + 1 for v in table) == 8 * 25
    assert len(table) == 8 * 2 + 1  # the table's last beat is split off


# ----- split reductions (Target.weight_rows = R) --------------------------------------------
SPLIT_GEOMETRIES = [(2, 2, 16), (4, 4, 32), (8, 2, 32), (8, 8, 32), (4, 8, 64)]


@pytest.mark.parametrize("geometry", SPLIT_GEOMETRIES, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("seed", range(6))
def test_split_reductions_equal_golden(geometry, seed):
    """On targets with a weight word per row, random networks (dense layers of every size:
    reductions shorter than R words leave rows empty, others end in a partial row; 1..8
    input planes) run from the images alone exactly as the golden model, one image or a
    batch per run; the split layers and the others both occur."""
    R = geometry[0]
    target = sim_target(*geometry, weight_rows=R)
    rng = np.random.default_rng(seed)
    model = synthetic.random_network(seed * 7 + R, max_hidden=3, max_hw=5, max_c=48)
    batch = int(rng.integers(1, R + 1)) if seed % 2 else 1
    mems = program.build_memories(model, target, max_batch=batch)
    _, descs = program.decode_memories(mems)
    images = synthetic.random_images(batch, model.in_h, model.in_w, model.in_c, seed=seed)
    gold = golden.run(model, images)
    for n, res in enumerate(program.execute_batch(mems, images, target)):
        assert res.scores.tolist() == gold.scores[n].tolist()
        for mine, ref in zip(res.layer_outputs, gold.activations, strict=True):
            np.testing.assert_array_equal(mine, ref[n])
    hw_model, _ = program.hardware_model(model, target)
    for d, lay in zip(descs, hw_model.layers, strict=True):
        assert d["ksplit"] == program.splits_k(lay, target, batch)
        assert d["ospread"] == program.spreads(lay, target, batch)
        kw = program.k_words(lay, target.width)
        if d["ksplit"]:
            assert d["rows_per_image"] == R and d["tile_words"] == d["out_stride"]
            assert d["w_base"] % R == 0 and d["group_words"] == R * program.k_chunk(lay, target)
        if d["ospread"]:  # a tile per output pixel (conv layers too)
            oh, ow = program._out_shape(lay)
            assert d["rows_per_image"] == R * oh * ow and d["tile_words"] == d["out_stride"]
            assert d["w_base"] % R == 0 and d["group_words"] == R * kw
            assert d["groups"] == -(-lay.out_c // (R * target.cols))


def test_split_and_spread_both_occur():
    """The random networks of test_split_reductions_equal_golden exercise both mappings
    that give each row its own weight word."""
    seen = set()
    for geometry in SPLIT_GEOMETRIES:
        R = geometry[0]
        target = sim_target(*geometry, weight_rows=R)
        for seed in range(6):
            model = synthetic.random_network(seed * 7 + R, max_hidden=3, max_hw=5, max_c=48)
            batch = int(np.random.default_rng(seed).integers(1, R + 1)) if seed % 2 else 1
            hw_model, _ = program.hardware_model(model, target)
            seen |= {program.mapping(lay, target, batch) for lay in hw_model.layers}
    assert seen == {program.PLAIN, program.KSPLIT, program.SPREAD}


def test_mapping_is_chosen_only_where_it_saves_beats():
    """mapping: split or spread only with weight_rows = R, split only dense layers (conv
    layers: test_conv_layers_spread_...), and only when
    it takes fewer beats than R images' plain tile (ties keep plain, then split). The
    Fashion-MNIST CNN's fc256 (98 words, 32 groups on 8x8x32): plain 32 x 98 beats per 8
    images, split 32 x 13 per image, spread 4 x 98 per image; its 8-word fc10 already takes
    the tile's minimum R beats and is the integer layer (never spread)."""
    model = synthetic.fashion_cnn(seed=1)
    wide = TARGETS["ecp5-85f"]
    narrow = sim_target(8, 8, 32)
    hw_model, _ = program.hardware_model(model, wide)
    by = {lay.name: lay for lay in hw_model.layers}
    assert program.k_chunk(by["fc0"], wide) == 13
    assert program.spreads(by["fc0"], wide, 1) and program.spreads(by["fc0"], wide, 7)
    assert program.mapping(by["fc0"], wide, 8) == program.PLAIN  # 8 x 4 x 98 = 32 x 98
    assert program.mapping(by["fc1"], wide, 1) == program.PLAIN  # 8 words: 8 beats any way
    assert {program.mapping(lay, narrow, 1) for lay in hw_model.layers} == {program.PLAIN}
    assert program.KSPLIT not in {program.mapping(by[n], wide, b) for n in ("conv0", "conv1")
                                  for b in (1, 8)}
    # 512 -> 32 on 8x8x32: 4 groups would spread over 8 rows, two output words for one: split
    small = synthetic.random_mlp(sizes=(512, 32, 10), in_shape=(1, 1, 512), in_bits=1, seed=2)
    assert program.mapping(small.layers[0], wide, 1) == program.KSPLIT
    # the digits MLP's hidden layers (2 words x 8 planes, then 8 words): spread for one image
    digits = synthetic.random_mlp(sizes=(64, 256, 256, 10), in_shape=(8, 8, 1), in_bits=8,
                                  seed=4)
    digits, _ = program.hardware_model(digits, wide)
    assert [program.mapping(lay, wide, 1) for lay in digits.layers] == [
        program.SPREAD, program.SPREAD, program.PLAIN]


def test_a_model_that_fits_plain_still_compiles_for_one_image():
    """Split and spread layouts take more weight words than the plain one (a split pads K
    to R * ceil(K / R), a spread G groups to ceil(G / R) * R): a layer goes back to plain,
    the costliest first, until the weights fit. An F-MNIST MLP 784-672-672-10 fits
    ecp5-85f's 4,096 weight words plain (3,906) but not split (4,752)."""
    target = TARGETS["ecp5-85f"]
    model = synthetic.random_mlp(sizes=(784, 672, 672, 10), in_shape=(28, 28, 1), in_bits=8,
                                 seed=1)
    hw_model, _ = program.hardware_model(model, target)
    want = [program.mapping(lay, target, 1) for lay in hw_model.layers]
    assert want == [program.KSPLIT] * 3  # 672 = 84 groups: 88 spread would need a 22nd word
    pl = program.place(hw_model, target, 1)
    assert pl.mode == [program.PLAIN, program.PLAIN, program.KSPLIT]
    assert -(-pl.weight_words // target.weight_rows) <= target.depth("weights")
    mems = program.build_memories(model, target, max_batch=1)
    _, descs = program.decode_memories(mems)
    assert [d["ksplit"] for d in descs] == [0, 0, 1]
    # with room for the split layout every layer keeps its fastest mapping
    roomy = sim_target(8, 8, 32, weight_rows=8)
    assert program.place(hw_model, roomy, 1).mode == want


def test_conv_layers_spread_where_the_last_tile_of_pixels_leaves_rows_idle():
    """A conv layer of one image is spread (a tile per output pixel, its column groups over
    the rows) where that plays fewer beats than the plain tiles of R pixels: the F-MNIST CNN's
    conv64 on 7 x 7 pooled pixels (49 tile sets of 36 beats instead of 7 tiles x 8 groups),
    never for a multiple of R pixels (a tie keeps plain), nor when it pools over more than
    one tile set (the output stage's threshold words restart only after the last set);
    the programs == golden."""
    wide = TARGETS["ecp5-85f"]
    cnn = synthetic.fashion_cnn(seed=1)
    hw_cnn, _ = program.hardware_model(cnn, wide)
    assert [program.mapping(lay, wide, 1) for lay in hw_cnn.layers] == [
        program.PLAIN, program.SPREAD, program.SPREAD, program.PLAIN]
    # eight images: 392 pooled pixels fill 49 tiles of 8 rows exactly
    assert program.mapping(hw_cnn.layers[1], wide, 8) == program.PLAIN
    R = 4
    target = sim_target(R, 2, 16, weight_rows=R)
    for convs, want in [(((8, 3, 1, 1, 2),), program.SPREAD),    # 9 pixels, 4 groups
                        (((16, 3, 1, 1, 2),), program.PLAIN),    # pools over 2 tile sets
                        (((16, 3, 2, 1, 1),), program.SPREAD),   # 3 x 3, 2 tile sets
                        (((8, 3, 1, 0, 1),), program.PLAIN),     # 4 x 4: 4 full tiles
                        (((8, 3, 1, 0, 2), ), program.PLAIN)]:   # 2 x 2 pooled: one tile
        model = synthetic.random_cnn(in_shape=(6, 6, 1), convs=convs, dense=(5,), in_bits=2,
                                     seed=11)
        hw_model, _ = program.hardware_model(model, target)
        assert program.mapping(hw_model.layers[0], target, 1) == want, convs
        mems = program.build_memories(model, target, max_batch=1)
        _, descs = program.decode_memories(mems)
        assert bool(descs[0]["ospread"]) == (want == program.SPREAD)
        images = synthetic.random_images(2, 6, 6, 1, seed=12)
        gold = golden.run(model, images)
        for i in range(2):
            res = program.execute(mems, images[i], target)
            assert np.array_equal(res.layer_outputs[0], gold.activations[0][i])
            assert np.array_equal(res.scores, gold.scores[i])


def test_a_spread_conv_layer_needs_its_rows_to_fit_the_sequencer():
    """A spread conv layer has R rows per output pixel; the sequencer counts an image's rows
    in a register one bit wider than an activation address: 17 x 17 pixels x 8 rows = 2,312
    do not fit 11 bits (1,024 activation words), so the layer stays plain there and is
    spread where the activations are deeper."""
    R = 8
    model = synthetic.random_cnn(in_shape=(17, 17, 1), convs=((16, 3, 1, 1, 1),) * 2,
                                 dense=(3,), in_bits=1, seed=13)
    roomy = sim_target(R, 2, 16, weight_rows=R)
    model, _ = program.hardware_model(model, roomy)
    assert program.mapping(model.layers[1], roomy, 1) == program.SPREAD

    def with_activations(words):
        mem = dict(roomy.memories)
        mem["activations"] = (mem["activations"][0], words)
        return dataclasses.replace(roomy, name=f"act{words}", memories=mem)

    assert program.place(model, roomy, 1).mode[1] == program.PLAIN  # sized for its maps
    assert program.place(model, with_activations(1024), 1).mode[1] == program.PLAIN
    deep = with_activations(2048)
    assert program.place(model, deep, 1).mode[1] == program.SPREAD
    mems = program.build_memories(model, deep, max_batch=1)
    _, descs = program.decode_memories(mems)
    assert descs[1]["ospread"] == 1 and descs[1]["rows_per_image"] == R * 17 * 17


def test_a_model_whose_program_fits_plain_still_compiles():
    """A split or spread layer takes R row-list entries per image instead of one: where the
    program memory holds the plain program but not that one, layers go back to plain until it
    fits (they would otherwise not compile at all); with one word more room, the fastest
    mapping of each layer that fits is kept."""
    R = 8
    model = synthetic.random_mlp(sizes=(64, 256, 256, 10), in_shape=(8, 8, 1), in_bits=8,
                                 seed=4)
    roomy = sim_target(R, 8, 32, weight_rows=R)
    hw_model, _ = program.hardware_model(model, roomy)
    want = [program.mapping(lay, roomy, 1) for lay in hw_model.layers]
    assert want == [program.SPREAD, program.SPREAD, program.PLAIN]

    def program_words(target):
        return len(program.build_memories(model, target, max_batch=1)[0].words)

    fast = program_words(roomy)

    def limited(words):
        mem = dict(roomy.memories)
        mem["program"] = (mem["program"][0], words)
        return dataclasses.replace(roomy, name=f"program{words}", memories=mem)

    # one spread layer back to plain saves R - 1 row-list entries (and maybe table words)
    one_plain = program.place(hw_model, limited(fast - 1), 1).mode
    assert one_plain.count(program.PLAIN) == 2 and one_plain != want
    plain = program_words(limited(fast - 1))
    assert plain < fast
    mems = program.build_memories(model, limited(plain), max_batch=1)
    assert len(mems[0].words) == plain
    _, descs = program.decode_memories(mems)
    assert [bool(d["ospread"]) for d in descs].count(True) == 1
    images = synthetic.random_images(3, 8, 8, 1, seed=7)
    gold = golden.run(model, images)
    for i in range(3):
        assert np.array_equal(program.execute(mems, images[i], limited(plain)).scores,
                              gold.scores[i])
    # exactly the fastest layout's words: every layer keeps its mapping
    assert program.place(hw_model, limited(fast), 1).mode == want


def test_spread_weights_and_thresholds_give_each_row_its_group():
    """The weights image of a spread layer: memory word (w_base / R + k * K + t), row r's C*W
    bits = packed word t of group k * R + r's channels (all ones past out_c); its threshold
    words are the groups' in order, ceil(G / R) * R of them (missing lanes past G)."""
    R, C, W = 4, 2, 16
    target = sim_target(R, C, W, weight_rows=R)
    model = synthetic.random_mlp(sizes=(48, 14, 5), in_shape=(1, 1, 48), in_bits=1, seed=3)
    mems = {m.name: m for m in program.build_memories(model, target, max_batch=1)}
    _, (d, _) = program.decode_memories(list(mems.values()))
    assert d["ospread"] == 1 and d["groups"] == 2  # 7 groups on 4 rows: 2 tile sets
    lay = model.layers[0]
    packed = golden.pack_weights(lay, W)  # (14, 3 words)
    K = packed.shape[1]
    words = [int(v) for v in mems["weights"].words]
    thr = [int(v) for v in mems["thresholds"].words]
    ones = (1 << W) - 1
    lane_mask = (1 << program.LANE_BITS) - 1
    for k in range(d["groups"]):
        for t in range(K):
            word = words[d["w_base"] // R + k * K + t]
            for r in range(R):
                for c in range(C):
                    n = (k * R + r) * C + c
                    got = (word >> ((r * C + c) * W)) & ones
                    assert got == (int(packed[n, t]) if n < lay.out_c else ones)
        for r in range(R):
            for c in range(C):
                n = (k * R + r) * C + c
                lane = (thr[d["thr_base"] + k * R + r] >> (c * program.LANE_BITS)) & lane_mask
                want = (program._lane_value(lay, n) if n < lay.out_c
                        else program.missing_lane(target))
                assert lane == want


def test_split_weights_give_each_row_its_words():
    """The weights image of a split layer: memory word (w_base / R + g * chunk + t), row r's
    C*W bits = packed word r * chunk + t of each of the group's channels, all ones past K."""
    R, C, W = 4, 2, 16
    target = sim_target(R, C, W, weight_rows=R)
    model = synthetic.random_mlp(sizes=(80, 5), in_shape=(1, 1, 80), in_bits=1, seed=3)
    mems = {m.name: m for m in program.build_memories(model, target, max_batch=1)}
    _, (d,) = program.decode_memories(list(mems.values()))
    assert d["ksplit"] == 1
    lay = model.layers[0]
    packed = golden.pack_weights(lay, W)  # (5, 5 words)
    chunk = program.k_chunk(lay, target)
    assert (packed.shape[1], chunk) == (5, 2)  # rows 0, 1 full, row 2 partial, row 3 empty
    words = [int(v) for v in mems["weights"].words]
    assert mems["weights"].width == R * C * W
    ones = (1 << W) - 1
    for n in range(lay.out_c):
        g, c = divmod(n, C)
        for t in range(chunk):
            word = words[d["w_base"] // R + g * chunk + t]
            for r in range(R):
                k = r * chunk + t
                got = (word >> ((r * C + c) * W)) & ones
                assert got == (int(packed[n, k]) if k < packed.shape[1] else ones)
