"""Execute every notebook in nbs/ with small settings (FASTVISION_NB_SMALL=1)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NBS = sorted((Path(__file__).parents[1] / "nbs").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("nb_path", NBS, ids=[p.stem for p in NBS])
def test_notebook_runs(nb_path, tmp_path, monkeypatch):
    if nb_path.stem.startswith("02"):
        from fastvision.data.external import fashion_mnist_dir

        try:
            fashion_mnist_dir(download=False)
        except FileNotFoundError:
            pytest.skip("Fashion-MNIST is not installed (make test installs dataset-fashion-mnist as root)")
    monkeypatch.setenv("FASTVISION_NB_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors


def test_notebooks_exist():
    assert [p.stem for p in NBS] == ["01_pets", "02_fashion_mnist", "03_callbacks"]
