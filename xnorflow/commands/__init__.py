"""CLI subcommands: one module each, with ``register(subparsers)`` and ``run(args) -> int``.

:mod:`xnorflow.cli` imports every module named in :data:`COMMANDS`; a module's ``register``
adds its sub-parser (with ``--help`` text and examples) and sets ``func=run``.
"""

COMMANDS = ("train", "teacher", "compile", "run", "compare", "synth", "asic", "sweep", "board",
            "demo", "import", "export")

#: Subcommands whose module name differs from the command (``import`` is a Python keyword).
MODULES = {"import": "import_qonnx"}
