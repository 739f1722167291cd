"""Scoreboards: compare what a design produced with what the golden model says, bit for bit.

:class:`Scoreboard` is generic (expected vs. received items, first mismatch kept with its
context). :class:`NetworkScoreboard` checks whole-network results per image: every hidden
layer's output bits, the last layer's integer scores and the prediction, against
:func:`xnorflow.sw.golden.run`, naming the first sample, layer and output position that
differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Mismatch:
    """The first difference found: which sample, which layer, which position, which values."""

    sample: int
    layer: str
    position: tuple
    expected: int
    got: int

    def __str__(self) -> str:
        pos = ",".join(str(p) for p in self.position)
        return (
            f"sample {self.sample}, layer {self.layer!r}, position ({pos}): "
            f"expected {self.expected}, got {self.got}"
        )


def first_difference(expected, got) -> tuple[tuple, int, int] | None:
    """``(position, expected, got)`` of the first differing element, or ``None`` if equal."""
    e = np.asarray(expected)
    g = np.asarray(got)
    if e.shape != g.shape:
        return ((), int(e.size), int(g.size))
    diff = np.argwhere(e != g)
    if not len(diff):
        return None
    pos = tuple(int(i) for i in diff[0])
    return pos, int(e[pos]), int(g[pos])


@dataclass
class Scoreboard:
    """Match received items against expected ones in order; keep counts and the first error."""

    name: str = "scoreboard"
    expected: list = field(default_factory=list)
    matched: int = 0
    errors: list[str] = field(default_factory=list)

    def expect(self, items) -> None:
        self.expected.extend(items)

    def check(self, got) -> None:
        for g in got:
            if not self.expected:
                self.errors.append(f"{self.name}: unexpected item {g!r}")
                continue
            e = self.expected.pop(0)
            index = self.matched + len(self.errors)
            if e != g:
                self.errors.append(f"{self.name}: item {index}: expected {e!r}, got {g!r}")
            else:
                self.matched += 1

    def clear_expected(self) -> None:
        self.expected.clear()

    def assert_clean(self) -> None:
        if self.expected:
            self.errors.append(f"{self.name}: {len(self.expected)} expected items never came")
        assert not self.errors, "; ".join(self.errors[:5])


class NetworkScoreboard:
    """Per-image check of a network's outputs against the golden model.

    ``expected`` is a :class:`xnorflow.sw.golden.GoldenResult` for the input batch.
    :meth:`check` takes one image's results -- a list of hidden activation maps (or ``None``
    where the backend did not read them), the integer scores and the prediction -- and
    records the first mismatch.
    """

    def __init__(self, model, expected):
        self.model = model
        self.expected = expected
        self.checked = 0
        self.first: Mismatch | None = None
        self.mismatches = 0

    def check(self, sample: int, activations, scores, prediction) -> Mismatch | None:
        found = None
        layers = self.model.layers
        for i, act in enumerate(activations or []):
            if act is None:
                continue
            d = first_difference(self.expected.activations[i][sample], act)
            if d:
                found = Mismatch(sample, layers[i].name, *d)
                break
        if found is None:
            d = first_difference(self.expected.scores[sample], scores)
            if d:
                found = Mismatch(sample, layers[-1].name, *d)
        if found is None and int(self.expected.predictions[sample]) != int(prediction):
            found = Mismatch(sample, "argmax", (), int(self.expected.predictions[sample]),
                             int(prediction))
        self.checked += 1
        if found is not None:
            self.mismatches += 1
            if self.first is None:
                self.first = found
        return found

    def assert_clean(self) -> None:
        assert self.first is None, (
            f"{self.mismatches} of {self.checked} images differ from golden; first: {self.first}"
        )
