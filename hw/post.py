"""Output stage of the tile engine: threshold + polarity -> bits, pooling on bits, packing bits
into words for the next layer, or integer scores for the last layer.

Semantics are those of :mod:`xnorflow.sw.encoding` exactly: ``threshold_bits`` (``acc >= T``
for polarity +1, ``acc <= T`` for -1, a tie gives 1), ``POOL_OR`` / ``POOL_AND`` per channel,
``pack_bits`` little-endian with activation pad bit ``ACT_PAD_BIT`` (0); integer output
``score = score_mul * acc + score_offset`` (:mod:`xnorflow.sw.ir`).

Scheduling contract (how the sequencer orders tiles so pooling and packing work):

* **Pooling** spans several tiles, not rows: row ``r`` of a tile is *pooling window* ``r``
  (one pooled output pixel), and the ``pool_k^2`` window offsets ``(dy, dx)`` are
  ``pool_k^2`` consecutive tiles with the same columns (channels), the first flagged
  ``pool_first`` and the last ``pool_last``. The stage keeps an ``R x C``-bit OR/AND buffer.
  Without pooling every tile is both ``pool_first`` and ``pool_last``. This works for any
  ``R``, any ``pool_k`` and ``pool_stride`` (overlapping windows recompute the shared pixels).
* **Packing** spans the channel tiles of one set of pixels: the sequencer runs the channel
  (column) tiles of the same rows consecutively (after their pooling offsets), lowest
  channels first, and flags the tile holding a pixel's last channels ``pixel_end``. Each row
  keeps a partial word; a tile adds its ``chans`` valid bits at the current bit offset and
  emits every completed ``W``-bit word, and ``pixel_end`` flushes the last partial word
  (pad bits 0). Words of a row come out in order with their word ``index`` within the
  pixel's segment, so ``address = segment_base(pixel) + index``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw import encoding as enc
from .memories import RDATA_SUFFIX

__all__ = [
    "LATENCY",
    "MODE_INTEGER",
    "MODE_THRESHOLD",
    "PostProcess",
    "clamp_threshold",
    "row_layout",
    "score_layout",
    "tile_layout",
    "word_layout",
]

#: Cycles from taking a row to offering its first output when ``pipelined`` (else 1).
LATENCY = 3

#: ``tile.mode``: binary output through threshold, pooling and packing (``words`` stream).
MODE_THRESHOLD = 0
#: ``tile.mode``: integer scores of the last layer (``scores`` stream).
MODE_INTEGER = 1


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def clamp_threshold(t: int, acc_bits: int) -> int:
    """Clamp a threshold into ``[-1, 2^acc_bits]`` without changing any output bit.

    The accumulator lies in ``[0, 2^acc_bits - 1]``, so every ``T`` below 0 behaves like
    ``-1`` and every ``T`` above the maximum like ``2^acc_bits`` for both polarities. The
    clamped value fits a signed field of ``acc_bits + 2`` bits.
    """
    return max(-1, min(int(t), 1 << acc_bits))


def row_layout(cols: int, acc_bits: int) -> data.StructLayout:
    """One row of finished accumulators (one output pixel, ``cols`` channels)."""
    return data.StructLayout({"acc": data.ArrayLayout(acc_bits, cols)})


def tile_layout(rows: int, cols: int, score_width: int, mul_width: int) -> data.StructLayout:
    """Per-tile output-stage descriptor (one beat of the ``tile`` stream per tile).

    Fields: ``mode`` (:data:`MODE_THRESHOLD` / :data:`MODE_INTEGER`); ``rows`` valid rows
    (1..R; rows at or above it are computed but produce no output); ``chans`` valid columns
    (1..C; packing takes this many bits per row); ``pool_first``, ``pool_last``,
    ``pixel_end`` (see the module docstring); per column ``neg`` (1 = polarity -1),
    ``pool_op`` (:data:`~xnorflow.sw.encoding.POOL_OR` or ``POOL_AND``) and
    ``param`` (threshold ``T`` in threshold mode, ``score_offset`` in integer mode, signed
    ``score_width`` bits); ``score_mul`` (signed ``mul_width`` bits).
    """
    return data.StructLayout({
        "mode": 1,
        "rows": range(rows + 1),
        "chans": range(cols + 1),
        "pool_first": 1,
        "pool_last": 1,
        "pixel_end": 1,
        "neg": data.ArrayLayout(1, cols),
        "pool_op": data.ArrayLayout(1, cols),
        "param": data.ArrayLayout(signed(score_width), cols),
        "score_mul": signed(mul_width),
    })


def word_layout(rows: int, width: int, index_bits: int) -> data.StructLayout:
    """A packed output word: ``data`` (W bits), its ``row`` in the tile and its word
    ``index`` within the pixel's segment."""
    return data.StructLayout({"data": width, "row": range(rows), "index": index_bits})


