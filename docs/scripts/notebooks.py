"""Render the notebooks in `nbs/` as the site's Tutorials section: an mkdocs hook (`hooks:` in mkdocs.yml).

Each `nbs/NAME.ipynb` becomes the page `tutorials/NAME.md`: Markdown cells as written, code cells as
Python blocks, and the outputs saved in the notebook below each cell (printed text, tables, errors,
and figures as PNG files next to the page). `nbs/README.md` becomes `tutorials/index.md`. Nothing is
executed: the site shows the notebooks as committed, so commit them executed, with their outputs.

Links in Markdown cells are written for the repository (`../docs/training.md`, `../bench/`): those into
`docs/` become links between site pages, the others point at the repository on GitHub (`repo_url`).
Only the standard library and mkdocs are used (an .ipynb is JSON), so the docs extra needs nothing else.

    .venv/bin/python docs/scripts/notebooks.py OUT_DIR    # write the pages and figures, to look at them
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NBS = ROOT / "nbs"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LINK = re.compile(r"(\]\()([^)\s#]+)([^)]*\))")


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _plain(text: str) -> str:
    """Terminal text as it ended up on screen: no colour codes, each line's last `\\r` overwrite only."""
    text = ANSI.sub("", text)
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n")).rstrip("\n")


def _fence(text: str, lang: str = "text") -> str:
    ticks = "```" if "```" not in text else "````"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _html(html: str) -> str:
    """A raw HTML output (a results table, a progress bar) without the `<style>` and `<script>` it carries."""
    html = re.sub(r"<(style|script)\b.*?</\1>", "", html, flags=re.S | re.I).strip()
    html = re.sub(r"\n\s*\n", "\n", html)  # a blank line would end the raw HTML block in Markdown
    return f'<div class="nb-output">\n{html}\n</div>'


def fix_links(markdown: str, repo_url: str | None) -> str:
    """Rewrite the repository-relative links of a notebook's Markdown for the page `tutorials/NAME.md`."""

    def sub(m: re.Match) -> str:
        target = m.group(2)
        if re.fullmatch(r"[\w.-]+\.ipynb", target):  # another notebook: its page
            return f"{m.group(1)}{target[: -len('.ipynb')]}.md{m.group(3)}"
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or not target.startswith("../"):
            return m.group(0)  # an absolute URL, or a file beside the page
        rest = target[3:]
        if rest.startswith("docs/"):
            return f"{m.group(1)}../{rest[5:]}{m.group(3)}"
        if repo_url:
            kind = "tree" if rest.endswith("/") or "." not in rest.rsplit("/", 1)[-1] else "blob"
            return f"{m.group(1)}{repo_url.rstrip('/')}/{kind}/main/{rest}{m.group(3)}"
        return m.group(0)

    return LINK.sub(sub, markdown)


def _outputs(outputs: list[dict[str, Any]], stem: str, cell: int) -> tuple[list[str], dict[str, bytes]]:
    parts: list[str] = []
    files: dict[str, bytes] = {}
    stream: list[str] = []

    def flush() -> None:
        if stream:
            text = _plain("".join(stream))
            if text.strip():
                parts.append(_fence(text))
            stream.clear()

    for k, out in enumerate(outputs):
        kind = out.get("output_type")
        if kind == "stream":
            stream.append(_text(out.get("text", "")))
            continue
        flush()
        if kind == "error":
            trace = "\n".join(_plain(line) for line in out.get("traceback", []))
            parts.append(_fence(trace or f"{out.get('ename')}: {out.get('evalue')}"))
            continue
        data = out.get("data", {})
        if "image/png" in data:
            name = f"{stem}/cell{cell:02d}-{k}.png"
            files[name] = base64.b64decode(_text(data["image/png"]))
            parts.append(f"![output of cell {cell}]({name})")
        elif "image/svg+xml" in data:
            name = f"{stem}/cell{cell:02d}-{k}.svg"
            files[name] = _text(data["image/svg+xml"]).encode()
            parts.append(f"![output of cell {cell}]({name})")
        elif "text/html" in data:
            parts.append(_html(_text(data["text/html"])))
        elif "text/markdown" in data:
            parts.append(_text(data["text/markdown"]))
        elif "text/plain" in data:
            parts.append(_fence(_plain(_text(data["text/plain"]))))
    flush()
    return parts, files


def render(nb: dict[str, Any], stem: str, repo_url: str | None = None) -> tuple[str, dict[str, bytes]]:
    """Return the Markdown page of notebook `nb` and its figures `{path relative to the page: bytes}`."""
    parts: list[str] = []
    files: dict[str, bytes] = {}
    for i, cell in enumerate(nb.get("cells", [])):
        source = _text(cell.get("source", "")).strip("\n")
        if cell.get("cell_type") == "markdown":
            parts.append(fix_links(source, repo_url))
        elif cell.get("cell_type") == "code":
            if source.strip():
                parts.append(_fence(source, "python"))
            out_parts, out_files = _outputs(cell.get("outputs", []), stem, i)
            parts += out_parts
            files.update(out_files)
    source = f"../nbs/{stem}.ipynb"
    note = f"*This page is the notebook [`nbs/{stem}.ipynb`]({source}) with its saved outputs.*"
    note = fix_links(note, repo_url)
    if parts and parts[0].startswith("# "):  # right below the title
        title, _, rest = parts[0].partition("\n")
        parts[0:1] = [title, note, rest.strip("\n")] if rest.strip() else [title, note]
    else:
        parts.insert(0, note)
    return "\n\n".join(parts) + "\n", files


def tutorial_files(root: Path = ROOT, repo_url: str | None = None) -> dict[str, str | bytes]:
    """`{path under docs/: content}` of the Tutorials section: its index and one page (+ figures) per notebook."""
    nbs = root / "nbs"
    out: dict[str, str | bytes] = {}
    readme = nbs / "README.md"
    if readme.is_file():
        out["tutorials/index.md"] = fix_links(readme.read_text(), repo_url)
    for path in sorted(nbs.glob("*.ipynb")):
        page, figures = render(json.loads(path.read_text()), path.stem, repo_url)
        out[f"tutorials/{path.stem}.md"] = page
        out.update({f"tutorials/{name}": data for name, data in figures.items()})
    return out


def on_files(files: Any, config: Any) -> Any:
    """mkdocs event: add the tutorial pages and their figures to the site's files."""
    from mkdocs.structure.files import File

    root = Path(config.config_file_path).resolve().parent
    for src_uri, content in tutorial_files(root, config.repo_url).items():
        files.append(File.generated(config, src_uri, content=content))
    return files


if __name__ == "__main__":
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tutorials-preview")
    for rel, content in tutorial_files().items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        print(f"wrote {path}")
