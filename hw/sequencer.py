"""The on-chip sequencer: plays the program's tables, layer after layer, with flat counters.

Everything the gateware would otherwise compute (window origins, padding, loop bounds, tile
spacing) was computed by the compiler (:mod:`xnorflow.sw.program`, ``docs/program.md``): per
layer a *beat table* (the beats of one tile set: offsets, tap positions, flags, bubbles) and
a *row list* (per array row and tile: the window origin and the padding it needs). The
sequencer reads a descriptor, prefetches the first tile's ``R`` row entries, then plays the
beat table once per column group and tile of rows, and waits for the pipeline to drain
before the next layer. Nothing downstream ever stalls it: the array, the output stage and the
memory writes are fixed-latency pipelines (``docs/accelerator.md``).

Per beat: ``act_raddr[r] = origin[r] + offset`` (modulo the activation depth), or the top
address (the all-zero word, value -1) when the row's window tap lies in the padding (a
synchronous set of the address register); the weights address restarts at the group's first
word on a plane's first beat and counts up otherwise. Every loop decision is a register
(``b_end``, ``g_end``, ``last_tile``) computed a cycle ahead.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..sw import program as prog
from ..sw.perf import decode_regs, fetch_regs, target_timing, write_regs
from ..sw.targets import Target
from .array import control_layout
from .memories import weight_select_bits
from .post import decode_score_mul, desc_layout

__all__ = ["ERR_BATCH", "ERR_EMPTY", "ERR_GEOMETRY", "ERR_MAGIC", "Sequencer"]

#: ``error`` codes of a run.
ERR_MAGIC = 1
ERR_GEOMETRY = 2
ERR_EMPTY = 3
ERR_BATCH = 4


def _aw(depth: int) -> int:
    return max(1, (depth - 1).bit_length())


def Reg(*args, **kwargs) -> Signal:  # noqa: N802 -- a Signal constructor
    """A register without reset: loaded before it is used (no reset logic on iCE40)."""
    return Signal(*args, reset_less=True, src_loc_at=1 + kwargs.pop("src_loc_at", 0), **kwargs)


class Sequencer(wiring.Component):
    """Runs every layer of the program in memory.

    Parameters
    ----------
    target : Target
        Geometry ``R x C x W`` (and the popcount pipelining).
    depths : dict
        Words of each memory (address widths).

    Members
    -------
    start : In(1)
        Pulse: run the program (ignored while ``busy``).
    batch : In(8)
        Images of the run, sampled with ``start`` (0 or 1: one; at most ``R`` and the
        program's ``max_batch``, else ``error`` 4).
    busy : Out(1)
        A run is in progress; the sequencer owns every memory port.
    done : Out(1)
        The last run finished without error (cleared by ``start``).
    error : Out(4)
        Error of the last run (:data:`ERR_MAGIC`, :data:`ERR_GEOMETRY`, :data:`ERR_EMPTY`,
        :data:`ERR_BATCH`).
    cycles : Out(32)
        Cycles of the last (or current) run.
    prog_a_raddr, prog_a_rdata : header, descriptors and row lists (program read port A).
    prog_b_raddr, prog_b_rdata, prog_b_ren : beat tables (program read port B; the read
        register keeps its entry while ``prog_b_ren`` is low: a run's later beats).
    prog_c_raddr, prog_c_rdata : (``Target.mem_regs = 2`` only) port C, enabled with port B,
        reads the entry after the one port B reads, so whether an entry plays a run, and its
        flags, are registers when the entry arrives (no logic between port B's RAM and
        ``freeze``, the weights address or the control).
    act_raddr : Out(ArrayLayout(addr, R))
        The ``R`` activation read addresses (registers).
    wgt_raddr : Out(addr)
        The weights read address (a register), in words of ``C * W`` bits (a memory word
        holds ``Target.weight_rows`` of them); it steps by ``R`` through a layer whose
        descriptor has ``ksplit`` or ``ospread`` (each row takes its own word of the memory
        word).
    wgt_own : Out(1)
        (``Target.weight_rows = R`` only) the layer has ``ksplit`` or ``ospread``: every row
        takes its own word (a register of its own, loaded with the descriptor).
    ctl : Out(control_layout())
        The array's control, in the cycle the memories' data of the same beat arrive.
    desc : Out(desc_layout), layer_start, clear : Out(1)
        The layer's settings for the output stage, its restart pulse, and the zero-word write.

    Throughput: one beat per cycle. A run takes
    :func:`xnorflow.sw.perf.program_cycles` cycles exactly.
    """

    def __init__(self, target: Target, depths: dict):
        self.target = target
        self.depths = dict(depths)
        R = target.rows
        self.aw = {n: _aw(d) for n, d in self.depths.items()}
        # the weights address counts words of C lanes, weight_rows to a memory word
        self.aw["weights"] += weight_select_bits(target)
        self.timing = target_timing(target)
        super().__init__({
            "start": In(1),
            "batch": In(8),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(4),
            "cycles": Out(32),
            "prog_a_raddr": Out(self.aw["program"]),
            "prog_a_rdata": In(32),
            "prog_b_raddr": Out(self.aw["program"]),
            "prog_b_rdata": In(32),
            "prog_b_ren": Out(1),
            **({"prog_c_raddr": Out(self.aw["program"]), "prog_c_rdata": In(32)}
               if target.mem_regs == 2 else {}),
            "act_raddr": Out(data.ArrayLayout(self.aw["activations"], R)),
            "wgt_raddr": Out(self.aw["weights"]),
            **({"wgt_own": Out(1)} if target.weight_rows > 1 else {}),
            "ctl": Out(control_layout()),
            "desc": Out(desc_layout(target, depths)),
            "layer_start": Out(1),
            "clear": Out(1),
        })

    def elaborate(self, platform):  # noqa: C901 -- one FSM, kept together for reading
        m = Module()
        t = self.target
        R = t.rows
        aw = self.aw
        AW = aw["activations"]
        PA = aw["program"]
        word = self.prog_a_rdata
        d = self.desc

        # ---- descriptor registers (the output stage reads `desc` directly) -------------------
        # (as wide as the memories bound them: a program that fits never needs more)
        table = Reg(PA)
        entries_m1 = Reg(PA)
        rows_per_image = Reg(AW + 1)
        w_base = Reg(aw["weights"])
        group_words = Reg(aw["weights"] + 1)
        n_batch = Reg(range(R + 1))  # images of this run
        layers_left = Reg(PA)        # layers after the current one
        last_layer = Reg()           # layers_left == 0 (a register: the FSM's exits are short)
        bad_hdr = Reg()              # magic, geometry, empty, batch > R or over the program's
        magic_ok, geom_ok, empty, batch_over, batch_big = (Reg(name=n) for n in (
            "magic_ok", "geom_ok", "empty", "batch_over", "batch_big"))

        # ---- program port A: header and descriptors (f_addr), row lists (rp) ------------------
        f_addr = Reg(PA)   # header, then the next descriptor
        rp = Reg(PA)       # the next row-list entry to read
        rows_on = Signal()  # port A reads the row list (from the layer's prologue on)
        m.d.comb += self.prog_a_raddr.eq(Mux(rows_on, rp, f_addr))
        idx = Reg(range(prog.DESC_READ + 3))  # word of the header/descriptor being read
        # mem_regs = 2: the header and descriptor words are used from a register (`lag` = 1:
        # the word of address idx - 2 is there), so no compare or decode follows port A's
        # RAM; HDR and DESC take a cycle more each (perf.fetch_regs). Row-list entries are
        # taken from the RAM's read data as they are (straight into registers).
        lag = fetch_regs(t.mem_regs)
        hword = word
        if lag:
            hword = Signal(32, name="word_q", reset_less=True)
            m.d.sync += hword.eq(word)

        # ---- row banks: the current tile's rows (used by the beats) and the next tile's ---------
        # (prefetched from the row list while the current tile plays)
        cur_origin = [Reg(AW, name=f"cur_origin{r}") for r in range(R)]
        cur_needs = [Reg(8, name=f"cur_needs{r}") for r in range(R)]
        nxt = [Reg(AW + 8, name=f"nxt{r}") for r in range(R)]
        pf_slot = Signal(range(R + 1), init=R)  # slot being captured (R: none)
        pf_start = Signal()  # the row pointer (f_addr) points at the next tile's first entry
        swap = Signal()      # nxt -> cur at the end of this cycle
        entry = Cat(word[:AW], word[prog.ROW_NEEDS:prog.ROW_NEEDS + 8])
        with m.If(pf_slot != R):
            for r in range(R):
                with m.If(pf_slot == r):
                    m.d.sync += nxt[r].eq(entry)
            m.d.sync += pf_slot.eq(pf_slot + 1)
        with m.If(pf_start):
            m.d.sync += pf_slot.eq(0)
        # mem_regs = 2 decodes in two stages (below, perf.decode_regs): the rows are used a
        # cycle later, so they are swapped in a cycle later (the capture into nxt[0] starts at
        # that same edge)
        two_stage = decode_regs(t.mem_regs) == 1
        swap_now = swap
        if two_stage:
            swap_now = Reg(name="swap_q")
            m.d.sync += swap_now.eq(swap)
        with m.If(swap_now):
            for r in range(R):
                m.d.sync += [cur_origin[r].eq(nxt[r][:AW]), cur_needs[r].eq(nxt[r][AW:])]

        # ---- the beat player (program port B) ----------------------------------------------
        b_addr = Reg(PA)
        b_left = Reg(PA)
        b_end = Reg()           # b_addr holds the tile set's last entry
        playing = Signal()      # b_addr holds an entry to play
        m.d.comb += self.prog_b_raddr.eq(b_addr)
        # loop state (updated as each tile set's last entry is decoded, one cycle later)
        g_left = Reg(len(d.groups_m1))
        g_end = Reg()           # the tile set being played is its tile's last group
        rows_left = Reg(len(d.rows_total))
        last_tile = Reg()       # ... and that tile of rows is the layer's last
        final = b_end & g_end & last_tile
        # ---- runs: an entry plays 1 + run beats at offsets off, off + 1, ... Port B's read
        # register keeps the entry (read enable low) and the player waits while `freeze`.
        e = self.prog_b_rdata
        p1 = Signal()   # the entry on prog_b_rdata is played
        e1_end = Reg()  # ... and it is its tile set's last
        run = e[prog.BEAT_RUN:prog.BEAT_RUN + 4]
        hold = Reg()     # a run's second or later beat (the entry is kept)
        hmore = Reg()    # ... and more beats of it follow this one
        hcnt = Reg(4)    # beats of the run after the next
        hoff = Reg(AW)   # the held beat's offset
        fresh = Reg()    # p1 & ~hold: the entry on prog_b_rdata plays its first beat
        ahead = t.mem_regs == 2  # the look-ahead port C (memories.stored_shapes)
        if ahead:
            # look-ahead: port C reads (with port B's enable) the entry the player presents
            # after b_addr's, i.e. the entry port B's read register holds next; its run flag
            # is registered with the same enable, so it belongs to the entry on prog_b_rdata.
            # The player's first entry (`table`) is read in the cycle the player is loaded.
            load_player = Signal()
            run_nz = Reg()
            run_m1 = Reg(4, name="run_m1")   # run - 1 and run != 1 of the same entry, so that
            run_ne1 = Reg(name="run_ne1")    # hcnt and hmore load registers, not port B's data
            # the entry's flags too: the beat's valid bit enables the weights address and the
            # control, far from port B's RAM (port B -> valid -> wa's enable was the critical
            # path, 10.4 ns of 5.8 ns clock-to-out and routing)
            flags = Reg(4, name="flags_c")
            m.d.comb += self.prog_c_raddr.eq(Mux(load_player | b_end, table, b_addr + 1))
            run_c = self.prog_c_rdata[prog.BEAT_RUN:prog.BEAT_RUN + 4]
            with m.If(self.prog_b_ren):
                m.d.sync += [run_nz.eq(run_c != 0), run_m1.eq(run_c - 1), run_ne1.eq(run_c != 1),
                             flags.eq(self.prog_c_rdata[prog.BEAT_VALID:prog.BEAT_VALID + 4])]
        else:
            run_nz = Signal(attrs={"keep": 1})  # one LUT of the read data
            m.d.comb += run_nz.eq(run != 0)
            flags = e[prog.BEAT_VALID:prog.BEAT_VALID + 4]
        assert (prog.BEAT_LAST, prog.BEAT_DBL, prog.BEAT_REWIND) == tuple(
            prog.BEAT_VALID + i for i in (1, 2, 3))
        f_valid, f_last, f_dbl, f_rewind = flags[0], flags[1], flags[2], flags[3]
        # the entry on prog_b_rdata has more beats: keep it, wait (one net, two LUT levels
        # from the read data: `keep` stops the mapper from merging it into its many loads)
        freeze = Signal(attrs={"keep": 1})
        m.d.comb += [freeze.eq((fresh & run_nz) | hmore), self.prog_b_ren.eq(~freeze)]
        start_run = freeze & ~hmore  # = fresh & run_nz (hmore implies hold, so ~fresh)
        # hoff is the held beat's offset; with mem_regs = 2 it keeps the previous beat's and
        # the held beat adds 1 (no adder between port B's RAM and hoff)
        with m.If(start_run):
            m.d.sync += [hold.eq(1), hoff.eq(e[:AW] if ahead else e[:AW] + 1),
                         hcnt.eq(run_m1 if ahead else run - 1),
                         hmore.eq(run_ne1 if ahead else run != 1)]
        with m.Elif(hold):
            m.d.sync += [hoff.eq(hoff + 1), hcnt.eq(hcnt - 1), hmore.eq(hmore & (hcnt != 1))]
            with m.If(~hmore):
                m.d.sync += hold.eq(0)

        # the layer's last entry moves into decode: the player stops (a register, so that the
        # FSM's transitions do not wait for the read data's run field)
        stop = Signal()
        stopped = Reg()
        m.d.comb += stop.eq(playing & final & ~freeze)
        m.d.sync += stopped.eq(stop)
        with m.If(stop):
            m.d.sync += playing.eq(0)
        with m.If(playing & ~freeze):
            m.d.sync += [b_addr.eq(Mux(b_end, table, b_addr + 1)),
                         b_left.eq(Mux(b_end, entries_m1, b_left - 1)),
                         b_end.eq(Mux(b_end, entries_m1 == 0, b_left == 1))]

        # ---- decode: addresses, masks, weights address, control ------------------------------
        with m.If(~freeze):
            m.d.sync += [p1.eq(playing), e1_end.eq(b_end), fresh.eq(playing)]
        with m.Elif(start_run):
            m.d.sync += fresh.eq(0)
        valid = p1 & f_valid
        off = Mux(hold, hoff + 1 if ahead else hoff, e[:AW])
        tap_bits = e[prog.BEAT_TAPS:prog.BEAT_TAPS + 8]
        if two_stage:
            # two stages: the offset and tap distances are registered first (port B's RAM is
            # far from the row address registers), the row addresses computed from them a
            # cycle later; the weights address and the control wait a cycle to match
            off_q = Reg(AW, name="off_q")
            taps_q = Reg(8, name="taps_q")
            m.d.sync += [off_q.eq(off), taps_q.eq(tap_bits)]
            off, tap_bits = off_q, taps_q
        taps = [tap_bits[2 * i:2 * i + 2] for i in range(4)]
        for r in range(R):
            needs = [cur_needs[r][2 * i:2 * i + 2] for i in range(4)]
            masked = (taps[0] < needs[0]) | (taps[1] < needs[1]) | (taps[2] < needs[2]) | (
                taps[3] < needs[3])
            # a padded tap reads the all-zero word at the top address: a synchronous set
            with m.If(masked):
                m.d.sync += self.act_raddr[r].eq(-1)
            with m.Else():
                m.d.sync += self.act_raddr[r].eq(cur_origin[r] + off)
        wa = Reg(aw["weights"])
        wbase = Reg(aw["weights"])
        if two_stage and t.weight_rows > 1:
            # a weight word per row (weight_rows = R): the memories register the rows' words
            # once more after their row multiplexers (read latency 3), so the address leaves
            # a cycle earlier, straight from wa
            m.d.comb += self.wgt_raddr.eq(wa)
        elif two_stage:
            wa_q = Reg(aw["weights"], name="wa_q")
            m.d.sync += wa_q.eq(wa)
            m.d.comb += self.wgt_raddr.eq(wa_q)
        else:
            m.d.comb += self.wgt_raddr.eq(wa)
        # a split reduction or spread groups (weight_rows = R): each row takes its own word of
        # a memory word, so the address moves a whole memory word (R words) per beat
        step = Mux(self.wgt_own, R, 1) if t.weight_rows > 1 else 1
        with m.If(valid):
            m.d.sync += wa.eq(Mux(f_rewind & ~hold, wbase, wa + step))
        ctl1 = Signal(control_layout())
        m.d.sync += [ctl1.valid.eq(valid), ctl1.last.eq(valid & f_last & ~freeze),
                     ctl1.dbl.eq(valid & f_dbl & ~hold)]
        if two_stage:
            ctl2 = Signal(control_layout())
            m.d.sync += [ctl2.eq(ctl1), self.ctl.eq(ctl2)]
        else:
            m.d.sync += self.ctl.eq(ctl1)
        # the tile set's last entry (a single beat, docs/program.md): next group, or next
        # tile of rows
        with m.If(p1 & e1_end):
            with m.If(g_end):
                m.d.sync += [g_left.eq(d.groups_m1), g_end.eq(d.groups_m1 == 0),
                             rows_left.eq(rows_left - R), last_tile.eq(rows_left <= 2 * R),
                             wbase.eq(w_base)]
                m.d.comb += [swap.eq(1), pf_start.eq(1)]
            with m.Else():
                m.d.sync += [g_left.eq(g_left - 1), g_end.eq(g_left == 1),
                             wbase.eq(wbase + group_words)]
        # the row pointer moves with each captured entry, and once more at a prefetch's start
        # (so the next capture reads the entry after the last)
        with m.If(pf_start | ((pf_slot != R) & (pf_slot != R - 1))):
            m.d.sync += rp.eq(rp + 1)

        # ---- top FSM ------------------------------------------------------------------------
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        run_start = Signal()
        with m.If(busy | run_start):  # one enable: cleared at start, counts while busy
            m.d.sync += self.cycles.eq(Mux(busy, self.cycles + 1, 0))
        geom = R | t.cols << 8 | t.width << 16
        acc_n = Reg(range(R + 1))  # images added into rows_total so far
        extra = write_regs(t.mem_regs) + decode_regs(t.mem_regs)
        drain = Reg(range(self.timing.array_latency + R + 4 + extra))
        drain_end = Reg()  # drain == 0 next cycle
        run_end = Reg()    # drain_end on the last layer (busy's enable is one flag per state)
        # the output stage's pulses are registers (a cycle late: its first tile comes later)
        m.d.sync += [self.clear.eq(0), self.layer_start.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += run_start.eq(1)
                    m.d.sync += self.clear.eq(1)
                    m.d.sync += [busy.eq(1), self.done.eq(0), self.error.eq(0), f_addr.eq(0),
                                 idx.eq(0),
                                 n_batch.eq(Mux(self.batch == 0, 1, self.batch)),
                                 batch_big.eq(self.batch > R)]
                    m.next = "HDR"
            with m.State("HDR"):
                m.d.sync += [idx.eq(idx + 1), f_addr.eq(f_addr + 1)]
                with m.Switch(idx):  # the word of address idx - 1 - lag is on hword
                    with m.Case(1 + lag):
                        m.d.sync += magic_ok.eq(hword == prog.MAGIC)
                    with m.Case(2 + lag):
                        m.d.sync += geom_ok.eq(hword == geom)
                    with m.Case(3 + lag):
                        m.d.sync += [layers_left.eq(hword - 1), empty.eq(hword[:16] == 0),
                                     last_layer.eq(hword[:16] == 1)]
                    with m.Case(4 + lag):
                        over = n_batch > hword[:8]
                        m.d.sync += [batch_over.eq(over),
                                     bad_hdr.eq(~magic_ok | ~geom_ok | empty | batch_big | over)]
                        m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [f_addr.eq(prog.HEADER_WORDS), idx.eq(0)]
                err = Mux(~magic_ok, ERR_MAGIC, Mux(~geom_ok, ERR_GEOMETRY,
                          Mux(empty, ERR_EMPTY, Mux(batch_big | batch_over, ERR_BATCH, 0))))
                with m.If(bad_hdr):
                    m.d.sync += [self.error.eq(err), busy.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "DESC"
            with m.State("DESC"):
                m.d.sync += idx.eq(idx + 1)
                # (`<` only where DESC runs past DESC_READ: the iCE40 targets keep `!=`)
                with m.If(idx < prog.DESC_READ if lag else idx != prog.DESC_READ):
                    m.d.sync += f_addr.eq(f_addr + 1)
                # descriptor field -> the register it loads (MINUS_ONE fields are stored - 1)
                dest = {
                    "integer": d.integer, "passes": d.passes_m1, "groups": d.groups_m1,
                    **({"ksplit": d.ksplit, "ospread": d.ospread} if t.weight_rows > 1
                       else {}),
                    "table": table, "entries": entries_m1, "rows": rp,
                    "rows_per_image": rows_per_image, "w_base": w_base, "thr_base": d.thr_base,
                    "out_stride": d.out_stride, "out_base": d.out_base,
                    "tile_words": d.tile_words, "group_words": group_words,
                }
                fields = {}
                for name, (wi, lo, bits, _) in prog.DESC_LAYOUT.items():
                    if wi < prog.DESC_READ and name in dest | {"score_mul": None}:
                        fields.setdefault(wi, []).append((name, hword[lo:lo + bits]))
                with m.Switch(idx):  # descriptor word idx - 1 - lag is on hword
                    for wi, fs in fields.items():
                        with m.Case(wi + 1 + lag):
                            if wi == 0 and t.weight_rows > 1:
                                own = [prog.DESC_LAYOUT[f] for f in ("ksplit", "ospread")]
                                assert all(f[0] == 0 for f in own)
                                m.d.sync += self.wgt_own.eq(
                                    hword[own[0][1]] | hword[own[1][1]])
                            for name, v in fs:
                                if name == "score_mul":
                                    m.d.sync += d.score_mul.eq(decode_score_mul(v))
                                else:
                                    m.d.sync += dest[name].eq(v)
                with m.If(idx == prog.DESC_READ):
                    # f_addr moves on to the next descriptor; the row list comes next
                    m.d.sync += f_addr.eq(f_addr + prog.DESC_WORDS - prog.DESC_READ)
                with m.If(idx == prog.DESC_READ + lag):
                    m.d.sync += [rows_on.eq(1), d.rows_total.eq(0), acc_n.eq(0)]
                    m.next = "PRO"
            with m.State("PRO"):
                # capture the first tile's R row entries; add up the batch's rows
                with m.If(acc_n != n_batch):
                    m.d.sync += [d.rows_total.eq(d.rows_total + rows_per_image),
                                 acc_n.eq(acc_n + 1)]
                with m.If(idx == prog.DESC_READ + 1 + lag):  # first cycle: f_addr = rows
                    m.d.comb += pf_start.eq(1)
                    m.d.sync += idx.eq(0)
                with m.Elif(pf_slot == R):  # captured: this cycle swaps them in
                    m.d.comb += [swap.eq(1), pf_start.eq(1)]
                    if ahead:
                        m.d.comb += load_player.eq(1)
                    m.d.sync += self.layer_start.eq(1)
                    m.d.sync += [b_addr.eq(table), b_left.eq(entries_m1),
                                 b_end.eq(entries_m1 == 0), playing.eq(1),
                                 g_left.eq(d.groups_m1), g_end.eq(d.groups_m1 == 0),
                                 rows_left.eq(d.rows_total),
                                 last_tile.eq(d.rows_total <= R), wbase.eq(w_base)]
                    m.next = "RUN"
            with m.State("RUN"):
                # a cycle after the layer's last entry moved into decode (`stop`): wait for
                # the array to drain; if that entry plays a run, its later beats come first
                # (the drain counter stands still while `freeze`)
                with m.If(stopped):
                    n = self.timing.array_latency + R + 3 + extra
                    m.d.sync += [drain.eq(Mux(freeze, n, n - 1)), drain_end.eq(0), run_end.eq(0)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~freeze):  # the last entry's run plays out first
                    m.d.sync += [drain.eq(drain - 1), drain_end.eq(drain == 1),
                                 run_end.eq((drain == 1) & last_layer)]
                with m.If(run_end):
                    m.d.sync += [busy.eq(0), self.done.eq(1), rows_on.eq(0)]
                    m.next = "IDLE"
                with m.Elif(drain_end):
                    m.d.sync += [layers_left.eq(layers_left - 1), rows_on.eq(0), idx.eq(0),
                                 last_layer.eq(layers_left == 1)]
                    m.next = "DESC"
        return m
