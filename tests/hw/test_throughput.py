"""The link model (``hw/link/throughput.py``) and the baud rates a board can run
(``sw/boards.py`` bridges, ``hw/uart.py`` divisors). The model against simulation:
``tests/sim/test_link.py`` and ``benchmarks/link.py``."""

import pytest

from xnorflow.hw.link import throughput as tp
from xnorflow.hw.link.protocol import STATUS_LEN, classify_wire_bytes
from xnorflow.sw.boards import BOARDS, BRIDGES, SAFE_BAUD
from xnorflow.sw.targets import sim_target


@pytest.mark.parametrize("chip, asked, made", [
    ("FT2232H", 12_000_000, 12e6), ("FT2232H", 8_000_000, 8e6), ("FT2232H", 6_000_000, 6e6),
    ("FT2232H", 3_000_000, 3e6), ("FT2232H", 1_000_000, 1e6),
    ("FT2232H", 5_000_000, 12e6 / 2.375),   # nearest eighth: 2.4 -> 2.375
    ("FT2232H", 10_000_000, None),           # between 12/1 and 12/1.5: nothing within 3 %
    ("FT2232H", 13_000_000, None),           # above the chip's maximum
    ("FT231X", 3_000_000, 3e6), ("FT231X", 2_000_000, 2e6), ("FT231X", 1_500_000, 1.5e6),
    ("FT231X", 2_500_000, None), ("FT231X", 921_600, 3e6 / 3.25), ("FT231X", 6_000_000, None),
])
def test_bridge_rates(chip, asked, made):
    got = BRIDGES[chip].rate(asked)
    assert got == (None if made is None else pytest.approx(made))


def test_bridge_rates_fastest_first():
    rates = list(BRIDGES["FT2232H"].rates(lowest=2e6))
    assert rates[:4] == [12e6, 8e6, 6e6, pytest.approx(12e6 / 2.125)]
    assert rates == sorted(rates, reverse=True) and min(rates) >= 2e6


@pytest.mark.parametrize("name", sorted(BOARDS))
@pytest.mark.parametrize("freq", [None, 12e6, 30e6, 50e6])
def test_board_clock_is_the_board_tops(name, freq):
    from xnorflow.hw.boards import EchoCore, PlatformTop

    b = BOARDS[name]
    top = PlatformTop(b, EchoCore(), freq=freq, baud=10_000)  # any clock divides 10 kbaud
    assert tp.board_clock(b, freq) == top.freq


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_runs_its_default_and_the_safe_baud(name):
    b = BOARDS[name]
    clock = tp.board_clock(b)
    assert tp.baud_problem(b, b.default_baud, clock) is None
    assert tp.baud_problem(b, SAFE_BAUD, clock) is None
    fastest = tp.fastest_baud(b, clock)
    assert fastest >= b.default_baud and tp.baud_problem(b, fastest, clock) is None
    assert fastest <= b.uart_bridge.max_baud


def test_fastest_baud_per_board():
    """At the default clocks: iCEBreaker 36 MHz / 6 (12 Mbaud would need 3 < 4 cycles a bit,
    the FT2232H's 8 Mbaud a divisor of 4.5); HX8K 90 MHz / 15 (12 Mbaud is 6.2 % off at
    90 MHz, 8 Mbaud 2.3 %); ULX3S: the FT231X's own 3 Mbaud, 75 MHz / 25 exactly (at its
    former 46.875 MHz, 3 Mbaud was 2.3 % off and 2 Mbaud the fastest)."""
    assert {n: b.default_freq for n, b in BOARDS.items()} == {
        "icebreaker": 36e6, "hx8k-evn": 90e6, "ulx3s-85f": 75e6}, "the docstring's clocks"
    got = {n: tp.fastest_baud(b, tp.board_clock(b)) for n, b in BOARDS.items()}
    assert got == {"icebreaker": 6_000_000, "hx8k-evn": 6_000_000, "ulx3s-85f": 3_000_000}
    assert tp.fastest_baud(BOARDS["ulx3s-85f"], 46.875e6) == 2_000_000


