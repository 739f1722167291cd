"""Output stage: threshold + polarity -> bits, pooling on bits and lane writes of the next
layer's words, or integer scores for the last layer.

Semantics are those of :mod:`xnorflow.sw.encoding` exactly: ``threshold_bits`` (``acc >= T``
for polarity +1, ``acc <= T`` for -1, a tie gives 1), ``POOL_OR`` / ``POOL_AND`` per channel,
activation pad bits ``ACT_PAD_BIT`` (0); integer output ``score = score_mul * acc +
score_offset`` (:mod:`xnorflow.sw.ir`). The order of tiles, rows and writes is the one
:func:`xnorflow.sw.program.execute` models (``docs/accelerator.md``, "Output stage").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw import encoding as enc
from ..sw import program as prog
from ..sw.perf import threshold_regs

__all__ = ["OutputStage", "desc_layout", "soon_lead", "threshold_lane_bits"]


def _aw(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def threshold_lane_bits(acc_bits: int) -> int:
    """Bits the gateware keeps of a 32-bit threshold lane: ``T`` (or the score offset) in
    ``acc_bits + 2`` bits, then the pool-AND bit and the polarity (or the offset's sign):
    clamped thresholds lie in ``[-1, 2^acc_bits]`` and offsets fit ``acc_bits + 3`` signed
    bits (:func:`xnorflow.sw.program.score_bits`)."""
    return acc_bits + 4


def soon_lead(target) -> int:
    """Cycles between the array's ``tile_soon`` and ``tile_done`` the output stage wants: a
    threshold word is on its read data one cycle after its address register (two with the
    extra register, :func:`~xnorflow.sw.perf.threshold_regs`), and row ``r``'s word must be
    there in the cycle ``tile_done + r``."""
    return 1 + threshold_regs(target.mem_regs)


def desc_layout(target, depths: dict) -> data.StructLayout:
    """The descriptor fields the output stage uses (the sequencer's registers), as wide as
    the memories they address need."""
    aw = max(_aw(depths["activations"]), _aw(depths["scores"]))
    return data.StructLayout({
        "integer": 1,
        # weight_rows = R only: a tile is one image whose reduction is split over the rows
        **({"ksplit": 1} if target.weight_rows > 1 else {}),
        # weight_rows = R only: a tile is one image whose rows are column groups s * R + r
        **({"ospread": 1} if target.weight_rows > 1 else {}),
        "score_mul": data.StructLayout({"two": 1, "zero": 1, "neg": 1}),
        "passes_m1": 8,
        "groups_m1": _aw(depths["thresholds"]),
        "thr_base": _aw(depths["thresholds"]),
        "out_stride": aw,
        "out_base": aw,
        "tile_words": aw,
        "rows_total": _aw(depths["activations"]) + 1 + target.rows.bit_length(),
    })


class OutputStage(wiring.Component):
    """Turns the rows leaving the array into the next layer's activation words or scores.

    Rows come one per cycle after ``tile_done`` (row ``r`` of a tile in the ``r + 1``-th
    cycle after it, all ``R`` rows, never stalled). Per tile the stage latches its settings
    at ``tile_done``: the column group's threshold word (read from ``thr_rdata``; at the
    first pooling pass of each group), which pooling pass it is, and where its rows' words go.
    The tiles arrive in the sequencer's order: per tile of ``R`` rows, per column group ``g``,
    ``passes`` tiles (the pooling offsets). Counting them is all the stage needs to know
    where it is; ``layer_start`` resets the count.

    Per row (a pipeline of two registers, then the write): one adder per column computes
    ``acc - T - neg`` (threshold: the output bit is its sign XOR ``neg``, so ``acc >= T``, or
    ``acc <= T`` for polarity -1, ties 1) or ``offset + score_mul * acc`` (integer; the
    multiplier is a shift, a negative ``score_mul`` inverts the latched offset and the sum);
    the bit is ORed/ANDed into the row's pooling bits (a queue of ``R`` entries that rotates
    with the rows, so no row multiplexer), and at the last pooling pass the row's ``C`` bits
    are written into lane ``g mod (W/C)`` of word ``g div (W/C)`` of its output pixel (the
    first lane of a word writes the whole word, the other lanes 0, so pad channels read 0).
    Integer tiles write each valid row's ``C`` scores as one ``scores`` word. Rows at or past
    the batch's last row write nothing. With ``ksplit`` (``Target.weight_rows = R`` only) the
    tile's rows are partial sums of one output pixel: row ``r > 0`` is added onto row
    ``r - 1``'s sum by the same adder (in place of the latched threshold word), so row
    ``R - 1`` carries the whole tile's ``acc - T - neg`` (or score), and only it is written,
    to the tile's output address (the row pointer does not move). With ``ospread`` (also
    ``weight_rows = R`` only) row ``r`` of tile set ``s`` is column group ``s * R + r`` of one
    output pixel: each row takes its own threshold word (``thr_base + s * R + r``, read one
    per cycle from ``tile_soon`` on, so that row ``r``'s word is latched as row ``r - 1``
    passes; the stream restarts at ``thr_base`` after a tile of the pixel's last tile set,
    so the pooling passes of a layer with one tile set read the same words: the compiler
    spreads a pooling layer only then) and writes its own lane (``(s * R + r) mod (W/C)`` of
    word ``(s * R + r) div (W/C)``).

    Parameters
    ----------
    target : Target
        Geometry ``R x C x W`` and ``acc_bits``.
    depths : dict
        Words of each memory (address widths).

    Members
    -------
    res : In(ArrayLayout(acc_bits, C))
        The row leaving the array.
    tile_done : In(1)
        The array's tile pulse (row 0 leaves in the next cycle).
    tile_soon : In(1)
        (``weight_rows = R`` only) ``tile_done`` follows in :func:`soon_lead` cycles.
    desc : In(desc_layout)
        The layer's settings (stable from ``layer_start`` to the last write).
    layer_start : In(1)
        Restart the tile count and the write pointers.
    clear : In(1)
        Write the all-zero word at the top activation address (at START).
    thr_raddr : Out, thr_rdata : In
        The thresholds memory's read port (the stage owns it while the sequencer runs).
    act_waddr, act_wdata, act_wen : Out
        Activation write port (``act_wen``: one enable per ``C``-bit lane).
    score_waddr, score_wdata, score_we : Out
        Scores write port (``C`` lanes of :func:`~xnorflow.sw.program.score_bits` bits).

    Latency: row ``r`` of a tile is written in the third cycle after it leaves the array
    (``tile_done`` + ``r`` + 3). Throughput: one row per cycle, one write per cycle.
    """

    def __init__(self, target, depths: dict):
        self.target = target
        self.depths = dict(depths)
        C, W = target.cols, target.width
        if W % C:
            raise ValueError(f"columns {C} must divide the word width {W}")
        self.acc_bits = target.acc_bits
        self.score_bits = prog.score_bits(target)
        self.lane_bits = threshold_lane_bits(self.acc_bits)
        self.lanes = W // C
        self.desc_layout = desc_layout(target, depths)
        super().__init__({
            "res": In(data.ArrayLayout(self.acc_bits, C)),
            "tile_done": In(1),
            **({"tile_soon": In(1)} if target.weight_rows > 1 else {}),
            "desc": In(self.desc_layout),
            "layer_start": In(1),
            "clear": In(1),
            "thr_raddr": Out(_aw(depths["thresholds"])),
            "thr_rdata": In(data.ArrayLayout(self.lane_bits, C)),
            "act_waddr": Out(_aw(depths["activations"])),
            "act_wdata": Out(W),
            "act_wen": Out(self.lanes),
            "score_waddr": Out(_aw(depths["scores"])),
            "score_wdata": Out(data.ArrayLayout(self.score_bits, C)),
            "score_we": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 -- one pipeline, kept together for reading
        m = Module()
        t = self.target
        R, C = t.rows, t.cols
        A = self.acc_bits
        TW = A + 2  # clamped thresholds, two's complement
        SB = self.score_bits  # one adder per column, SB bits, serves both modes
        LN = self.lanes
        d = self.desc
        aw = len(d.out_base)

        # ---- where the stage is: pooling pass, column group, lane, word, tile of rows --------
        # (down-counters, each with its end flag as a register set a cycle ahead)
        p_left = Signal(8)          # pooling passes after the next tile's
        first_p = Signal()          # the next tile is its group's first pass
        end_p = Signal()            # ... and its last
        g_left = Signal(len(d.groups_m1))
        end_g = Signal()            # the next tile's group is its tile of rows' last
        lane = Signal(range(LN))    # lane of the group in its word
        jj = Signal(aw)             # word offset of the group within a row's output
        tile_dest = Signal(aw)      # output address of the current tile's row 0
        rows_left = Signal(len(d.rows_total))
        end_lane = d.integer | (lane == LN - 1)
        done = self.tile_done
        spread = d.ospread if t.weight_rows > 1 else None
        # a spread tile set covers R column groups: its successor's first group is R on
        # (lanes and words are powers of two: R >= W/C keeps lane 0)
        if spread is not None:
            if R >= LN:
                sp_lane, sp_jj = 0, jj + R // LN
            else:
                sp_lane, sp_jj = (lane + R)[:len(lane)], jj + (lane == LN - R)
        with m.If(self.layer_start):
            m.d.sync += [p_left.eq(d.passes_m1), first_p.eq(1), end_p.eq(d.passes_m1 == 0),
                         g_left.eq(d.groups_m1), end_g.eq(d.groups_m1 == 0), lane.eq(0),
                         jj.eq(0), tile_dest.eq(d.out_base), rows_left.eq(d.rows_total),
                         self.thr_raddr.eq(d.thr_base)]
        with m.Elif(done):
            m.d.sync += [p_left.eq(Mux(end_p, d.passes_m1, p_left - 1)), first_p.eq(end_p),
                         end_p.eq(Mux(end_p, d.passes_m1 == 0, p_left == 1))]
            # the group's threshold word is latched now: read the next (spread: the rows'
            # words are read from tile_soon on, below)
            with m.If(first_p if spread is None else first_p & ~spread):
                m.d.sync += self.thr_raddr.eq(Mux(end_g, d.thr_base, self.thr_raddr + 1))
            with m.If(end_p):
                m.d.sync += [g_left.eq(Mux(end_g, d.groups_m1, g_left - 1)),
                             end_g.eq(Mux(end_g, d.groups_m1 == 0, g_left == 1))]
                if spread is None:
                    m.d.sync += [lane.eq(Mux(end_g | end_lane, 0, lane + 1)),
                                 jj.eq(Mux(end_g, 0, Mux(end_lane, jj + 1, jj)))]
                else:
                    nxt_lane = Mux(spread, sp_lane, Mux(end_lane, 0, lane + 1))
                    nxt_jj = Mux(spread, sp_jj, Mux(end_lane, jj + 1, jj))
                    m.d.sync += [lane.eq(Mux(end_g, 0, nxt_lane)),
                                 jj.eq(Mux(end_g, 0, nxt_jj))]
                with m.If(end_g):
                    m.d.sync += [tile_dest.eq(tile_dest + d.tile_words),
                                 rows_left.eq(rows_left - R)]

        if spread is not None:
            # ---- spread: one threshold word per row, read one per cycle from tile_soon on -----
            # (thr_raddr holds the next tile set's first word: R reads, then the next set's
            # first word, or thr_base after an image's last set)
            s_left = Signal(range(R))   # reads left after this cycle's
            s_wrap = Signal()           # the stream's tile set is its image's last
            with m.If(self.layer_start):
                m.d.sync += s_left.eq(0)
            with m.Elif(spread & self.tile_soon):
                m.d.sync += [self.thr_raddr.eq(self.thr_raddr + 1), s_left.eq(R - 1),
                             s_wrap.eq(end_g)]
            with m.Elif(s_left != 0):
                m.d.sync += [s_left.eq(s_left - 1),
                             self.thr_raddr.eq(Mux(s_wrap & (s_left == 1), d.thr_base,
                                                   self.thr_raddr + 1))]

        # ---- per-tile settings, latched at tile_done ------------------------------------------
        # the threshold word in the form the adder wants: threshold mode lane = ~T, cin = ~neg
        # (the adder computes acc - T - neg); integer mode lane = offset (inverted for a
        # negative score_mul), cin = 0
        cfg_lane = [Signal(SB, name=f"cfg_lane{c}", reset_less=True) for c in range(C)]
        cfg_cin = Signal(C, reset_less=True)
        cfg_and = Signal(C, reset_less=True)
        pool_first = Signal(reset_less=True)
        emit = Signal(reset_less=True)       # rows of this tile are written
        n_rows = Signal(range(R + 1), reset_less=True)  # rows of the tile that are written
        first_lane = Signal(reset_less=True)
        tile_lane = Signal(range(LN), reset_less=True)
        rc = Signal(range(R + 1), init=R)   # row of the tile in stage 0 (R: none)
        ptr = Signal(aw)                    # output address of the row in stage 0
        mode_int = d.integer
        mul = d.score_mul
        # mem_regs = 2 (perf.threshold_regs): the threshold word is registered once more after
        # its RAM (its read data went into the latch's logic); the word is latched >= 3 cycles
        # after its address (program.tile_beats). No reset: it is read only after a word has
        # passed it, and a plain register right after the RAM is what the ECP5 build moves
        # into the DP16KD's output register (xnorflow.synth.outreg)
        thr_word = self.thr_rdata
        if threshold_regs(t.mem_regs):
            thr_word = Signal(self.thr_rdata.shape(), name="thr_q", reset_less=True)
            m.d.sync += thr_word.eq(self.thr_rdata)

        def latch_threshold_word():
            for c in range(C):
                raw = thr_word[c]
                low = raw[:TW]
                offset = Cat(low, raw[-1]).as_signed()  # the offset fits SB signed bits
                m.d.sync += [
                    cfg_lane[c].eq(Mux(mode_int,
                                       offset ^ Mux(mul.neg, (1 << SB) - 1, 0),
                                       ~low)),
                    cfg_cin[c].eq(~mode_int & ~raw[-1]),
                    cfg_and[c].eq(raw[-2] == enc.POOL_AND),
                ]

        if spread is not None:
            # the threshold word is latched at a group's first tile (spread: at every tile
            # and then as each row but the last passes, for the next row)
            with m.If(Mux(spread, done | (rc < R - 1), done & first_p)):
                latch_threshold_word()
        with m.If(done):
            m.d.sync += [pool_first.eq(first_p), emit.eq(end_p | mode_int),
                         n_rows.eq(Mux(rows_left >= R, R, rows_left)),
                         first_lane.eq(lane == 0), tile_lane.eq(lane),
                         rc.eq(0), ptr.eq(tile_dest + jj)]
            if spread is None:
                with m.If(first_p):
                    latch_threshold_word()
        split = d.ksplit if t.weight_rows > 1 else None
        with m.Elif(rc != R):
            m.d.sync += [rc.eq(rc + 1),
                         ptr.eq(ptr + (d.out_stride if split is None
                                       else Mux(split, 0, d.out_stride)))]
            if spread is not None:
                # spread: the next row is the next column group (the next lane, or the next
                # word's first)
                wrap = tile_lane == LN - 1
                with m.If(spread):
                    m.d.sync += [ptr.eq(ptr + wrap), first_lane.eq(wrap),
                                 tile_lane.eq(Mux(wrap, 0, tile_lane + 1))]

        # ---- stage 0: one adder per column; the row's settings move along with it --------------
        s1_sum = [Signal(SB, name=f"s1_sum{c}", reset_less=True) for c in range(C)]
        s1_row = Signal()           # a row of a tile is in stage 1
        s1_write = Signal()         # ... and it is written
        s1_cin = Signal(C, reset_less=True)
        s1_and = Signal(C, reset_less=True)
        s1_first = Signal(reset_less=True)
        s1_first_lane = Signal(reset_less=True)
        s1_lane = Signal(range(LN), reset_less=True)
        s1_addr = Signal(aw, reset_less=True)
        # ksplit: rows after the tile's first add onto the previous row's sum
        chain = None if split is None else split & (rc != 0)
        for c in range(C):
            acc = self.res[c]
            # integer: acc, 2 acc or 0 (score_mul in {-2..2}); threshold: acc
            op = Mux(mode_int & mul.two, acc << 1, Mux(mode_int & mul.zero, 0, acc))
            op_w = Signal(SB, name=f"op{c}")
            total = Signal(SB + 1, name=f"sum{c}")
            lane_v, cin = cfg_lane[c], cfg_cin[c]
            if chain is not None:
                lane_v, cin = Mux(chain, s1_sum[c], lane_v), cin & ~chain
            # cin as the carry out of an extra low bit: one carry chain
            m.d.comb += [op_w.eq(op), total.eq(Cat(cin, op_w) + Cat(1, lane_v))]
            m.d.sync += s1_sum[c].eq(total[1:])
        writes = (rc < n_rows) & emit
        if split is not None:
            writes = writes & (~split | (rc == R - 1))
        m.d.sync += [s1_row.eq(rc != R), s1_write.eq(writes),
                     s1_cin.eq(cfg_cin), s1_and.eq(cfg_and), s1_first.eq(pool_first),
                     s1_first_lane.eq(first_lane), s1_lane.eq(tile_lane), s1_addr.eq(ptr)]

        # ---- stage 1: bits and pooling, or scores; the write registers ---------------------------
        pool_q = [Signal(C, name=f"pool_q{i}", reset_less=True) for i in range(R)]
        bits = Signal(C)
        pooled = Signal(C)
        old = pool_q[0]
        for c in range(C):
            m.d.comb += [
                bits[c].eq(s1_sum[c][TW - 1] ^ s1_cin[c]),
                pooled[c].eq(Mux(s1_first, bits[c],
                                 Mux(s1_and[c], old[c] & bits[c], old[c] | bits[c]))),
            ]
        with m.If(s1_row & ~mode_int):
            m.d.sync += [pool_q[i].eq(pool_q[i + 1]) for i in range(R - 1)]
            m.d.sync += pool_q[R - 1].eq(pooled)
        assert enc.ACT_PAD_BIT == 0  # lanes above the first lane of a word start at 0
        # lane l of the written word: the pooled bits, or 0 for the other lanes of a word's
        # first lane and for the zero word (synchronous resets of those registers: no logic
        # in front of them)
        wlanes = [Signal(C, name=f"wlane{lane_i}", reset_less=True) for lane_i in range(LN)]
        for lane_i in range(LN):
            with m.If(self.clear | ((lane_i != 0) & s1_first_lane)):
                m.d.sync += wlanes[lane_i].eq(0)
            with m.Else():
                m.d.sync += wlanes[lane_i].eq(pooled)
        wen = Signal(LN)
        m.d.sync += [
            self.act_waddr.eq(Mux(self.clear, -1, s1_addr)),
            wen.eq(Mux(self.clear | (s1_write & ~mode_int & s1_first_lane), (1 << LN) - 1,
                       Mux(s1_write & ~mode_int, Const(1, LN) << s1_lane, 0))),
            self.score_waddr.eq(s1_addr),
            self.score_we.eq(s1_write & mode_int),
        ]
        for c in range(C):
            # integer: ~(~offset + |mul| acc) = offset - |mul| acc for a negative score_mul
            m.d.sync += self.score_wdata[c].eq(s1_sum[c] ^ Mux(mul.neg, -1, 0))
        m.d.comb += [self.act_wdata.eq(Cat(*wlanes)), self.act_wen.eq(wen)]
        return m


def decode_score_mul(value: Value) -> Value:
    """The output stage's form of a 3-bit signed ``score_mul`` in ``{-2..2}``: ``two``,
    ``zero``, ``neg`` (other values are refused by :func:`xnorflow.sw.program.check_fits`)."""
    v = Value.cast(value)
    return Cat(v[1] & ~v[0], ~(v[1] | v[0]), v[-1])
