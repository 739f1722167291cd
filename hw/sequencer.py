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

Every address is an incremental sum of precomputed descriptor fields (no multipliers),
kept only as wide as the memories need: activation addresses modulo the activation depth,
spatial coordinates modulo ``2^COORD_BITS`` (``docs/accelerator.md``, "Widths").
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw import program as prog
from ..sw.targets import Target
from .engine import TileEngine
from .memories import addr_width
from .pe import engine_max_k
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

def Reg(*args, **kwargs) -> Signal:  # noqa: N802 -- a Signal constructor
    """A register without reset: data and counters that are loaded before they are used (no
    reset mux in front of their enable on iCE40)."""
    return Signal(*args, reset_less=True, src_loc_at=1 + kwargs.pop("src_loc_at", 0), **kwargs)


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
        # score_mul is one of prog.SCORE_MULS (checked by the program builder): the output
        # stage uses a shift instead of a multiplier per column
        # scores are prog.score_bits wide (checked by the program builder), sign-extended to
        # the 32-bit scores memory
        self.score_bits = prog.score_bits(target)
        self.engine = TileEngine(R, C, W, engine_max_k(target.acc_bits), prog.MAX_PLANES,
                                 score_width=self.score_bits, small_mul=True,
                                 levels_per_stage=target.popcount_levels,
                                 pipelined_post=True)  # Fmax: see docs/accelerator.md
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
        aw = self.aw
        AW = aw["activations"]  # activation addresses: all arithmetic modulo the depth
        CB = prog.COORD_BITS  # spatial coordinates, modulo 2^CB (docs/program.md)
        NPB = max(self.depths["activations"], R).bit_length()  # pixel counts
        LCB = (C - 1).bit_length()  # channel index within a column group (C = 2^LCB)
        OCB = max(aw["scores"], LCB + 1)  # class index (out_c - 1 < scores depth)
        SB = self.score_bits
        ROB = max(AW, aw["scores"])  # row offsets (activation or score addresses)
        m.submodules.engine = eng = self.engine

        # ---- descriptor registers (decoded at load: "_m1" holds field - 1) -----------------
        word = self.prog_rdata
        MW = max(AW, NPB, OCB, CB, 8, aw["thresholds"], aw["program"])
        wm1 = Signal(MW)  # shared decrementer: word - 1
        m.d.comb += wm1.eq(word[:MW] - 1)
        integer = Reg(name="d_integer")
        a0 = Reg(AW, name="d_a0")  # in_base + addr0: window origin of image 0, output 0
        regs = {  # field -> (register, value loaded from its word)
            "planes": (Reg(range(prog.MAX_PLANES), name="d_planes_m1"), wm1),
            "plane_stride": (Reg(AW, name="d_plane_stride"), word),
            "in_h": (Reg(CB, name="d_in_h_m1"), wm1),
            "in_w": (Reg(CB, name="d_in_w_m1"), wm1),
            "cw": (Reg(AW, name="d_cw_m1"), wm1),
            "kh": (Reg(8, name="d_kh_m1"), wm1),
            "kw": (Reg(8, name="d_kw_m1"), wm1),
            "row_skip": (Reg(AW, name="d_row_skip1"), word[:AW] + 1),
            "w_base": (Reg(aw["weights"], name="d_w_base"), word),
            "groups": (Reg(aw["thresholds"], name="d_groups_m1"), wm1),
            "out_c": (Reg(OCB, name="d_out_c_m1"), wm1),
            "cw_out": (Reg(AW, name="d_cw_out_m1"), wm1),
            "thr_base": (Reg(aw["thresholds"], name="d_thr_base"), word),
            "score_mul": (Reg(signed(3), name="d_score_mul"), word),
            "walk_w": (Reg(CB, name="d_walk_w_m1"), wm1),
            "walk_step": (Reg(CB, name="d_walk_step"), word),
            "walk_addr_x": (Reg(AW, name="d_walk_addr_x"), word),
            "walk_addr_y": (Reg(AW, name="d_walk_addr_y"), word),
            "pad": (Reg(CB, name="d_mpad"), -word[:CB]),  # -pad (mod 2^CB)
            "pool_k": (Reg(prog.SMALL_FIELDS["pool_k"], name="d_pool_k_m1"), wm1),
            "pool_step": (Reg(CB, name="d_pool_step"), word),
            "pool_addr_x": (Reg(AW, name="d_pool_addr_x"), word),
            "pool_addr_y": (Reg(AW, name="d_pool_addr_y"), word),
            "in_img_stride": (Reg(AW, name="d_in_img_stride"), word),
        }
        f = {name: reg for name, (reg, _) in regs.items()}
        npix_m1 = Reg(NPB, name="d_npix_m1")
        ro_step = Reg(ROB, name="d_ro_step")  # row offset step: out_c or cw_out
        lc_m1 = f["out_c"][:LCB]  # channels of the last column group - 1
        last_grp = f["out_c"][LCB:]  # index of the last column group

        empty = Reg()
        magic_ok = Reg()
        geom_ok = Reg()
        n_classes = Signal(aw["scores"] + 1)  # at most the scores depth
        batch_over = Reg()  # the batch exceeds the program's max_batch

        # ---- fetch -------------------------------------------------------------------------
        f_idx = Reg(range(prog.DESC_WORDS + 2))
        f_addr = Reg(aw["program"])
        layers_left = Reg(aw["program"])  # layers after the current one
        m.d.comb += self.prog_raddr.eq(f_addr)

        # ---- walker: window origins of the next tile's rows ---------------------------------
        cb_valid = [Reg(name=f"cb_valid{r}") for r in range(R)]
        cb_by = [Reg(CB, name=f"cb_by{r}") for r in range(R)]
        cb_bx = [Reg(CB, name=f"cb_bx{r}") for r in range(R)]
        cb_base = [Reg(AW, name=f"cb_base{r}") for r in range(R)]
        nb_valid = Array(Reg(name=f"nb_valid{r}") for r in range(R))
        nb_by = Array(Reg(CB, name=f"nb_by{r}") for r in range(R))
        nb_bx = Array(Reg(CB, name=f"nb_bx{r}") for r in range(R))
        nb_base = Array(Reg(AW, name=f"nb_base{r}") for r in range(R))
        wk_idx = Signal(range(R + 1))
        wk_pix = Reg(NPB)
        wk_ox = Reg(CB)
        wk_by = Reg(CB)
        wk_bx = Reg(CB)
        wk_line = Reg(AW)
        wk_addr = Reg(AW)
        wk_full = wk_idx == R
        wk_img = Reg(range(R + 1))  # image of the pixel being walked (saturates at batch)
        wk_iorg = Reg(AW)  # its window origin of output 0: a0 + wk_img * in_img_stride
        rowoff = Array(Reg(ROB, name=f"rowoff{r}") for r in range(R))
        ro_acc = Reg(ROB)
        ro_fill = Signal()
        batch = Reg(range(R + 1))  # images of this run (1..R), latched at start
        batch_big = Reg()  # the requested batch exceeds R
        npix_tot = Reg(NPB)  # batch * npix, accumulated during FILL; then the operand
        # generator's pixels left (from its current tile on)
        n_acc = Reg(range(R + 1))

        wk_load = Signal()  # SETUP: restart the walk at the layer's first pixel
        adv = ~wk_full  # the walker writes one row of the next bank
        img_end = wk_pix == npix_m1
        line_end = img_end | (wk_ox == f["walk_w"])
        start_at = Signal(AW)  # window origin of an image's first output pixel
        line_next = Signal(AW)
        m.d.comb += [start_at.eq(Mux(wk_load, a0, wk_iorg + f["in_img_stride"])),
                     line_next.eq(wk_line + f["walk_addr_y"])]
        with m.If(adv):
            m.d.sync += [
                nb_valid[wk_idx].eq(wk_img != batch),
                nb_by[wk_idx].eq(wk_by),
                nb_bx[wk_idx].eq(wk_bx),
                nb_base[wk_idx].eq(wk_addr),
                wk_idx.eq(wk_idx + 1),
            ]
            with m.If(ro_fill):
                m.d.sync += [rowoff[wk_idx].eq(ro_acc), ro_acc.eq(ro_acc + ro_step)]
        # one update per register under one enable; wk_load has priority
        with m.If(wk_load | adv):
            m.d.sync += [
                wk_pix.eq(Mux(wk_load | img_end, 0, wk_pix + 1)),
                wk_ox.eq(Mux(wk_load | line_end, 0, wk_ox + 1)),
                wk_bx.eq(Mux(wk_load | line_end, f["pad"], wk_bx + f["walk_step"])),
                wk_addr.eq(Mux(wk_load | img_end, start_at,
                               Mux(line_end, line_next, wk_addr + f["walk_addr_x"]))),
            ]
        with m.If(wk_load | (adv & line_end)):
            m.d.sync += [
                wk_by.eq(Mux(wk_load | img_end, f["pad"], wk_by + f["walk_step"])),
                wk_line.eq(Mux(wk_load | img_end, start_at, line_next)),
            ]
        with m.If(wk_load | (adv & img_end)):
            m.d.sync += wk_iorg.eq(start_at)
        with m.If(wk_load | (adv & img_end & (wk_img != batch))):
            m.d.sync += wk_img.eq(Mux(wk_load, 0, wk_img + 1))

        # the walker's bank becomes the current one (one assignment under one enable, so
        # that the registers map to enable flip-flops without a multiplexer)
        swap = Signal()
        with m.If(swap):
            m.d.sync += wk_idx.eq(0)
            for r in range(R):
                m.d.sync += [cb_valid[r].eq(nb_valid[r]), cb_by[r].eq(nb_by[r]),
                             cb_bx[r].eq(nb_bx[r]), cb_base[r].eq(nb_base[r])]

        # ---- operand generator --------------------------------------------------------------
        gen_active = Signal()
        swap_pending = Signal()
        # loop counters and offsets (with reset: they must be 0 when a layer starts, see FILL)
        g_grp = Signal(aw["thresholds"])
        g_px = Signal(prog.SMALL_FIELDS["pool_k"])  # pooling offset (SMALL_FIELDS)
        g_py = Signal(prog.SMALL_FIELDS["pool_k"])
        po_x = Signal(CB)
        po_y = Signal(CB)
        po_addr = Signal(AW)
        po_line = Signal(AW)
        g_b = Signal(range(prog.MAX_PLANES))
        pbase = Signal(AW)  # plane and pooling offset of the window
        g_dy = Signal(8)  # < kh (SMALL_FIELDS)
        g_dx = Signal(8)  # < kw
        g_cw = Signal(AW)
        ry = Signal(CB)
        rx = Signal(CB)
        off = Signal(AW)  # pbase + offset of the word in the window
        waddr = Reg(aw["weights"])
        gbase = Reg(aw["weights"])

        v1 = Signal()
        st_last = Reg()
        st_shift = Reg(range(prog.MAX_PLANES))
        st_mask = Reg(R)
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
            # coordinates modulo 2^CB: a pixel left of / above the map wraps to >= in_w / in_h
            # (check_fits: in + 2 * pad <= 2^CB), so one unsigned compare per axis
            yy = (cb_by[r] + ry)[:CB]
            xx = (cb_bx[r] + rx)[:CB]
            m.d.comb += [
                self.act_raddr[r].eq((cb_base[r] + off)[:AW]),
                mask[r].eq(cb_valid[r] & (yy <= f["in_h"]) & (xx <= f["in_w"])),
                ops.p.act[r].eq(Mux(st_mask[r], self.act_rdata[r], 0)),
            ]
        end_cw = g_cw == f["cw"]
        end_dx = g_dx == f["kw"]
        end_dy = g_dy == f["kh"]
        end_plane = g_b == f["planes"]
        end_px = g_px == f["pool_k"]
        end_py = g_py == f["pool_k"]
        end_grp = g_grp == f["groups"]
        last_tile = npix_tot <= R
        is_last = end_cw & end_dx & end_dy & end_plane
        with m.If(issue):
            m.d.sync += [v1.eq(beat), st_last.eq(is_last), st_shift.eq(g_b), st_mask.eq(mask)]
        with m.If(gen_active & swap_pending & wk_full):
            m.d.comb += swap.eq(1)
            m.d.sync += swap_pending.eq(0)
        # one update per register, under one enable each (maps to enable flip-flops): the
        # loops above, innermost first
        row_end = beat & end_cw  # last word of a window row
        win_end = row_end & end_dx & end_dy  # last word of the window (bit-plane)
        pool_end = end_plane & end_px & end_py  # ... of the last plane and pooling offset
        po_x_step = Signal(CB)
        po_y_step = Signal(CB)
        pb_next = Signal(AW)  # pbase of the next window
        w_inc = Signal(aw["weights"])
        m.d.comb += w_inc.eq(waddr + 1)
        m.d.comb += [
            po_x_step.eq(po_x + f["pool_step"]),
            po_y_step.eq(po_y + f["pool_step"]),
            pb_next.eq(Mux(~end_plane, pbase + f["plane_stride"],
                           Mux(~end_px, po_addr + f["pool_addr_x"],
                               Mux(~end_py, po_line + f["pool_addr_y"], 0)))),
        ]
        with m.If(beat):
            m.d.sync += [
                g_cw.eq(Mux(end_cw, 0, g_cw + 1)),
                off.eq(Mux(end_cw & end_dx & end_dy, pb_next,
                           off + Mux(end_cw & end_dx, f["row_skip"], 1))),
                # a window restarts at gbase; after the last pooling offset the next group
                # follows (waddr + 1), after the last group the next tile starts at w_base
                waddr.eq(Mux(end_cw & end_dx & end_dy & ~(pool_end & ~end_grp),
                             Mux(pool_end, f["w_base"], gbase), w_inc)),
            ]
        with m.If(row_end):
            m.d.sync += [
                g_dx.eq(Mux(end_dx, 0, g_dx + 1)),
                rx.eq(Mux(~end_dx, rx + 1,
                          Mux(~(end_dy & end_plane), po_x, Mux(~end_px, po_x_step, 0)))),
            ]
        with m.If(row_end & end_dx):
            m.d.sync += [
                g_dy.eq(Mux(end_dy, 0, g_dy + 1)),
                ry.eq(Mux(~end_dy, ry + 1,
                          Mux(~(end_plane & end_px), po_y, Mux(~end_py, po_y_step, 0)))),
            ]
        with m.If(win_end):
            m.d.sync += [g_b.eq(Mux(end_plane, 0, g_b + 1)), pbase.eq(pb_next)]
        with m.If(win_end & end_plane):
            m.d.sync += [g_px.eq(Mux(end_px, 0, g_px + 1)), po_addr.eq(pb_next),
                         po_x.eq(Mux(end_px, 0, po_x_step))]
        with m.If(win_end & end_plane & end_px):
            m.d.sync += [g_py.eq(Mux(end_py, 0, g_py + 1)), po_line.eq(pb_next),
                         po_y.eq(Mux(end_py, 0, po_y_step))]
        with m.If(win_end & pool_end):
            # the window's last word is gbase + kwords - 1: the next group's weights follow it
            m.d.sync += [g_grp.eq(Mux(end_grp, 0, g_grp + 1)),
                         gbase.eq(Mux(end_grp, f["w_base"], w_inc))]
            with m.If(end_grp):
                with m.If(last_tile):
                    m.d.sync += gen_active.eq(0)
                with m.Else():
                    m.d.sync += npix_tot.eq(npix_tot - R)
                    with m.If(wk_full):
                        m.d.comb += swap.eq(1)
                    with m.Else():
                        m.d.sync += swap_pending.eq(1)

        # ---- tile issuer ---------------------------------------------------------------------
        tl = eng.tile
        iss_active = Signal()
        iss_ready = Signal()  # threshold word for the current address is on thr_rdata
        i_rem = Reg(NPB)  # pixels from the current tile on
        i_grp = Signal(aw["thresholds"])
        i_px = Signal(prog.SMALL_FIELDS["pool_k"])
        i_py = Signal(prog.SMALL_FIELDS["pool_k"])
        i_taddr = Reg(aw["thresholds"])
        m.d.comb += self.thr_raddr.eq(i_taddr)
        i_last_tile = i_rem <= R
        i_end_px = i_px == f["pool_k"]
        i_end_py = i_py == f["pool_k"]
        i_end_grp = i_grp == f["groups"]
        m.d.comb += [
            tl.valid.eq(iss_active & iss_ready),
            tl.p.mode.eq(Mux(integer, MODE_INTEGER, MODE_THRESHOLD)),
            tl.p.rows.eq(Mux(i_last_tile, i_rem, R)),
            tl.p.chans.eq(Mux(i_end_grp, lc_m1 + 1, C)),
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
                    m.d.sync += [i_grp.eq(i_grp + 1), i_taddr.eq(i_taddr + 1)]
                with m.Else():
                    m.d.sync += [i_grp.eq(0), i_taddr.eq(f["thr_base"]), i_rem.eq(i_rem - R)]
                    with m.If(i_last_tile):
                        m.d.sync += iss_active.eq(0)

        # ---- writer: packed words and scores ---------------------------------------------------
        wr_active = Signal()
        wr_tbase = Reg(AW)
        wr_rem = Reg(NPB)  # pixels from this tile on
        row_off = Signal(ROB)  # rowoff of the row being written
        wr_lastrow = Mux(wr_rem >= R, R - 1, wr_rem - 1)
        words = eng.words
        m.d.comb += [
            words.ready.eq(1),
            self.act_waddr.eq((wr_tbase + row_off + words.p.index)[:AW]),
            self.act_wdata.eq(words.p.data),
            self.act_we.eq(words.valid & wr_active),
        ]
        with m.If(words.valid & (words.p.row == wr_lastrow)
                  & (words.p.index == f["cw_out"])):
            m.d.sync += [wr_tbase.eq(wr_tbase + ro_acc), wr_rem.eq(wr_rem - R)]
            with m.If(wr_rem <= R):
                m.d.sync += wr_active.eq(0)

        # scores: a beat (C scores of one column group) is buffered and written one score
        # per cycle, keeping the running first argmax; the engine is held only if the next
        # beat arrives before the buffer is drained.
        sc = eng.scores
        s_busy = Signal()
        s_buf = [Reg(signed(SB), name=f"s_buf{c}") for c in range(C)]
        s_idx = Reg(range(C))
        s_cnt = Reg(range(C))
        s_grp = Reg(OCB - LCB)  # column group being written (first channel s_grp * C)
        s_row = Reg(range(R))  # image (row) of the buffered beat
        s_n = Cat(s_idx[:LCB], s_grp)  # class index s_grp * C + s_idx (C = 2^LCB)
        s_val = Array(s_buf)[s_idx]
        s_end = s_busy & (s_idx == s_cnt)
        s_last_row = s_row == batch - 1
        best = Array(Reg(signed(SB), name=f"best{r}") for r in range(R))
        best_idx = Array(Reg(OCB, name=f"best_idx{r}") for r in range(R))
        s_first = Array(Reg(name=f"s_first{r}") for r in range(R))
        m.d.comb += [
            sc.ready.eq(~s_busy | s_end),
            self.score_waddr.eq((row_off + s_n)[:aw["scores"]]),
            # one row-offset multiplexer for both writers: a threshold layer writes words
            # only, the integer layer scores only
            row_off.eq(rowoff[Mux(integer, s_row, words.p.row)]),
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
                    m.d.sync += s_grp.eq(s_grp + 1)
                    with m.If(s_grp == last_grp):
                        m.d.sync += wr_active.eq(0)
        with m.If(sc.valid & sc.ready):
            ng = Mux(s_busy & s_last_row, s_grp + 1, s_grp)
            m.d.sync += [s_busy.eq(1), s_idx.eq(0), s_row.eq(sc.p.row),
                         s_cnt.eq(Mux(ng == last_grp, lc_m1, C - 1))]
            for c in range(C):
                m.d.sync += s_buf[c].eq(sc.p.score[c])

        # ---- top FSM ------------------------------------------------------------------------
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        run_start = Signal()
        with m.If(busy | run_start):  # one enable: cleared at start, counts while busy
            m.d.sync += self.cycles.eq(Mux(busy, self.cycles + 1, 0))
        m.d.comb += self.n_classes.eq(n_classes)
        geom = R | C << 8 | W << 16
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += run_start.eq(1)
                    m.d.sync += [busy.eq(1), self.done.eq(0),
                                 self.error.eq(0), f_idx.eq(0), f_addr.eq(0),
                                 batch.eq(Mux(self.batch == 0, 1, self.batch)),
                                 batch_big.eq(self.batch > R)]
                    m.next = "HDR"
            with m.State("HDR"):
                m.d.sync += [f_idx.eq(f_idx + 1), f_addr.eq(f_addr + 1)]
                with m.Switch(f_idx):  # the word of address f_idx - 1 is on prog_rdata
                    with m.Case(_HDR["magic"] + 1):
                        m.d.sync += magic_ok.eq(word == prog.MAGIC)
                    with m.Case(_HDR["n_layers"] + 1):
                        m.d.sync += [layers_left.eq(wm1), empty.eq(word[:16] == 0)]
                    with m.Case(_HDR["n_classes"] + 1):
                        m.d.sync += n_classes.eq(word)
                    with m.Case(_HDR["geometry"] + 1):
                        m.d.sync += geom_ok.eq(word == geom)
                    with m.Case(_HDR["max_batch"] + 1):
                        m.d.sync += batch_over.eq(batch > word[:8])
                with m.If(f_idx == _HDR["max_batch"] + 1):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(~magic_ok):
                    m.d.sync += [self.error.eq(ERR_MAGIC), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(~geom_ok):
                    m.d.sync += [self.error.eq(ERR_GEOMETRY), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(empty):
                    m.d.sync += [self.error.eq(ERR_EMPTY), busy.eq(0)]
                    m.next = "IDLE"
                with m.Elif(batch_big | batch_over):
                    m.d.sync += [self.error.eq(ERR_BATCH), busy.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [f_addr.eq(prog.HEADER_WORDS), f_idx.eq(0),
                                 s_grp.eq(0), s_idx.eq(0)]
                    m.d.sync += [s_first[r].eq(1) for r in range(R)]
                    m.next = "DESC"
            with m.State("DESC"):
                # f_addr stops at the next descriptor's first word
                m.d.sync += f_idx.eq(f_idx + 1)
                with m.If(f_idx != len(prog.DESC_FIELDS)):
                    m.d.sync += f_addr.eq(f_addr + 1)
                with m.Switch(f_idx):  # the word of field f_idx - 1 is on prog_rdata
                    for name, idx in _DESC.items():
                        with m.Case(idx + 1):
                            if name == "flags":
                                m.d.sync += integer.eq(word[0])
                            elif name == "in_base":
                                m.d.sync += a0.eq(word)
                            elif name == "addr0":
                                m.d.sync += a0.eq(a0 + word[:AW])
                            elif name == "out_base":  # the writer is idle
                                m.d.sync += wr_tbase.eq(word)
                            elif name == "npix":
                                m.d.sync += npix_m1.eq(wm1)
                            elif name == "out_c":
                                m.d.sync += f["out_c"].eq(wm1)
                                with m.If(integer):
                                    m.d.sync += ro_step.eq(word)
                            elif name == "cw_out":
                                m.d.sync += f["cw_out"].eq(wm1)
                                with m.If(~integer):
                                    m.d.sync += ro_step.eq(word)
                            elif name in regs:
                                reg, value = regs[name]
                                m.d.sync += reg.eq(value)
                with m.If(f_idx == len(prog.DESC_FIELDS)):
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.comb += wk_load.eq(1)
                m.d.sync += wk_idx.eq(0)
                m.d.sync += [ro_fill.eq(1), ro_acc.eq(0), npix_tot.eq(0), n_acc.eq(0)]
                m.next = "FILL"
            with m.State("FILL"):
                with m.If(n_acc != batch):
                    m.d.sync += [npix_tot.eq(npix_tot + npix_m1 + 1), n_acc.eq(n_acc + 1)]
                with m.If(wk_full & (n_acc == batch)):
                    m.d.comb += swap.eq(1)
                    m.d.sync += [
                        ro_fill.eq(0),
                        # the loop counters and offsets of the operand generator and the
                        # tile issuer are 0 here: after reset, and after the last tile of the
                        # previous layer (every loop ends on its last value and wraps to 0)
                        gen_active.eq(1), swap_pending.eq(0), waddr.eq(f["w_base"]),
                        gbase.eq(f["w_base"]),
                        iss_active.eq(1), iss_ready.eq(0), i_rem.eq(npix_tot),
                        i_taddr.eq(f["thr_base"]),
                        wr_active.eq(1), wr_rem.eq(npix_tot),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(~gen_active & ~iss_active & ~wr_active & ~v1):
                    with m.If(layers_left == 0):
                        m.d.sync += [busy.eq(0), self.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [layers_left.eq(layers_left - 1), f_idx.eq(0)]
                        m.next = "DESC"
        return m