@pytest.mark.parametrize("board, baud, words", [
    ("icebreaker", 12_000_000, ("gateware", "36 MHz", "divisor 3.00 < 4")),
    ("icebreaker", 5_000_000, ("gateware", "divisor 7", "2.9% off")),
    ("hx8k-evn", 12_000_000, ("gateware", "90 MHz", "divisor 8", "6.2% off")),
    ("hx8k-evn", 8_000_000, ("gateware", "divisor 11", "2.3% off")),
    ("icebreaker", 10_000_000, ("FT2232H cannot make 10,000,000 baud",)),
    ("ulx3s-85f", 6_000_000, ("FT231X UART bridge runs at most 3,000,000 baud",)),
    ("ulx3s-85f", 3_000_000, ("46.875 MHz", "2.3% off")),
    ("icebreaker", 0, ("positive",)),
])
def test_baud_problems_name_the_cause(board, baud, words):
    """(the ULX3S at its PLL's 46.875 MHz, its default clock before 75 MHz)"""
    b = BOARDS[board]
    msg = tp.baud_problem(b, baud, 46.875e6 if board == "ulx3s-85f" else tp.board_clock(b))
    assert msg is not None and all(w in msg for w in words), msg


def test_bridge_and_gateware_rates_must_agree():
    """Each side within its own tolerance of the rate asked for, but too far apart together:
    refused. ULX3S at 2.95 Mbaud: the FT231X makes 3 Mbaud (1.7 % off), the gateware
    46.875 MHz / 16 = 2.93 Mbaud (0.7 % off); 2.3 % apart."""
    b = BOARDS["ulx3s-85f"]
    msg = tp.baud_problem(b, 2_950_000, tp.board_clock(b, 48e6))  # the PLL's 46.875 MHz
    assert msg == ("the FT231X makes 3,000,000 baud, the gateware 2,929,688 (46.875 MHz / 16): "
                   "2.3% apart, more than 2%")


def test_stream_frames_and_bytes():
    """Per run: WRITE of the N inputs, START, BUSY READs, READ of the N scores."""
    frames = tp.stream_frames(3, 64, 40, busy_reads=2)
    assert frames == [("WRITE", 8 + 192, 5), ("START", 8, 5), ("READ (busy)", 8, 5),
                      ("READ (busy)", 8, 5), ("READ", 8, 5 + 120)]
    r = tp.link_rate(1e6, 24e6, 3, 64, 40, run_cycles=0)
    assert r.busy_reads == 0 and r.bytes_per_run == 205 + 13 + 133
    # one image per run without polls: the classic classify less its one STATUS poll
    t = sim_target(2, 2, 16)
    header = {"input_words": 4, "score_words": 5}
    ib, sb = tp.image_bytes(header, t)
    assert (ib, sb) == (8, 40)
    one = tp.link_rate(1e6, 24e6, 1, ib, sb, 0)
    assert one.bytes_per_run == classify_wire_bytes(header, t) - (13 + STATUS_LEN)


def test_link_rate_timing():
    """Seconds per run: 10 bits per byte, one bit and TURN_CYCLES less/more per turn; the
    run hides behind the START's response and the BUSY READs, each poll a 13-byte turn."""
    baud, clock = 3e6, 24e6
    r0 = tp.link_rate(baud, clock, 8, 64, 40, 0)
    turns = 3  # WRITE, START, READ
    assert r0.seconds_per_run == pytest.approx(
        (r0.bytes_per_run * 10 - turns) / baud + turns * tp.TURN_CYCLES / clock)
    prev = r0
    for cycles in range(0, 20_000, 97):
        r = tp.link_rate(baud, clock, 8, 64, 40, cycles)
        assert r.busy_reads >= prev.busy_reads and r.images_per_s <= prev.images_per_s
        assert r.bytes_per_run == r0.bytes_per_run + 13 * r.busy_reads
        # the last BUSY READ's sample came before the run ended, the next one after it
        poll = tp.transaction_s(8, 5, baud, clock)
        first = poll + (69.5 / baud + 4 / clock)   # START's turn, then the READ's header
        end = 79.5 / baud + (3 + tp.START_LATENCY + cycles) / clock
        assert first + (r.busy_reads - 1) * poll < end <= first + r.busy_reads * poll \
            or (r.busy_reads == 0 and end <= first)
        prev = r
    # protocol 2 has no overlap: a long run adds its time to the line's, less what the
    # START's response and the BUSY READs fill (each one poll at most)
    long = tp.link_rate(baud, clock, 8, 64, 40, 10**6)
    extra = long.seconds_per_run - r0.seconds_per_run
    assert 10**6 / clock - 2 * poll < extra < 10**6 / clock + poll


def test_link_rate_refuses_nonsense():
    with pytest.raises(ValueError, match="baud"):
        tp.link_rate(0, 24e6, 1, 8, 8, 10)
    with pytest.raises(ValueError, match="batch"):
        tp.link_rate(1e6, 24e6, 0, 8, 8, 10)
