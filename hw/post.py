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

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sw import encoding as enc

__all__ = [
    "MODE_INTEGER",
    "MODE_THRESHOLD",
    "PostProcess",
    "clamp_threshold",
    "row_layout",
    "score_layout",
    "tile_layout",
    "word_layout",
]

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

    Latency: a row taken in cycle ``t`` offers its first output in cycle ``t + 1``.
    Throughput: one row per cycle when it emits at most one word; a row that emits ``n``
    words takes ``n`` cycles (with ``cols <= width`` at most 2, only at ``pixel_end``),
    the next row is taken in the cycle its last word is transferred.
    """

    def __init__(self, rows: int, cols: int, width: int, acc_bits: int, score_width: int = 32,
                 mul_width: int = 8, index_bits: int = 8):
        if width & (width - 1) or width < 2:
            raise ValueError(f"post-processing word width must be a power of two, not {width}")
        if score_width < acc_bits + 2:
            raise ValueError(f"score_width {score_width} must be >= acc_bits + 2 = "
                             f"{acc_bits + 2} so that clamped thresholds fit")
        self.rows, self.cols, self.width = rows, cols, width
        self.acc_bits, self.score_width, self.mul_width = acc_bits, score_width, mul_width
        self.index_bits = index_bits
        self.max_words = -(-(width - 1 + cols) // width)  # words one row can emit per tile
        super().__init__({
            "rows_i": In(stream.Signature(row_layout(cols, acc_bits))),
            "tile": In(stream.Signature(tile_layout(rows, cols, score_width, mul_width))),
            "words": Out(stream.Signature(word_layout(rows, width, index_bits))),
            "scores": Out(stream.Signature(score_layout(rows, cols, score_width))),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, W = self.rows, self.cols, self.width
        lw = W.bit_length() - 1
        vw = W - 1 + C  # partial word (< W bits) plus one tile's bits
        assert enc.ACT_PAD_BIT == 0  # masked-off and flushed bits are zeros

        cfg = Signal(tile_layout(R, C, self.score_width, self.mul_width))
        cfg_ok = Signal()
        r = Signal(range(R))
        pool_buf = Signal(data.ArrayLayout(C, R))
        pack_buf = Signal(data.ArrayLayout(max(1, W - 1), R))
        fill = Signal(range(W))
        word_base = Signal(self.index_bits)

        ev = Signal(vw)                                 # words being emitted
        en = Signal(range(self.max_words + 1))          # words left to emit
        eidx = Signal(self.index_bits)
        erow = Signal(range(R))
        sc = Signal(data.ArrayLayout(signed(self.score_width), C))
        s_pending = Signal()
        srow = Signal(range(R))

        # outputs (registered state)
        m.d.comb += [
            self.words.valid.eq(en != 0),
            self.words.p.data.eq(ev[:W]),
            self.words.p.row.eq(erow),
            self.words.p.index.eq(eidx),
            self.scores.valid.eq(s_pending),
            self.scores.p.row.eq(srow),
            self.scores.p.score.eq(sc),
        ]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += [ev.eq(ev >> W), en.eq(en - 1), eidx.eq(eidx + 1)]
        with m.If(self.scores.valid & self.scores.ready):
            m.d.sync += s_pending.eq(0)

        free = (((en == 0) | ((en == 1) & self.words.ready))
                & (~s_pending | self.scores.ready))
        load = Signal()
        m.d.comb += [load.eq(self.rows_i.valid & cfg_ok & free), self.rows_i.ready.eq(load)]
        last_row = r == R - 1
        m.d.comb += self.tile.ready.eq(~cfg_ok | (load & last_row))
        with m.If(load & last_row):
            m.d.sync += cfg_ok.eq(0)
        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += [cfg.eq(self.tile.p), cfg_ok.eq(1)]

        # ---- combinational work on the row being taken ---------------------------------
        acc = self.rows_i.p.acc
        valid_row = r < cfg.rows
        bits = Signal(C)
        pooled = Signal(C)
        masked = Signal(C)
        old_pool = pool_buf[r]
        for c in range(C):
            t = cfg.param[c]
            m.d.comb += [
                bits[c].eq(Mux(cfg.neg[c], acc[c] <= t, acc[c] >= t)),
                pooled[c].eq(Mux(cfg.pool_first, bits[c],
                                 Mux(cfg.pool_op[c] == enc.POOL_AND,
                                     old_pool[c] & bits[c], old_pool[c] | bits[c]))),
                masked[c].eq(pooled[c] & (c < cfg.chans)),
            ]
        v = Signal(vw)
        total = Signal(range(W + C))
        n_full = Signal(range(self.max_words + 1))
        rem = Signal(lw)
        m.d.comb += [
            v.eq(pack_buf[r] | (masked << fill)),
            total.eq(fill + cfg.chans),
            n_full.eq(total >> lw),
            rem.eq(total[:lw]),
        ]
        n_emit = n_full + (cfg.pixel_end & (rem != 0))
        leftover = Array([(v >> (W * j))[: max(1, W - 1)] for j in range(self.max_words + 1)])

        with m.If(load):
            m.d.sync += r.eq(Mux(last_row, 0, r + 1))
            with m.If(cfg.mode == MODE_INTEGER):
                for c in range(C):
                    m.d.sync += sc[c].eq(cfg.score_mul * acc[c] + cfg.param[c])
                m.d.sync += [s_pending.eq(valid_row), srow.eq(r)]
            with m.Else():
                m.d.sync += pool_buf[r].eq(pooled)
                with m.If(cfg.pool_last):
                    m.d.sync += [
                        ev.eq(v), en.eq(Mux(valid_row, n_emit, 0)),
                        eidx.eq(word_base), erow.eq(r),
                        pack_buf[r].eq(Mux(cfg.pixel_end, 0, leftover[n_full])),
                    ]
                    with m.If(last_row):
                        m.d.sync += [
                            fill.eq(Mux(cfg.pixel_end, 0, rem)),
                            word_base.eq(Mux(cfg.pixel_end, 0, word_base + n_full)),
                        ]
        return m