def score_layout(rows: int, cols: int, score_width: int) -> data.StructLayout:
    """Integer scores of one row: ``row`` in the tile and ``score[c]`` per column."""
    return data.StructLayout({"row": range(rows),
                              "score": data.ArrayLayout(signed(score_width), cols)})


class PostProcess(wiring.Component):
    """Threshold / pool / pack, or integer scores, on rows of finished accumulators.

    Parameters
    ----------
    rows, cols, width : int
        Array geometry ``R x C`` and word width ``W`` (a power of two).
    acc_bits : int
        Accumulator width.
    score_width : int
        Signed width of thresholds, score offsets and scores (>= ``acc_bits + 2``).
    mul_width : int
        Signed width of ``score_mul``.
    index_bits : int
        Width of the word index of :func:`word_layout`.

    Members
    -------
    rows_i : In(stream.Signature(row_layout))
        Rows ``0..R-1`` of each tile in order.
    tile : In(stream.Signature(tile_layout))
        One descriptor per tile; it is taken at (or before) the tile's first row.
    words : Out(stream.Signature(word_layout))
        Packed words (threshold mode, ``pool_last`` tiles, rows below ``rows`` only).
    scores : Out(stream.Signature(score_layout))
        Integer scores (integer mode, rows below ``rows`` only).
    taken : Out(1)
        A row is taken in this cycle (the result FIFO's credit returns). Without
        ``hold_rows`` the same as a ``rows_i`` transfer.
    rows_next : In(1)
        ``hold_rows``: another row waits behind the one on ``rows_i`` and would already be
        offered had that one left (:class:`~xnorflow.hw.engine.ResultFIFO` ``r_next``); 0
        if unknown (then a row behind a held one is taken only once it is on ``rows_i``).

    small_mul : bool
        Support only ``score_mul`` in ``{-2, -1, 0, 1, 2}`` (what :mod:`xnorflow.sw.lower`
        produces: 1, or 2 for the {-1,+1} dot product), computed with a shift, and for a
        negative ``score_mul`` an inverted offset and an inverted sum (``offset - x =
        ~(~offset + x)``), instead of one ``mul_width x acc_bits`` multiplier per column
        (default False: any signed ``mul_width``-bit ``score_mul``). Other values give
        undefined scores; the program builder (:mod:`xnorflow.sw.program`) rejects them.
    pipelined : bool
        Register the two intermediate stages (threshold/pool or score; shift into place)
        for Fmax; default False (combinational up to the output registers).
    hold_rows : bool
        Without ``pipelined``: an integer row stays on ``rows_i`` (``ready`` low) until its
        score is taken, and the score is computed from it combinationally (no score
        register; its ``C x score_width`` flip-flops). The row is still *taken* (``taken``)
        in the cycle the registered design would take it, and the next row is taken from
        behind it (``rows_next``), so rows, outputs and credits keep their cycles; its
        source needs room for one more row (the engine's FIFO gets one more entry). A
        threshold row right after a held integer row (a mode change) waits one cycle.
        Default True (ignored when ``pipelined``).

    Area: each column has one ``score_width``-bit adder (one carry chain) that serves both
    modes: in threshold mode it computes ``acc + ~T + ~neg = acc - T - neg``, whose sign
    bit (bit ``acc_bits + 1``) XOR ``neg`` is the output bit (``acc >= T``, or
    ``acc <= T`` for ``neg``, as ``encoding.threshold_bits``), in integer mode ``offset +
    score_mul * acc``. The descriptor is latched in that form (``~T`` and ``~neg``, the
    decoded ``score_mul``), so the comparison needs no second chain and no operand muxes.

    Latency: a row taken in cycle ``t`` offers its first output in cycle ``t + latency``,
    :attr:`latency` = 3 when ``pipelined`` (:data:`LATENCY`), else 1. Throughput: one row
    per cycle when it emits at most one word; a row that emits ``n`` words takes ``n``
    cycles (with ``cols <= width`` at most 2, only at ``pixel_end``); the stages move as
    soon as the next one frees up.
    Thresholds must be clamped (:func:`clamp_threshold`): the comparison uses the low
    ``acc_bits + 2`` bits of ``param``.
    """

    def __init__(self, rows: int, cols: int, width: int, acc_bits: int, score_width: int = 32,
                 mul_width: int = 8, index_bits: int = 8, pipelined: bool = False,
                 small_mul: bool = False, hold_rows: bool = True):
        if width & (width - 1) or width < 2:
            raise ValueError(f"post-processing word width must be a power of two, not {width}")
        if score_width < acc_bits + 2:
            raise ValueError(f"score_width {score_width} must be >= acc_bits + 2 = "
                             f"{acc_bits + 2} so that clamped thresholds fit")
        self.rows, self.cols, self.width = rows, cols, width
        self.acc_bits, self.score_width, self.mul_width = acc_bits, score_width, mul_width
        self.index_bits = index_bits
        self.pipelined = bool(pipelined)
        self.small_mul = bool(small_mul)
        self.hold_rows = bool(hold_rows) and not self.pipelined
        self.latency = LATENCY if self.pipelined else 1
        self.max_words = -(-(width - 1 + cols) // width)  # words one row can emit per tile
        super().__init__({
            "rows_i": In(stream.Signature(row_layout(cols, acc_bits))),
            "tile": In(stream.Signature(tile_layout(rows, cols, score_width, mul_width))),
            "words": Out(stream.Signature(word_layout(rows, width, index_bits))),
            "scores": Out(stream.Signature(score_layout(rows, cols, score_width))),
            "rows_next": In(1),
            "taken": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 -- one pipeline, kept together for reading
        m = Module()
        R, C, W = self.rows, self.cols, self.width
        lw = W.bit_length() - 1
        vw = W - 1 + C  # partial word (< W bits) plus one tile's bits
        tw = self.acc_bits + 2  # clamped thresholds fit this many signed bits
        sw = self.score_width
        assert enc.ACT_PAD_BIT == 0  # masked-off and flushed bits are zeros

        # ---- descriptor of the tile whose rows stage A takes ------------------------------
        # Latched in a form that lets one adder per column serve both modes (see _sum):
        # threshold mode: lane = ~T (low tw bits), cin = ~neg (so the adder computes
        # acc - T - neg); integer mode: lane = score_offset (or ~score_offset when small_mul
        # and score_mul < 0), cin = 0.
        mul_l = data.StructLayout({"two": 1, "zero": 1, "neg": 1} if self.small_mul
                                  else {"mul": signed(self.mul_width)})
        cfg = Signal(data.StructLayout({
            "mode": 1, "rows": range(R + 1), "chans": range(C + 1), "pool_first": 1,
            "pool_last": 1, "pixel_end": 1, "cin": data.ArrayLayout(1, C),
            "pool_op": data.ArrayLayout(1, C), "lane": data.ArrayLayout(sw, C), "mul": mul_l}))
        cfg_ok = Signal()
        r = Signal(range(R))

        # ---- stage registers ------------------------------------------------------------
        # A: threshold + pool (bits) or the score; B: shift into place;
        # C: merge with the row's partial word and emit (the output registers)
        a_valid, b_valid = Signal(), Signal()
        a_bits = Signal(C)
        a_score = Signal(data.ArrayLayout(sw, C))
        a_row = Signal(range(R))
        a_flags = Signal(data.StructLayout({
            "mode": 1, "valid_row": 1, "pool_last": 1, "pixel_end": 1, "last_row": 1,
            "chans": range(C + 1)}))
        b_shifted = Signal(vw)
        b_score = Signal(data.ArrayLayout(sw, C))
        b_row = Signal(range(R))
        b_flags = Signal(data.StructLayout({
            "mode": 1, "valid_row": 1, "pool_last": 1, "pixel_end": 1, "last_row": 1}))
        b_n_full = Signal(range(self.max_words + 1))
        b_n_emit = Signal(range(self.max_words + 1))

        # pooling bits per row as a queue that rotates with the row order (rows come
        # 0..R-1, again and again): entry 0 is the current row, so there is no row mux
        pool_q = [Signal(C, name=f"pool_q{i}") for i in range(R)]   # stage A: pooled bits
        fill = Signal(range(W))            # stage B: bit offset of the next channel
        b_fill_nz = Signal()               # stage B's fill was not 0 (see stage C)
        word_base = Signal(self.index_bits)                      # stage C: word index

        ev = Signal(vw)                                 # words being emitted
        en = Signal(range(self.max_words + 1))          # words left to emit
        eidx = Signal(self.index_bits)
        erow = Signal(range(R))
        sc = Signal(data.ArrayLayout(sw, C))
        s_pending = Signal()
        srow = Signal(range(R))

        # stage A and B results are registers when pipelined, else combinational
        stage = m.d.sync if self.pipelined else m.d.comb

        # ---- outputs and the pipeline's flow control ---------------------------------------
        held = self.hold_rows  # integer rows stay in the input register (see below)
        pend = Signal()  # a score is offered
        score_now = Signal(data.ArrayLayout(sw, C))  # held: the score of the input row
        m.d.comb += [
            self.words.valid.eq(en != 0),
            self.words.p.data.eq(ev[:W]),
            self.words.p.row.eq(erow),
            self.words.p.index.eq(eidx),
            self.scores.valid.eq(pend),
            self.scores.p.row.eq(srow),
            self.scores.p.score.eq(score_now if held else sc),
        ]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += [ev.eq(ev >> W), en.eq(en - 1), eidx.eq(eidx + 1)]
        c_free = (((en == 0) | ((en == 1) & self.words.ready))
                  & (~pend | self.scores.ready))
        take = Signal()
        a_move, b_move = Signal(), Signal()
        last_row = r == R - 1
        cur_mode = Signal()
        cur_rows = Signal(range(R + 1))
        if held:
            # Integer rows are held in the input register (the result FIFO's RAM output)
            # until their score is taken: the score is computed from it combinationally, so
            # there is no score register. `tk`: the row in the input register was taken
            # (`skip`: it gives no output, it leaves as soon as it is there). A row is taken
            # when the former output stage would have taken it (same cycles, same FIFO
            # credits: `taken`); the row after a held one is taken from behind it
            # (`rows_next`) in the cycle the held one leaves, and arrives a cycle later,
            # when its score is due. Threshold rows need their data when taken, so one
            # that follows a held integer row waits a cycle (only at a mode change).
            tk, skip = Signal(), Signal()
            # an integer tile may be taken live, before its descriptor is latched (see the
            # descriptor logic below): its rows need only mode and rows at the take
            live = ~cfg_ok & self.tile.valid & (self.tile.p.mode == MODE_INTEGER)
            m.d.comb += [
                cur_mode.eq(Mux(cfg_ok, cfg.mode, MODE_INTEGER)),
                cur_rows.eq(Mux(cfg_ok, cfg.rows, self.tile.p.rows)),
                pend.eq(tk & ~skip & self.rows_i.valid),
            ]
            valid_now = r < cur_rows
            cur_int = cur_mode == MODE_INTEGER
            release_head = (tk & skip & self.rows_i.valid) | (pend & self.scores.ready)
            avail = Mux(tk, self.rows_next & release_head, self.rows_i.valid)
            m.d.comb += [
                take.eq(avail & (cfg_ok | live) & c_free & (cur_int | ~tk)),
                a_valid.eq(take), b_valid.eq(take), a_move.eq(take), b_move.eq(take),
                self.rows_i.ready.eq(release_head | (take & ~tk & ~(cur_int & valid_now))),
                self.taken.eq(take),
            ]
            with m.If(take):
                m.d.sync += [tk.eq(cur_int & (valid_now | tk)), skip.eq(~valid_now),
                             srow.eq(r)]
            with m.Elif(release_head):
                m.d.sync += tk.eq(0)
            # the descriptor must not change while a score computed from it is offered
            int_hold = ((pend & ~self.scores.ready)
                        | (take & cfg_ok & (cfg.mode == MODE_INTEGER) & valid_now))
            m.d.comb += self.tile.ready.eq(~int_hold & (~cfg_ok | (take & last_row)))
            with m.If(take & last_row):
                m.d.sync += cfg_ok.eq(0)
            with m.If(self.tile.valid & self.tile.ready):
                m.d.sync += cfg.eq(self._latch(self.tile.p, tw))
                with m.If(~(take & ~cfg_ok & last_row)):  # a live tile's last row: done
                    m.d.sync += cfg_ok.eq(1)
        else:
            m.d.comb += [pend.eq(s_pending), cur_mode.eq(cfg.mode), cur_rows.eq(cfg.rows)]
            with m.If(self.scores.valid & self.scores.ready):
                m.d.sync += s_pending.eq(0)
            if self.pipelined:
                m.d.comb += [b_move.eq(b_valid & c_free),
                             a_move.eq(a_valid & (~b_valid | b_move)),
                             take.eq(self.rows_i.valid & cfg_ok & (~a_valid | a_move))]
                with m.If(a_move | take):
                    m.d.sync += a_valid.eq(take)
                with m.If(b_move | a_move):
                    m.d.sync += b_valid.eq(a_move)
            else:
                m.d.comb += [take.eq(self.rows_i.valid & cfg_ok & c_free), a_valid.eq(take),
                             b_valid.eq(take), a_move.eq(take), b_move.eq(take)]
            m.d.comb += [self.rows_i.ready.eq(take), self.taken.eq(take)]
            m.d.comb += self.tile.ready.eq(~cfg_ok | (take & last_row))
            with m.If(take & last_row):
                m.d.sync += cfg_ok.eq(0)
            with m.If(self.tile.valid & self.tile.ready):
                m.d.sync += [cfg.eq(self._latch(self.tile.p, tw)), cfg_ok.eq(1)]

        # ---- stage A: threshold + polarity and pooling, or the score: one adder --------
        acc = self.rows_i.p.acc
        bits = Signal(C)
        pooled = Signal(C)
        old_pool = pool_q[0]
        for c in range(C):
            total_c = self._sum(m, cfg, c, acc[c], sw)
            # threshold mode: total_c[tw-1] is the sign of acc - T - neg (cin = ~neg), so
            # bit = (acc - T - neg >= 0) ^ neg = total_c[tw-1] ^ cin
            m.d.comb += [
                bits[c].eq(total_c[tw - 1] ^ cfg.cin[c]),
                pooled[c].eq(Mux(cfg.pool_first, bits[c],
                                 Mux(cfg.pool_op[c] == enc.POOL_AND,
                                     old_pool[c] & bits[c], old_pool[c] | bits[c]))),
            ]
            # small_mul with score_mul < 0: the adder gave ~offset + |mul| acc
            m.d.comb += score_now[c].eq(total_c ^ Mux(cfg.mul.neg, -1, 0) if self.small_mul
                                        else total_c)
            with m.If(take):
                stage += a_score[c].eq(score_now[c])
        with m.If(take):
            m.d.sync += r.eq(Mux(last_row, 0, r + 1))
            stage += [
                a_row.eq(r),
                a_flags.mode.eq(cur_mode),
                a_flags.valid_row.eq(r < cur_rows),
                a_flags.pool_last.eq(cfg.pool_last),
                a_flags.pixel_end.eq(cfg.pixel_end),
                a_flags.last_row.eq(last_row),
                a_flags.chans.eq(cfg.chans),
            ]
            for c in range(C):
                stage += a_bits[c].eq(pooled[c] & (c < cfg.chans))
            m.d.sync += [pool_q[i].eq(pool_q[i + 1]) for i in range(R - 1)]
            m.d.sync += pool_q[R - 1].eq(Mux(cur_mode == MODE_THRESHOLD, pooled, pool_q[0]))

        # ---- stage B: place the bits at the fill offset --------------------------------
        total = Signal(range(W + C))
        n_full = Signal(range(self.max_words + 1))
        rem = Signal(lw)
        m.d.comb += [total.eq(fill + a_flags.chans), n_full.eq(total >> lw),
                     rem.eq(total[:lw])]
        packing = (a_flags.mode == MODE_THRESHOLD) & a_flags.pool_last
        with m.If(a_move):
            stage += [
                b_shifted.eq(a_bits << fill),
                b_row.eq(a_row),
                b_flags.eq(Cat(a_flags.mode, a_flags.valid_row, a_flags.pool_last,
                               a_flags.pixel_end, a_flags.last_row)),
                b_n_full.eq(n_full),
                b_n_emit.eq(n_full + (a_flags.pixel_end & (rem != 0))),
                b_score.eq(a_score),
                b_fill_nz.eq(fill != 0),
            ]
            with m.If(packing & a_flags.last_row):
                m.d.sync += fill.eq(Mux(a_flags.pixel_end, 0, rem))

        # ---- stage C: merge with the row's partial word, emit whole words ---------------
        # Each row's partial word (its low `fill` bits; all bits above are 0, so it is 0
        # whenever fill is 0 and is masked then: neither reset nor an integer layer has to
        # clear it). With R >= 2 the partial words live in a small RAM (a RAM block on the
        # FPGAs, ram_style "block": R x (W-1) bits instead of R*(W-1) flip-flops): stage C
        # takes rows in the order 0..R-1, so the read port fetches the next row's word while
        # the current one is written (never the same address in one cycle: no_rw_check).
        pw = max(1, W - 1)
        # a RAM read register (R >= 2): no power-up value in synthesis (RDATA_SUFFIX)
        pack_cur = Signal(pw, name=f"pack_cur{RDATA_SUFFIX}", reset_less=True)
        pack_new = Signal(pw)
        pack_we = Signal()
        if R >= 2:
            crow = Signal(range(R))  # the row in stage C (== b_row while b_valid)
            nxt = Mux(crow == R - 1, 0, crow + 1)
            m.submodules.pack_mem = mem = Memory(
                shape=pw, depth=R, init=[], attrs={"no_rw_check": 1, "ram_style": "block"})
            rp = mem.read_port(domain="comb")  # + register: merged into the RAM block
            wp = mem.write_port()
            m.d.comb += [rp.addr.eq(Mux(b_move, nxt, crow)),
                         wp.addr.eq(crow), wp.data.eq(pack_new), wp.en.eq(pack_we)]
            m.d.sync += pack_cur.eq(rp.data)
            with m.If(b_move):
                m.d.sync += crow.eq(nxt)
        else:
            with m.If(pack_we):
                m.d.sync += pack_cur.eq(pack_new)
        v = Signal(vw)
        m.d.comb += v.eq(Mux(b_fill_nz, pack_cur, 0) | b_shifted)
        leftover = Array([(v >> (W * j))[:pw] for j in range(self.max_words + 1)])
        m.d.comb += pack_new.eq(Mux(b_flags.pixel_end, 0, leftover[b_n_full]))
        with m.If(b_move):
            with m.If(b_flags.mode == MODE_INTEGER):
                if not held:
                    m.d.sync += [sc.eq(b_score), s_pending.eq(b_flags.valid_row),
                                 srow.eq(b_row)]
            with m.Elif(b_flags.pool_last):
                m.d.sync += [
                    ev.eq(v), en.eq(Mux(b_flags.valid_row, b_n_emit, 0)),
                    eidx.eq(word_base), erow.eq(b_row),
                ]
                m.d.comb += pack_we.eq(1)
                with m.If(b_flags.last_row):
                    m.d.sync += word_base.eq(Mux(b_flags.pixel_end, 0, word_base + b_n_full))
        return m

    def _latch(self, p, tw):
        """The descriptor ``p`` in the form :meth:`_sum` uses (see ``elaborate``)."""
        C, sw = self.cols, self.score_width
        integer = p.mode == MODE_INTEGER
        out = {"mode": p.mode, "rows": p.rows, "chans": p.chans, "pool_first": p.pool_first,
               "pool_last": p.pool_last, "pixel_end": p.pixel_end}
        if self.small_mul:
            # score_mul is one of -2..2 (others are undefined): bits 2..0 tell them apart
            mul = Value.cast(p.score_mul)
            mneg = integer & mul[-1]
            out["mul"] = Cat(integer & mul[1] & ~mul[0], integer & ~(mul[1] | mul[0]), mneg)
        else:
            mneg = 0
            out["mul"] = p.score_mul
        lanes, cins = [], []
        for c in range(C):
            t = p.param[c]
            lanes.append(Mux(integer, Value.cast(t)[:sw] ^ Mux(mneg, (1 << sw) - 1, 0),
                             ~Value.cast(t)[:tw])[:sw])
            cins.append(~integer & ~p.neg[c])
        out["cin"] = Cat(*cins)
        out["pool_op"] = p.pool_op
        out["lane"] = Cat(*lanes)
        return Cat(*(out[k] for k in ("mode", "rows", "chans", "pool_first", "pool_last",
                                      "pixel_end", "cin", "pool_op", "lane", "mul")))

    def _sum(self, m, cfg, c, acc, sw):
        """One adder per column, ``op + lane + cin`` (``sw`` bits), shared by both modes.

        Threshold mode: ``op = acc``, ``lane = ~T``, ``cin = ~neg``: ``acc - T - neg``, whose
        sign (bit ``acc_bits + 1``) decides the threshold. Integer mode: ``op = score_mul *
        acc`` (``small_mul``: ``acc``, ``2 acc`` or 0, and the lane holds ``~offset`` for a
        negative ``score_mul``: ``score = ~(~offset + |mul| acc)``, the caller inverts) plus
        ``lane = offset``.
        """
        if self.small_mul:
            two, zero = cfg.mul.two, cfg.mul.zero  # both 0 in threshold mode
            op = Mux(two, acc << 1, Mux(zero, 0, acc))
        else:
            op = Mux(cfg.mode == MODE_INTEGER, cfg.mul.mul * acc, acc)
        op_w = Signal(sw, name=f"op{c}")  # sign- (multiplier) or zero-extended operand
        total = Signal(sw + 1, name=f"sum{c}")
        # cin as the carry out of an extra low bit: one adder (one carry chain) in yosys
        m.d.comb += [op_w.eq(op), total.eq(Cat(cfg.cin[c], op_w) + Cat(1, cfg.lane[c]))]
        return total[1:]
