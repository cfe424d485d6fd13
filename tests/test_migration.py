"""docs/migration.md: the table of names `from fastvision.all import *` shadows matches the installed torch."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "migration.md"
HEADING = "### Names `from fastvision.all import *` shadows"


def star_names(module_name):
    """The names `from <module> import *` binds, with their objects."""
    ns = {}
    exec(f"from {module_name} import *", ns)
    return {k: v for k, v in ns.items() if not k.startswith("_")}


def doc_modules_and_table():
    text = DOC.read_text()
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    compared = re.search(r"modules compared:\s*(.*?)\)", section, flags=re.S).group(1)
    modules = re.findall(r"`([\w.]+)`", compared)
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M)
    table = {(name, mod) for name, mods in rows for mod in re.findall(r"`([\w.]+)`", mods)}
    return modules, table, [name for name, _ in rows]


def shadowed(modules):
    ours = star_names("fastvision.all")
    pairs = set()
    for m in modules:
        theirs = star_names(m)
        pairs |= {(n, m) for n, obj in theirs.items() if n in ours and ours[n] is not obj}
    return pairs


def test_shadowed_names_table_matches_the_installed_torch_and_torchvision():
    modules, table, names = doc_modules_and_table()
    assert {"torchvision.transforms", "torchvision.transforms.v2", "torch.optim", "torch.utils.data"} <= set(
        modules
    )
    assert len(names) == len(set(names)), "one row per name"
    actual = shadowed(modules)
    assert ("DataLoader", "torch.utils.data") in actual  # the comparison itself finds shadowing
    missing, stale = sorted(actual - table), sorted(table - actual)
    assert not missing and not stale, (
        f"docs/migration.md is out of date: add rows for {missing}, remove {stale} (name, module)."
    )


def test_shadowing_check_ignores_names_fastvision_reexports_unchanged():
    ours = star_names("fastvision.all")
    if "Path" not in ours:
        pytest.skip("fastvision.all no longer re-exports Path")
    assert ours["Path"] is Path and ("Path", "pathlib") not in shadowed(["pathlib"])


def test_fastbook_path_ls_is_not_patched():
    # In a fresh interpreter: fastprogress (progress bars) imports fastcore.xtras, which adds Path.ls.
    code = "import pathlib, fastvision.all; print(hasattr(pathlib.Path, 'ls'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # the doc tells fastbook readers to use path.iterdir()
