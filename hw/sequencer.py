"""The on-chip sequencer: runs a whole network from the program image, no host involved.

For each layer descriptor (``docs/program.md``, :mod:`xnorflow.sw.program`) the sequencer
drives HW1's :class:`~xnorflow.hw.engine.TileEngine` with three independent units:

* the **operand generator** walks tiles of ``R`` output pixels (pooled pixels when the
  layer pools), then column groups of ``C`` channels, then pooling-window offsets, then
  bit-planes, then the ``(dy, dx, cw)`` words of the convolution window, and reads one
  activation word per row (``R`` read ports: on-chip im2col, with rows whose window pixel
  lies in the spatial padding fed the all-zero word, i.e. the value -1) and one ``C * W``-bit
  weight word per cycle. A *walker* prepares the window origin of the next tile's ``R``
  rows while the current tile runs, so tiles follow each other without bubbles.
* the **tile issuer** reads one threshold word per tile and sends the engine's output-stage
  descriptor (thresholds/polarities/pool ops, or score offsets and ``score_mul``).
* the **writer** stores the engine's packed output words at
  ``out_base + pixel * cw_out + index`` and, for the integer last layer, writes the scores
  to the ``scores`` memory one per cycle while keeping the running first argmax
  (:func:`xnorflow.sw.encoding.argmax_first`: a later score replaces the best only if it is
  strictly greater).

Every address is an incremental sum of precomputed descriptor fields (no multipliers).
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw import program as prog
from ..sw.targets import Target
from .engine import TileEngine
from .memories import addr_width
from .post import MODE_INTEGER, MODE_THRESHOLD

__all__ = ["ERR_MAGIC", "ERR_GEOMETRY", "ERR_EMPTY", "ERR_BATCH", "Sequencer", "engine_max_k"]

#: ``error`` codes of a run.
ERR_MAGIC = 1
ERR_GEOMETRY = 2
ERR_EMPTY = 3
ERR_BATCH = 4

#: Header words the sequencer reads.
_HDR = {f: i for i, f in enumerate(prog.HEADER_FIELDS)}
_DESC = {f: i for i, f in enumerate(prog.DESC_FIELDS)}
#: Descriptor fields the gateware keeps in registers.
_USED = ("flags", "in_base", "planes", "plane_stride", "in_h", "in_w", "cw", "kh", "kw",
         "row_skip", "kwords", "w_base", "groups", "out_c", "out_base", "cw_out", "thr_base",
         "score_mul", "npix", "walk_w", "walk_step", "walk_addr_x", "walk_addr_y", "addr0",
         "pad", "pool_k", "pool_step", "pool_addr_x", "pool_addr_y", "in_img_stride")


def engine_max_k(acc_bits: int, planes: int = prog.MAX_PLANES) -> int:
    """Largest ``max_k`` whose accumulator (``max_k * (2^planes - 1)``) fits ``acc_bits``."""
    return ((1 << acc_bits) - 1) // ((1 << planes) - 1)


class Sequencer(wiring.Component):
    """Runs every layer of the program in memory on the tile engine.

    Parameters
    ----------
    target : Target
        Geometry ``R x C x W`` (and the accumulator width).
    depths : dict
        Words of each memory (address widths).

    Members
    -------
    start : In(1)
        Pulse: run the program from the top (ignored while ``busy``).
    busy : Out(1)
        A run is in progress; the sequencer owns every memory port.
    done : Out(1)
        The last run finished without error; ``result`` and the ``scores`` memory hold
        its outcome (cleared by ``start``).
    error : Out(4)
        Error of the last run (:data:`ERR_MAGIC`, :data:`ERR_GEOMETRY`, :data:`ERR_EMPTY`,
        :data:`ERR_BATCH`).
    cycles : Out(32)
        Cycles of the last (or current) run, from the cycle after ``start``.
    batch : In(8)
        Images of the run, sampled with ``start`` (0 or 1: one; at most ``R`` and the
        program's ``max_batch``, else ``error`` 4).
    result : Out(16)
        Class of image 0 of the last run (first argmax of its scores).
    results : Out(ArrayLayout(16, R))
        Class of each image of the last run.
    n_classes : Out(16)
        Number of scores of the last run.
    prog_*, wgt_*, thr_*, act_*, score_* :
        Memory ports, see :class:`~xnorflow.hw.memories.AcceleratorMemories`.

    Throughput: one operand beat per cycle; a tile of ``K = planes * kh * kw * cw`` beats
    takes ``max(K, 2R)`` cycles in steady state (the engine's limit). Per layer, the
    descriptor fetch, the walker's first fill and the pipeline drain add a fixed overhead
    (:func:`xnorflow.sw.perf.predict_network_cycles` models all of it).
    """

    def __init__(self, target: Target, depths: dict):
        self.target = target
        self.depths = dict(depths)
        R, C, W = target.rows, target.cols, target.width
        self.aw = {n: addr_width(d) for n, d in self.depths.items()}
        self.field_bits = prog.field_bits(self.depths, C)
        # score_mul is one of prog.SCORE_MULS (checked by the program builder): the output
        # stage uses a shift instead of a multiplier per column
        self.engine = TileEngine(R, C, W, engine_max_k(target.acc_bits), prog.MAX_PLANES,
                                 small_mul=True)
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "cycles": Out(32),
            "batch": In(8),
            "result": Out(16),
            "results": Out(data.ArrayLayout(16, R)),
            "n_classes": Out(16),
            "prog_raddr": Out(self.aw["program"]),
            "prog_rdata": In(32),
            "wgt_raddr": Out(self.aw["weights"]),
            "wgt_ren": Out(1),
            "wgt_rdata": In(C * W),
            "thr_raddr": Out(self.aw["thresholds"]),
            "thr_rdata": In(C * 32),
            "act_raddr": Out(data.ArrayLayout(self.aw["activations"], R)),
            "act_ren": Out(1),
            "act_rdata": In(data.ArrayLayout(W, R)),
            "act_waddr": Out(self.aw["activations"]),
            "act_wdata": Out(W),
            "act_we": Out(1),
            "score_waddr": Out(self.aw["scores"]),
            "score_wdata": Out(32),
            "score_we": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 -- one FSM, kept together for reading
        m = Module()
        t = self.target
        R, C, W = t.rows, t.cols, t.width
        FB = self.field_bits
        SW = FB + 3  # signed width of address arithmetic
        m.submodules.engine = eng = self.engine

        # ---- descriptor registers ----------------------------------------------------------
        f = {}
        for name in _USED:
            if name == "addr0":
                f[name] = Signal(signed(SW), name="d_addr0")
            elif name == "score_mul":
                f[name] = Signal(signed(prog.SCORE_MUL_BITS), name="d_score_mul")
            else:
                f[name] = Signal(min(FB, prog.SMALL_FIELDS.get(name, FB)), name=f"d_{name}")
        integer = f["flags"][0]
        n_layers = Signal(16)
        magic = Signal(32)
        geometry = Signal(32)
        n_classes = Signal(16)
        max_batch = Signal(8)

        # ---- fetch -------------------------------------------------------------------------
        f_idx = Signal(range(prog.DESC_WORDS + 2))
        f_base = Signal(self.aw["program"] + 1)
        layer = Signal(16)
        m.d.comb += self.prog_raddr.eq(f_base + f_idx)
        word = self.prog_rdata

        # ---- walker: window origins of the next tile's rows ---------------------------------
        cb_valid = [Signal(name=f"cb_valid{r}") for r in range(R)]
        cb_by = [Signal(signed(SW), name=f"cb_by{r}") for r in range(R)]
        cb_bx = [Signal(signed(SW), name=f"cb_bx{r}") for r in range(R)]
        cb_base = [Signal(signed(SW), name=f"cb_base{r}") for r in range(R)]
        nb_valid = Array(Signal(name=f"nb_valid{r}") for r in range(R))
        nb_by = Array(Signal(signed(SW), name=f"nb_by{r}") for r in range(R))
        nb_bx = Array(Signal(signed(SW), name=f"nb_bx{r}") for r in range(R))
        nb_base = Array(Signal(signed(SW), name=f"nb_base{r}") for r in range(R))
        wk_idx = Signal(range(R + 1))
        wk_pix = Signal(FB)
        wk_ox = Signal(FB)
        wk_by = Signal(signed(SW))
        wk_bx = Signal(signed(SW))
        wk_line = Signal(signed(SW))
        wk_addr = Signal(signed(SW))
        wk_full = wk_idx == R
        wk_img = Signal(8)  # image of the pixel being walked (batch)
        wk_ibase = Signal(signed(SW))  # its input map's offset: wk_img * in_img_stride
        rowoff = Array(Signal(FB, name=f"rowoff{r}") for r in range(R))
        ro_acc = Signal(FB)
        ro_fill = Signal()
        batch = Signal(8)  # images of this run (1..R), latched at start
        npix_tot = Signal(FB)  # batch * npix, accumulated during FILL
        n_acc = Signal(8)

        def walker_reset():
            return [wk_idx.eq(0), wk_pix.eq(0), wk_ox.eq(0), wk_by.eq(-f["pad"]),
                    wk_bx.eq(-f["pad"]), wk_line.eq(f["addr0"]), wk_addr.eq(f["addr0"]),
                    wk_img.eq(0), wk_ibase.eq(0)]

        with m.If(~wk_full):
            m.d.sync += [
                nb_valid[wk_idx].eq(wk_img < batch),
                nb_by[wk_idx].eq(wk_by),
                nb_bx[wk_idx].eq(wk_bx),
                nb_base[wk_idx].eq(wk_addr + f["in_base"]),
                wk_idx.eq(wk_idx + 1),
                wk_pix.eq(wk_pix + 1),
            ]
            with m.If(ro_fill):
                step = Mux(integer, f["out_c"], f["cw_out"])
                m.d.sync += [rowoff[wk_idx].eq(ro_acc), ro_acc.eq(ro_acc + step)]
            with m.If(wk_pix == f["npix"] - 1):
                nxt = wk_ibase + f["in_img_stride"]
                m.d.sync += [
                    wk_pix.eq(0), wk_ox.eq(0), wk_bx.eq(-f["pad"]), wk_by.eq(-f["pad"]),
                    wk_img.eq(wk_img + 1), wk_ibase.eq(nxt),
                    wk_line.eq(f["addr0"] + nxt), wk_addr.eq(f["addr0"] + nxt),
                ]
            with m.Elif(wk_ox == f["walk_w"] - 1):
                m.d.sync += [
                    wk_ox.eq(0), wk_bx.eq(-f["pad"]), wk_by.eq(wk_by + f["walk_step"]),
                    wk_line.eq(wk_line + f["walk_addr_y"]),
                    wk_addr.eq(wk_line + f["walk_addr_y"]),
                ]
            with m.Else():
                m.d.sync += [wk_ox.eq(wk_ox + 1), wk_bx.eq(wk_bx + f["walk_step"]),
                             wk_addr.eq(wk_addr + f["walk_addr_x"])]

        def swap_banks():
            stmts = [wk_idx.eq(0)]
            for r in range(R):
                stmts += [cb_valid[r].eq(nb_valid[r]), cb_by[r].eq(nb_by[r]),
                          cb_bx[r].eq(nb_bx[r]), cb_base[r].eq(nb_base[r])]
            return stmts

        # ---- operand generator --------------------------------------------------------------
        gen_active = Signal()
        swap_pending = Signal()
        g_pix0 = Signal(FB)
        g_grp = Signal(FB)
        g_px = Signal(8)
        g_py = Signal(8)
        po_x = Signal(FB)
        po_y = Signal(FB)
        po_addr = Signal(signed(SW))
        po_line = Signal(signed(SW))
        g_b = Signal(4)
        pbase = Signal(signed(SW))
        g_dy = Signal(8)  # < kh (SMALL_FIELDS)
        g_dx = Signal(8)  # < kw
        g_cw = Signal(FB)
        ry = Signal(FB)
        rx = Signal(FB)
        woff = Signal(signed(SW))
        waddr = Signal(FB + 1)
        gbase = Signal(FB + 1)

        v1 = Signal()
        st_last = Signal()
        st_shift = Signal(4)
        st_mask = Signal(R)
        ops = eng.operands
        accepted = ops.valid & ops.ready
        issue = ~v1 | accepted
        beat = Signal()
        m.d.comb += [
            beat.eq(issue & gen_active & ~swap_pending),
            self.act_ren.eq(issue),
            self.wgt_ren.eq(issue),
            self.wgt_raddr.eq(waddr),
            ops.valid.eq(v1),
            ops.p.last.eq(st_last),
            ops.p.shift.eq(st_shift),
        ]
        for c in range(C):
            m.d.comb += ops.p.wgt[c].eq(self.wgt_rdata[c * W:(c + 1) * W])
        mask = Signal(R)
        for r in range(R):
            yy = cb_by[r] + ry
            xx = cb_bx[r] + rx
            m.d.comb += [
                self.act_raddr[r].eq((cb_base[r] + pbase + woff)[:self.aw["activations"]]),
                mask[r].eq(cb_valid[r] & (yy >= 0) & (yy < f["in_h"])
                           & (xx >= 0) & (xx < f["in_w"])),
                ops.p.act[r].eq(Mux(st_mask[r], self.act_rdata[r], 0)),
            ]
        end_cw = g_cw == f["cw"] - 1
        end_dx = g_dx == f["kw"] - 1
        end_dy = g_dy == f["kh"] - 1
        end_plane = g_b == f["planes"] - 1
        end_px = g_px == f["pool_k"] - 1
        end_py = g_py == f["pool_k"] - 1
        end_grp = g_grp == f["groups"] - 1
        last_tile = g_pix0 + R >= npix_tot
        is_last = end_cw & end_dx & end_dy & end_plane
        with m.If(issue):
            m.d.sync += [v1.eq(beat), st_last.eq(is_last), st_shift.eq(g_b), st_mask.eq(mask)]
        with m.If(gen_active & swap_pending & wk_full):
            m.d.sync += swap_banks()
            m.d.sync += swap_pending.eq(0)
        with m.If(beat):
            with m.If(~end_cw):
                m.d.sync += [g_cw.eq(g_cw + 1), woff.eq(woff + 1), waddr.eq(waddr + 1)]
            with m.Elif(~end_dx):
                m.d.sync += [g_cw.eq(0), g_dx.eq(g_dx + 1), rx.eq(rx + 1), woff.eq(woff + 1),
                             waddr.eq(waddr + 1)]
            with m.Elif(~end_dy):
                m.d.sync += [g_cw.eq(0), g_dx.eq(0), rx.eq(po_x), g_dy.eq(g_dy + 1),
                             ry.eq(ry + 1), woff.eq(woff + 1 + f["row_skip"]),
                             waddr.eq(waddr + 1)]
            with m.Else():
                m.d.sync += [g_cw.eq(0), g_dx.eq(0), g_dy.eq(0), woff.eq(0)]
                with m.If(~end_plane):
                    m.d.sync += [g_b.eq(g_b + 1), pbase.eq(pbase + f["plane_stride"]),
                                 waddr.eq(gbase), rx.eq(po_x), ry.eq(po_y)]
                with m.Else():
                    m.d.sync += g_b.eq(0)
                    with m.If(~end_px):
                        nx = po_addr + f["pool_addr_x"]
                        m.d.sync += [g_px.eq(g_px + 1), po_x.eq(po_x + f["pool_step"]),
                                     po_addr.eq(nx), pbase.eq(nx), waddr.eq(gbase),
                                     rx.eq(po_x + f["pool_step"]), ry.eq(po_y)]
                    with m.Elif(~end_py):
                        ny = po_line + f["pool_addr_y"]
                        m.d.sync += [g_px.eq(0), g_py.eq(g_py + 1), po_x.eq(0),
                                     po_y.eq(po_y + f["pool_step"]), po_line.eq(ny),
                                     po_addr.eq(ny), pbase.eq(ny), waddr.eq(gbase),
                                     rx.eq(0), ry.eq(po_y + f["pool_step"])]
                    with m.Else():
                        m.d.sync += [g_px.eq(0), g_py.eq(0), po_x.eq(0), po_y.eq(0),
                                     po_addr.eq(0), po_line.eq(0), pbase.eq(0), rx.eq(0),
                                     ry.eq(0)]
                        with m.If(~end_grp):
                            m.d.sync += [g_grp.eq(g_grp + 1), gbase.eq(gbase + f["kwords"]),
                                         waddr.eq(gbase + f["kwords"])]
                        with m.Else():
                            m.d.sync += [g_grp.eq(0), gbase.eq(f["w_base"]),
                                         waddr.eq(f["w_base"])]
                            with m.If(last_tile):
                                m.d.sync += gen_active.eq(0)
                            with m.Else():
                                m.d.sync += g_pix0.eq(g_pix0 + R)
                                with m.If(wk_full):
                                    m.d.sync += swap_banks()
                                with m.Else():
                                    m.d.sync += swap_pending.eq(1)

        # ---- tile issuer ---------------------------------------------------------------------
        tl = eng.tile
        iss_active = Signal()
        iss_ready = Signal()  # threshold word for the current address is on thr_rdata
        i_pix0 = Signal(FB)
        i_grp = Signal(FB)
        i_grem = Signal(signed(FB + 1))
        i_px = Signal(8)
        i_py = Signal(8)
        i_taddr = Signal(FB + 1)
        m.d.comb += self.thr_raddr.eq(i_taddr)
        i_last_tile = i_pix0 + R >= npix_tot
        i_end_px = i_px == f["pool_k"] - 1
        i_end_py = i_py == f["pool_k"] - 1
        i_end_grp = i_grp == f["groups"] - 1
        m.d.comb += [
            tl.valid.eq(iss_active & iss_ready),
            tl.p.mode.eq(Mux(integer, MODE_INTEGER, MODE_THRESHOLD)),
            tl.p.rows.eq(Mux(i_last_tile, npix_tot - i_pix0, R)),
            tl.p.chans.eq(Mux(i_grem >= C, C, i_grem)),
            tl.p.pool_first.eq((i_px == 0) & (i_py == 0)),
            tl.p.pool_last.eq(i_end_px & i_end_py),
            tl.p.pixel_end.eq(i_end_px & i_end_py & i_end_grp),
            tl.p.score_mul.eq(f["score_mul"]),
        ]
        for c in range(C):
            lane = self.thr_rdata[c * 32:(c + 1) * 32]
            m.d.comb += [
                tl.p.neg[c].eq(lane[prog.LANE_NEG_BIT] & ~integer),
                tl.p.pool_op[c].eq(lane[prog.LANE_POOL_BIT]),
                tl.p.param[c].eq(Mux(integer, lane.as_signed(),
                                     lane[:prog.LANE_T_BITS].as_signed())),
            ]
        with m.If(iss_active & ~iss_ready):
            m.d.sync += iss_ready.eq(1)
        with m.If(tl.valid & tl.ready):
            m.d.sync += iss_ready.eq(0)
            with m.If(~i_end_px):
                m.d.sync += i_px.eq(i_px + 1)
            with m.Elif(~i_end_py):
                m.d.sync += [i_px.eq(0), i_py.eq(i_py + 1)]
            with m.Else():
                m.d.sync += [i_px.eq(0), i_py.eq(0)]
                with m.If(~i_end_grp):
                    m.d.sync += [i_grp.eq(i_grp + 1), i_grem.eq(i_grem - C),
                                 i_taddr.eq(i_taddr + 1)]
                with m.Else():
                    m.d.sync += [i_grp.eq(0), i_grem.eq(f["out_c"]), i_taddr.eq(f["thr_base"]),
                                 i_pix0.eq(i_pix0 + R)]
                    with m.If(i_last_tile):
                        m.d.sync += iss_active.eq(0)

        # ---- writer: packed words and scores ---------------------------------------------------
        wr_active = Signal()
        wr_tbase = Signal(FB + 1)
        wr_rem = Signal(signed(FB + 1))  # pixels from this tile on
        wr_lastrow = Mux(wr_rem >= R, R - 1, wr_rem - 1)
        words = eng.words
        m.d.comb += [
            words.ready.eq(1),
            self.act_waddr.eq(wr_tbase + rowoff[words.p.row] + words.p.index),
            self.act_wdata.eq(words.p.data),
            self.act_we.eq(words.valid & wr_active),
        ]
        with m.If(words.valid & (words.p.row == wr_lastrow)
                  & (words.p.index == f["cw_out"] - 1)):
            m.d.sync += [wr_tbase.eq(wr_tbase + ro_acc), wr_rem.eq(wr_rem - R)]
            with m.If(wr_rem <= R):
                m.d.sync += wr_active.eq(0)

        # scores: a beat (C scores of one column group) is buffered and written one score
        # per cycle, keeping the running first argmax; the engine is held only if the next
        # beat arrives before the buffer is drained.
        sc = eng.scores
        s_busy = Signal()
        s_buf = [Signal(signed(32), name=f"s_buf{c}") for c in range(C)]
        s_idx = Signal(range(C))
        s_cnt = Signal(range(C))
        s_base = Signal(16)  # first channel of the column group being written
        s_row = Signal(range(R))  # image (row) of the buffered beat
        s_n = s_base + s_idx
        s_val = Array(s_buf)[s_idx]
        s_end = s_busy & (s_idx == s_cnt)
        s_last_row = s_row == batch - 1
        best = Array(Signal(signed(32), name=f"best{r}") for r in range(R))
        best_idx = Array(Signal(16, name=f"best_idx{r}") for r in range(R))
        s_first = Array(Signal(name=f"s_first{r}") for r in range(R))
        m.d.comb += [
            sc.ready.eq(~s_busy | s_end),
            self.score_waddr.eq(rowoff[s_row] + s_n),
            self.score_wdata.eq(s_val),
            self.score_we.eq(s_busy),
        ]
        for r in range(R):
            m.d.comb += self.results[r].eq(best_idx[r])
        m.d.comb += self.result.eq(best_idx[0])
        with m.If(s_busy):
            m.d.sync += s_idx.eq(s_idx + 1)
            with m.If(s_first[s_row] | (s_val > best[s_row])):
                m.d.sync += [best[s_row].eq(s_val), best_idx[s_row].eq(s_n),
                             s_first[s_row].eq(0)]
            with m.If(s_end):
                m.d.sync += [s_busy.eq(0), s_idx.eq(0)]
                with m.If(s_last_row):
                    m.d.sync += s_base.eq(s_base + C)
                    with m.If(s_n == f["out_c"] - 1):
                        m.d.sync += wr_active.eq(0)
        with m.If(sc.valid & sc.ready):
            nb = Mux(s_busy & s_last_row, s_base + C, s_base)
            m.d.sync += [s_busy.eq(1), s_idx.eq(0), s_row.eq(sc.p.row),
                         s_cnt.eq(Mux(f["out_c"] - nb >= C, C - 1, f["out_c"] - nb - 1))]
            for c in range(C):
                m.d.sync += s_buf[c].eq(sc.p.score[c])

        # ---- top FSM ------------------------------------------------------------------------
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.comb += self.n_classes.eq(n_classes)
        geom = R | C << 8 | W << 16
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), self.cycles.eq(0), self.done.eq(0),
                                 self.error.eq(0), f_idx.eq(0), f_base.eq(0),
                                 batch.eq(Mux(self.batch == 0, 1, self.batch))]
                    m.next = "HDR"
            with m.State("HDR"):
                m.d.sync += f_idx.eq(f_idx + 1)
                with m.Switch(f_idx - 1):
                    with m.Case(_HDR["magic"]):
                        m.d.sync += magic.eq(word)
                    with m.Case(_HDR["n_layers"]):
                        m.d.sync += n_layers.eq(word)
                    with m.Case(_HDR["n_classes"]):
                        m.d.sync += n_classes.eq(word)
                    with m.Case(_HDR["geometry"]):
                        m.d.sync += geometry.eq(word)
                    with m.Case(_HDR["max_batch"]):
                        m.d.sync += max_batch.eq(word)
                with m.If(f_idx == _HDR["max_batch"] + 1):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(magic != prog.MAGIC):
                    m.d.sync += [self.error.eq(ERR_MAGIC), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(geometry != geom):
                    m.d.sync += [self.error.eq(ERR_GEOMETRY), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(n_layers == 0):
                    m.d.sync += [self.error.eq(ERR_EMPTY), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif((batch > max_batch) | (batch > R)):
                    m.d.sync += [self.error.eq(ERR_BATCH), busy.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [layer.eq(0), f_base.eq(prog.HEADER_WORDS), f_idx.eq(0),
                                 s_base.eq(0), s_idx.eq(0)]
                    m.d.sync += [s_first[r].eq(1) for r in range(R)]
                    m.next = "DESC"
            with m.State("DESC"):
                m.d.sync += f_idx.eq(f_idx + 1)
                with m.Switch(f_idx - 1):
                    for name in _USED:
                        with m.Case(_DESC[name]):
                            m.d.sync += f[name].eq(word)
                with m.If(f_idx == len(prog.DESC_FIELDS)):
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += walker_reset()
                m.d.sync += [ro_fill.eq(1), ro_acc.eq(0), npix_tot.eq(0), n_acc.eq(0)]
                m.next = "FILL"
            with m.State("FILL"):
                with m.If(n_acc != batch):
                    m.d.sync += [npix_tot.eq(npix_tot + f["npix"]), n_acc.eq(n_acc + 1)]
                with m.If(wk_full & (n_acc == batch)):
                    m.d.sync += swap_banks()
                    m.d.sync += [
                        ro_fill.eq(0),
                        gen_active.eq(1), swap_pending.eq(0), g_pix0.eq(0), g_grp.eq(0),
                        g_px.eq(0), g_py.eq(0), po_x.eq(0), po_y.eq(0), po_addr.eq(0),
                        po_line.eq(0), g_b.eq(0), pbase.eq(0), g_dy.eq(0), g_dx.eq(0),
                        g_cw.eq(0), ry.eq(0), rx.eq(0), woff.eq(0), waddr.eq(f["w_base"]),
                        gbase.eq(f["w_base"]),
                        iss_active.eq(1), iss_ready.eq(0), i_pix0.eq(0), i_grp.eq(0),
                        i_grem.eq(f["out_c"]), i_px.eq(0), i_py.eq(0),
                        i_taddr.eq(f["thr_base"]),
                        wr_active.eq(1), wr_tbase.eq(f["out_base"]), wr_rem.eq(npix_tot),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(~gen_active & ~iss_active & ~wr_active & ~v1):
                    with m.If(layer + 1 == n_layers):
                        m.d.sync += [busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [layer.eq(layer + 1), f_base.eq(f_base + prog.DESC_WORDS),
                                     f_idx.eq(0)]
                        m.next = "DESC"
        return m
