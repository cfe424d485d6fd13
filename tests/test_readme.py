import re
from pathlib import Path

import matplotlib.pyplot as plt

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    assert len(python_blocks()) >= 2


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(python_blocks()):
        ns: dict = {"__name__": f"readme_block_{i}"}
        exec(compile(block, f"README.md block {i}", "exec"), ns)
        plt.close("all")
    out = capsys.readouterr().out
    assert "Building one batch" in out  # summary ran
    assert (tmp_path / "pets.json").exists() and len(list(tmp_path.glob("pets.*.safetensors"))) == 1
