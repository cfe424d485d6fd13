"""The notebooks in nbs/: committed executed on the real data, with their outputs, and still executable.

CI executes every notebook again with small settings (FASTVISION_NB_SMALL=1) without rewriting the
committed files; `python nbs/make_notebooks.py --execute` regenerates them with the real settings.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))
NEEDS_FASHION_MNIST = ("02_fashion_mnist", "03_callbacks")  # the others make their data (small settings)
PLOTS = re.compile(r"\b(show_batch|show_results|lr_find|plot_\w+)\(|\.scatter\(")
MAX_BYTES = 1_500_000
REGENERATE = "Regenerate them: .venv/bin/python nbs/make_notebooks.py --execute"


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "nbs" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _should_show(source: str) -> bool:
    """A cell whose last statement is an expression (a value, a print, a plot, a fit) leaves an output."""
    body = ast.parse(source).body
    return bool(body) and isinstance(body[-1], ast.Expr)


def test_notebooks_exist():
    assert [p.name for p in NBS] == list(_maker().NOTEBOOKS)
    listed = (ROOT / "nbs" / "README.md").read_text()
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    for p in NBS:
        assert f"({p.name})" in listed, f"nbs/README.md does not list {p.name}"
        assert f"tutorials/{p.stem}.md" in mkdocs, f"mkdocs.yml's Tutorials nav does not list {p.stem}"


@pytest.mark.parametrize("nb_path", NBS, ids=[p.stem for p in NBS])
def test_notebook_matches_make_notebooks(nb_path):
    """The committed cells are the ones nbs/make_notebooks.py writes (edit there, then regenerate)."""
    maker = _maker()
    fresh = maker.build(maker.NOTEBOOKS[nb_path.name], nb_path.name)
    nb = nbformat.read(nb_path, as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in fresh.cells], (
        f"{nb_path.name} differs from nbs/make_notebooks.py. {REGENERATE} {nb_path.name[:2]}"
    )


@pytest.mark.parametrize("nb_path", NBS, ids=[p.stem for p in NBS])
def test_committed_notebook_is_executed(nb_path):
    """Outputs stored: every cell ran, no errors, figures where it plots, no progress widgets, small file."""
    nb = nbformat.read(nb_path, as_version=4)
    name = nb_path.name
    assert nb.metadata.get("fastvision", {}).get("executed_with"), f"{name} was not executed. {REGENERATE}"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{name} cell {i} ({cell.source.splitlines()[0]!r})"
        assert cell.execution_count is not None, f"{where} was not executed. {REGENERATE}"
        outs = cell.outputs
        assert not [o for o in outs if o.output_type == "error"], f"{where} stored an error"
        if _should_show(cell.source):
            assert outs, f"{where} has no output"
        if PLOTS.search(cell.source):
            assert any("image/png" in o.get("data", {}) for o in outs), f"{where} stored no figure"
        for o in outs:
            data = o.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, f"{where} stored a widget"
            page = data.get("text/html", "")
            page = "".join(page) if isinstance(page, list) else page
            assert "<progress" not in page and "fastprogress" not in page, f"{where} stored a progress bar"
    size = nb_path.stat().st_size
    assert size < MAX_BYTES, f"{name} is {size / 1e6:.2f} MB; keep figures small (72 dpi, fewer images)"


def test_plain_progress_turns_the_results_table_into_lines():
    maker = _maker()
    table = (
        '<div><table class="fastprogress"><thead><tr><th>epoch</th><th>train_loss</th><th>time</th></tr>'
        "</thead><tbody><tr><td>0</td><td>0.512345</td><td>00:01</td></tr>"
        "<tr><td>1</td><td>0.301234</td><td>00:01</td></tr></tbody></table><p>reducing lr</p></div>"
    )
    html = lambda h: nbformat.v4.new_output("display_data", data={"text/html": h, "text/plain": "<div>"})  # noqa: E731
    cell = nbformat.v4.new_code_cell("learn.fit(2)")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="before\n"),
        html("<style>progress.progress-bar-interrupted { }</style>"),
        html(table),
        html("<div></div>"),  # an lr_find bar, emptied
        nbformat.v4.new_output("display_data", data={"image/png": "iVBO", "text/plain": "<Figure>"}),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert maker.plain_progress(nb) == 3
    text, fig = cell.outputs
    assert text.output_type == "stream" and "image/png" in fig.data
    assert text.text.splitlines() == [
        "before",
        "epoch     train_loss  time",
        "0         0.512345    00:01",
        "1         0.301234    00:01",
        "reducing lr",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", NBS, ids=[p.stem for p in NBS])
def test_notebook_runs(nb_path, tmp_path, monkeypatch):
    """Each notebook executes with small settings (in a copy: the committed file is not rewritten)."""
    if nb_path.stem in NEEDS_FASHION_MNIST:
        from fastvision.data.external import fashion_mnist_dir

        try:
            fashion_mnist_dir(download=False)
        except FileNotFoundError:
            pytest.skip("Fashion-MNIST is not installed (make test installs dataset-fashion-mnist as root)")
    monkeypatch.setenv("FASTVISION_NB_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(nb_path, as_version=4)
    for cell in _code(nb):
        cell.outputs = []
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in _code(nb) for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{errors[0].ename}: {errors[0].evalue}"
