"""The worked examples in docs/ are executed, so the prose cannot drift from the code."""

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("name", ["encoding.md", "host-protocol.md", "accelerator.md"])
def test_doc_examples_run(name):
    result = doctest.testfile(str(DOCS / name), module_relative=False, verbose=False)
    assert result.attempted > 10, f"{name}: expected a worked example, found {result.attempted}"
    assert result.failed == 0
