"""pyproject.toml lists every package folder, so `pip install .` outside the repo works."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    roots = cfg["package-dir"]
    assert roots == {"xnorflow": "xnorflow", "xnorflow.sw": "sw", "xnorflow.hw": "hw",
                     "xnorflow.sim": "sim"}
    found = set()
    for pkg, folder in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join((pkg, *rel.parts)))
    assert found - listed == set(), f"add these to [tool.setuptools] packages: {found - listed}"
