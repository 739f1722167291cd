"""``xnorflow board`` end to end over a real pseudo-terminal, against a Python device model.

No board is attached here, so the far end of a pty pair runs a model of the board: it speaks
the host protocol (``docs/host-protocol.md``) byte by byte, keeps the memories it is sent,
and computes results with :func:`xnorflow.sw.program.execute` (the executable definition of
the sequencer). It recognises the input by its packed words (it knows the test images), so
what is tested is the serial transport, the driver over a real tty, the load path and the
CLI's check against the golden model -- not the gateware (the cocotb board-top tests do that).
"""

import os
import threading
import tty

import numpy as np
import pytest

from xnorflow.cli import main
from xnorflow.hw import driver as d
from xnorflow.sw import synthetic
from xnorflow.sw.data import load_dataset
from xnorflow.sw.images import MemoryImage
from xnorflow.sw.program import decode_program, execute, pack_input
from xnorflow.sw.targets import MEMORY_NAMES

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pty")


class DeviceModel(threading.Thread):
    def __init__(self, fd: int, target, images):
        super().__init__(daemon=True)
        self.fd, self.target, self.images = fd, target, images
        self.mem = {n: {} for n in MEMORY_NAMES}
        self.result = None
        self.frames = 0

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = os.read(self.fd, n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def _respond(self, status: int, payload: bytes = b"") -> None:
        body = bytes([status]) + len(payload).to_bytes(2, "little") + payload
        os.write(self.fd, bytes([d.SYNC_RESPONSE]) + body + bytes([d.checksum(body)]))

    def _words(self, name: str) -> list[int]:
        m = self.mem[name]
        return [m.get(i, 0) for i in range(max(m) + 1 if m else 0)]

    def run(self) -> None:
        t = self.target
        try:
            while True:
                if self._read(1)[0] != d.SYNC_REQUEST:
                    continue
                head = self._read(3)
                n = int.from_bytes(head[1:3], "little")
                payload = self._read(n)
                if (sum(head) + sum(payload) + self._read(1)[0]) & 0xFF:
                    self._respond(d.ERR_CHECKSUM)
                    continue
                self.frames += 1
                cmd = head[0]
                if cmd == d.CMD_READ_STATUS:
                    st = bytes([d.PROTOCOL_VERSION, t.rows, t.cols, t.width,
                                2 if self.result else 0, 0]) + (0).to_bytes(4, "little")
                    self._respond(d.OK, st + bytes(len(MEMORY_NAMES)))
                elif cmd == d.CMD_WRITE_MEM:
                    name = MEMORY_NAMES[payload[0]]
                    addr = int.from_bytes(payload[1:5], "little")
                    words = d.bytes_to_words(payload[7:], t.word_bits(name))
                    for i, w in enumerate(words):
                        self.mem[name][addr + i] = w
                    self._respond(d.OK)
                elif cmd == d.CMD_WRITE_INPUT:
                    self.input = tuple(d.bytes_to_words(payload, t.width))
                    self._respond(d.OK)
                elif cmd == d.CMD_START:
                    imgs = [MemoryImage(n, t.word_bits(n), np.array(self._words(n), dtype=object),
                                        "") for n in ("program", "weights", "thresholds")]
                    px = self.images[self.input]
                    self.result = execute(imgs, px, t)
                    self._respond(d.OK)
                elif cmd == d.CMD_READ_RESULT:
                    r = self.result
                    body = r.predicted.to_bytes(2, "little") + len(r.scores).to_bytes(2, "little")
                    body += b"".join(int(s).to_bytes(4, "little", signed=True) for s in r.scores)
                    self._respond(d.OK, body)
                else:
                    self._respond(d.ERR_UNKNOWN_CMD)
        except (EOFError, OSError):
            return


@pytest.fixture
def digits_model(tmp_path):
    model = synthetic.random_network(11, in_shape=(8, 8, 1), in_bits=4, classes=10)
    target = synthetic.geometry_target(2, 2, 16)
    folder = tmp_path / "model"
    synthetic.write_folder(model, target, folder)
    return folder, model, target


def test_board_over_pty(digits_model, capsys):
    folder, model, target = digits_model
    from xnorflow.sw.images import load_model_folder

    _, _, memories = load_model_folder(folder)
    header, _ = decode_program(next(m for m in memories if m.name == "program").words)
    pixels = load_dataset("digits").x_test[:6]
    lookup = {tuple(int(w) for w in pack_input(px, header, target.width)): px for px in pixels}
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    dev = DeviceModel(master, target, lookup)
    dev.start()
    try:
        rc = main(["board", "--port", os.ttyname(slave), "--model", str(folder), "--count", "6",
                   "--dataset", "digits", "--timeout", "5"])
    finally:
        os.close(slave)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "class agrees with golden 6/6, scores agree 6/6" in out
    assert dev.frames >= 3 + 6 * 4  # status + 3 memories + per image input/start/status/result
    os.close(master)


def test_board_missing_port_is_one_line(digits_model, capsys):
    folder, _, _ = digits_model
    rc = main(["board", "--port", "/dev/ttyXNORFLOW-missing", "--model", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "/dev/ttyXNORFLOW-missing" in err[0] and "cannot open" in err[0]


def test_uart_bytes_per_image_matches_the_wire(digits_model):
    """The synthesis report's UART-bound images/s counts exactly the bytes the driver moves
    to classify one image (measured on the pty)."""
    import asyncio

    from xnorflow.hw.serial_transport import SerialTransport
    from xnorflow.sw.images import load_model_folder
    from xnorflow.synth import predicted_rates, uart_bytes_per_image

    folder, model, target = digits_model
    _, _, memories = load_model_folder(folder)
    header, _ = decode_program(next(m for m in memories if m.name == "program").words)
    px = load_dataset("digits").x_test[:1]
    lookup = {tuple(int(w) for w in pack_input(px[0], header, target.width)): px[0]}
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    DeviceModel(master, target, lookup).start()

    class Counting(SerialTransport):
        sent = received = 0

        async def write(self, data):
            Counting.sent += len(data)
            await super().write(data)

        async def read(self, n):
            got = await super().read(n)
            Counting.received += len(got)
            return got

    async def go(link):
        drv = d.AcceleratorDriver(link)
        await drv.connect()
        await drv.load(memories)
        Counting.sent = Counting.received = 0
        return await drv.classify(px[0])

    with Counting(os.ttyname(slave), timeout=5) as link:
        asyncio.run(go(link))
    os.close(slave)
    os.close(master)
    assert Counting.sent + Counting.received == uart_bytes_per_image(model, target)
    rates = predicted_rates(model, target, 48e6, 1_000_000)
    assert rates["images_per_s_uart"] == pytest.approx(1e5 / uart_bytes_per_image(model, target))
    from xnorflow.sw.perf import predict_network_cycles

    assert rates["cycles_per_image"] == predict_network_cycles(model, target)
    assert rates["images_per_s_compute"] == pytest.approx(48e6 / rates["cycles_per_image"])
