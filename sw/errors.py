"""Errors that mean "the user's input is wrong", as opposed to a bug.

The CLI prints these as one line (no traceback) and exits non-zero; the message must name
the file, layer or value at fault and, where it helps, what to do about it.
"""


import importlib
from types import ModuleType


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model): printed as one line by the CLI."""


class MissingExtra(UserError):
    """Something needs a part of xnorflow that is an optional extra and is not installed."""


#: What each optional extra (``pyproject.toml``) is for, as the error message says it.
EXTRAS = {"synth": "synthesis (yosys, nextpnr, board platforms)",
          "sim": "RTL simulation (cocotb, Icarus, Verilator)",
          "interop": "QONNX import and export (brevitas, qonnx, onnx, onnxruntime)"}


def missing_extra(extra: str, what: str) -> MissingExtra:
    """The one-line error for ``what`` missing from the optional extra ``extra``."""
    return MissingExtra(f"{what} is not installed; {EXTRAS[extra]} needs the [{extra}] "
                        f"extra: pip install 'xnorflow[{extra}]'")


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` (from the optional extra ``extra``); :class:`MissingExtra` naming
    the extra to install when its package is missing (other import errors pass through)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = module.split(".")[0]
        if e.name not in (top, module):
            raise
        raise missing_extra(extra, top) from None
