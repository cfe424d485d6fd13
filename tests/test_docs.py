"""The documentation site: generated pages are up to date, and `mkdocs build --strict` passes."""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

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


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once with `mkdocs build --strict` (the build is the first check)."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    return out


def _config() -> dict[str, str]:
    text = (ROOT / "mkdocs.yml").read_text()
    return {k: re.search(rf"^{k}:\s*(\S+)", text, flags=re.M).group(1) for k in ("site_url", "repo_url")}


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


@pytest.mark.slow
def test_mkdocs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "learner" / "index.html").is_file()


@pytest.mark.slow
def test_site_metadata(site):
    """Footer and repo links resolve, the sitemap lists every page, 404.html works below the site's path."""
    cfg = _config()
    pages = _pages(site)
    assert not [p for p in pages if 'href="None"' in p.read_text()], "a link to 'None': set repo_url"
    assert all(cfg["repo_url"] in p.read_text() for p in pages if p.name != "404.html")
    locs = re.findall(r"<loc>(.*?)</loc>", (site / "sitemap.xml").read_text())
    n_pages = len([p for p in pages if p.name == "index.html"])
    assert len(locs) == n_pages and all(loc.startswith(cfg["site_url"]) for loc in locs)
    base = urlparse(cfg["site_url"]).path  # /fastvision/: 404.html is served from any depth
    links = re.findall(r'(?:href|src)="(/[^"]*)"', (site / "404.html").read_text())
    assert links and all(link.startswith(base) for link in links), links


@pytest.mark.slow
def test_stylesheet_wraps_tables_and_code(site):
    """Every page links the stylesheet whose rules wrap table cells and code blocks."""
    css = re.sub(r"/\*.*?\*/", "", (site / "stylesheets" / "extra.css").read_text(), flags=re.S)
    rules = {
        sel.strip(): body for sels, body in re.findall(r"([^{}]+)\{([^}]*)\}", css) for sel in sels.split(",")
    }
    assert "white-space: normal" in rules[".wy-table-responsive table td"]
    assert "pre-wrap" in rules[".rst-content pre code"]
    assert "max-width: 1200px" in rules[".wy-nav-content"]
    missing = [p for p in _pages(site) if "stylesheets/extra.css" not in p.read_text()]
    assert not missing, f"pages without the stylesheet: {missing[:5]}"


@pytest.mark.slow
def test_nothing_runs_off_at_1280px(site):
    """In a real browser at 1280 px, no table, cell or code block ends right of the text column."""
    check = _load("check_layout")
    if check.find_browser() is None:
        pytest.skip("no Chromium to lay the pages out (apt-get install chromium)")
    found = check.overflows(site, 1280)
    assert len(found) == len([p for p in _pages(site) if p.name == "index.html"])
    bad = {page: items for page, items in found.items() if items}
    assert not bad, f"runs off the right edge at 1280 px: {bad}"


@pytest.mark.slow
def test_api_methods_have_anchors_and_internal_modules_are_out_of_the_nav(site):
    learner = (site / "api" / "learner" / "index.html").read_text()
    assert 'id="learner.fit_one_cycle"' in learner and "Learner.fit_one_cycle(" in learner
    assert 'href="#learner.fine_tune"' in learner  # the method list links each heading
    home = (site / "index.html").read_text()
    nav = home[home.index('class="wy-menu') :]
    assert "api/learner/" in nav and "api/setup_checks/" not in nav and "api/inference/" not in nav
    assert (site / "api" / "setup_checks" / "index.html").is_file()  # still built, listed on the API index
    assert 'href="setup_checks/"' in (site / "api" / "index.html").read_text()


@pytest.mark.slow
def test_tutorials_render_the_notebooks(site):
    for stem in ("01_pets", "02_fashion_mnist", "03_callbacks"):
        page = (site / "tutorials" / stem / "index.html").read_text()
        assert f"nbs/{stem}.ipynb" in page and "<pre>" in page
    assert "make-fashion-pets" in (site / "tutorials" / "index.html").read_text()
    assert "tutorials/01_pets/" in (site / "index.html").read_text()  # in the nav


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_pages_show_saved_outputs():
    nbs = _load("notebooks")
    png = base64.b64encode(b"\x89PNG fake").decode()
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "# Title\n\nSee [training](../docs/training.md), "
             "[bench](../bench/), [02](02_other.ipynb) and [web](https://example.org/x)."},
            {"cell_type": "code", "source": "print('hi')", "outputs": [
                {"output_type": "stream", "name": "stdout", "text": ["\x1b[31mred\x1b[0m\n", "10%\r100%\n"]},
                {"output_type": "display_data", "data": {"image/png": png, "text/plain": "<Figure>"}},
                {"output_type": "execute_result", "data": {"text/html": "<style>p{}</style><table>\n\n<tr>"
                 "<td>1</td></tr></table>", "text/plain": "df"}},
                {"output_type": "execute_result", "data": {"text/plain": ["(1, 2)"]}},
                {"output_type": "error", "ename": "ValueError", "evalue": "bad",
                 "traceback": ["\x1b[0;31mValueError\x1b[0m: bad"]},
            ]},
            {"cell_type": "code", "source": "", "outputs": []},
        ]
    }  # fmt: skip
    page, files = nbs.render(nb, "01_x", repo_url="https://github.com/o/r")
    assert page.startswith(
        "# Title\n\n*This page is the notebook [`nbs/01_x.ipynb`](https://github.com/o/r/blob/main/nbs/01_x.ipynb)"
    )
    assert "[training](../training.md)" in page and "[02](02_other.md)" in page
    assert "(https://github.com/o/r/tree/main/bench/)" in page and "(https://example.org/x)" in page
    assert "```python\nprint('hi')\n```" in page
    assert "```text\nred\n100%\n```" in page  # colours and overwritten progress dropped
    assert (
        files == {"01_x/cell01-1.png": b"\x89PNG fake"} and "![output of cell 1](01_x/cell01-1.png)" in page
    )
    assert (
        '<div class="nb-output">\n<table>\n<tr><td>1</td></tr></table>\n</div>' in page
    )  # no style, no blank line
    assert "```text\n(1, 2)\n```" in page and "```text\nValueError: bad\n```" in page
    assert "<Figure>" not in page and page.count("```python") == 1


def test_readme_links_work_on_the_site():
    gen = _load("gen_api")
    repo = "https://github.com/fastvision/fastvision"
    assert gen.site_link("docs/training.md#fit", repo) == "training.md#fit"
    assert gen.site_link("docs/img/show_batch.jpg", repo) == "img/show_batch.jpg"
    assert gen.site_link("nbs/README.md", repo) == "tutorials/index.md"
    assert gen.site_link("nbs/01_pets.ipynb", repo) == "tutorials/01_pets.md"
    assert gen.site_link("bench/", repo) == f"{repo}/tree/main/bench"
    assert gen.site_link("tests/test_readme.py", repo) == f"{repo}/blob/main/tests/test_readme.py"
    assert gen.site_link("https://x.org/a", repo) == "https://x.org/a"
    index = gen.index_page()
    assert "](docs/" not in index and "](nbs/" not in index
