"""The documentation site: generated pages are up to date, and `mkdocs build --strict` passes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "docs" / "scripts" / "gen_api.py"


def _generate(out: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(GEN), "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, f"docs/scripts/gen_api.py failed:\n{res.stderr}"


@pytest.mark.slow
def test_generated_docs_are_up_to_date(tmp_path):
    _generate(tmp_path)
    fresh = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert "docs/api/learner.md" in fresh and "docs/index.md" in fresh and "mkdocs.yml" in fresh
    stale = [
        f for f in fresh if not (ROOT / f).is_file() or (ROOT / f).read_text() != (tmp_path / f).read_text()
    ]
    committed = {f"docs/api/{p.name}" for p in (ROOT / "docs" / "api").glob("*.md")}
    extra = sorted(committed - fresh)
    fix = "Regenerate them: .venv/bin/python docs/scripts/gen_api.py"
    assert not stale, f"Generated docs differ from the code or README: {sorted(stale)}. {fix}"
    assert not extra, f"API pages of modules that no longer exist: {extra}. {fix}"


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "learner" / "index.html").is_file()
