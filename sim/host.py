"""Host-side session shared by every hardware backend: HW2's driver over any transport.

The Amaranth, Icarus and Verilator backends (and a board) run the same sequence through
:class:`xnorflow.hw.driver.AcceleratorDriver`: ``connect`` (status: protocol version and
geometry, checked against the model folder's target), ``load`` (program, weights and
thresholds), then per image ``write_input``, ``start``, ``wait`` (the status carries the
accelerator's cycle count of the run), ``result`` (class and scores) and a read-back of the
hidden layers' output maps from the ``activations`` memory.

Hidden maps live in two ping-pong regions (``docs/program.md``): layer ``i`` writes region
``(i + 1) % 2``, so a layer's output survives the run unless a later hidden layer writes the
same region. :func:`readable_layers` says which ones can be read; the others are reported as
``None`` (not observable), never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xnorflow.sw import encoding as enc
from xnorflow.sw.errors import UserError


@dataclass
class ImageResult:
    """One image through the accelerator."""

    prediction: int
    scores: list[int]
    hidden: list[np.ndarray | None]
    cycles: int


def readable_layers(model) -> list[bool]:
    """For each hidden layer: is its output map still in memory after the whole run?"""
    hidden = [i for i, layer in enumerate(model.layers) if layer.output == "threshold"]
    return [not any(j > i and (j - i) % 2 == 0 for j in hidden) for i in hidden]


class HostSession:
    """A connected, loaded accelerator: classify images and read hidden layers back."""

    def __init__(self, driver, mf, read_hidden: bool = True):
        self.driver = driver
        self.mf = mf
        self.read_hidden = read_hidden
        self.descs: list[dict] = []
        self.readable = readable_layers(mf.model)

    @classmethod
    async def open(cls, transport, mf, read_hidden: bool = True) -> HostSession:
        from xnorflow.hw.driver import AcceleratorDriver
        from xnorflow.sw.program import decode_program

        driver = AcceleratorDriver(transport)
        st = await driver.connect()
        t = mf.target
        if (st.rows, st.cols, st.width) != (t.rows, t.cols, t.width):
            raise UserError(f"{mf.path}: compiled for {t.geometry} but the accelerator is "
                            f"{st.geometry}; recompile for this target")
        self = cls(driver, mf, read_hidden)
        await self.load()
        prog = next(m for m in mf.memories if m.name == "program")
        _, self.descs = decode_program(prog.words)
        return self

    async def load(self) -> None:
        """(Re)write every memory image (after a reset the host must assume nothing)."""
        await self.driver.load(self.mf.memories)

    async def infer(self, pixels) -> ImageResult:
        d = self.driver
        await d.write_input(pixels)
        await d.start()
        st = await d.wait(poll=1_000_000)
        cls, scores = await d.result()
        hidden: list[np.ndarray | None] = []
        if self.read_hidden:
            hidden = await self.read_hidden_maps()
        return ImageResult(int(cls), [int(s) for s in scores], hidden, int(st.cycles))

    async def read_hidden_maps(self) -> list[np.ndarray | None]:
        width = self.mf.target.width
        out: list[np.ndarray | None] = []
        hidden = [(i, layer) for i, layer in enumerate(self.mf.model.layers)
                  if layer.output == "threshold"]
        for (i, layer), ok in zip(hidden, self.readable, strict=True):
            if not ok:
                out.append(None)
                continue
            npix = layer.out_h * layer.out_w
            cw = enc.words_per_segment(layer.out_c, width)
            words = await self.driver.read_memory("activations", self.descs[i]["out_base"],
                                                  npix * cw)
            dtype = {16: np.uint16, 32: np.uint32, 64: np.uint64}[width]
            bits = enc.unpack_segments(np.asarray(words, dtype=np.uint64).astype(dtype),
                                       npix, layer.out_c, width)
            out.append(bits.reshape(layer.out_h, layer.out_w, layer.out_c))
        return out


def collect(model, results: list[ImageResult], backend: str):
    """Stack per-image results into :class:`~xnorflow.sim.backends.Outputs` arrays."""
    from .backends import Outputs

    n_hidden = sum(1 for layer in model.layers if layer.output == "threshold")
    acts: list[np.ndarray | None] = []
    for i in range(n_hidden):
        maps = [r.hidden[i] if i < len(r.hidden) else None for r in results]
        acts.append(None if not maps or any(m is None for m in maps)
                    else np.stack(maps).astype(np.uint8))
    n_cls = model.layers[-1].out_c
    scores = np.array([r.scores for r in results], dtype=np.int64).reshape(len(results), n_cls)
    return Outputs(
        backend=backend,
        predictions=np.array([r.prediction for r in results], dtype=np.int64),
        scores=scores,
        activations=acts,
        cycles=np.array([r.cycles for r in results], dtype=np.int64),
    )
