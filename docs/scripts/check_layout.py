"""Find what runs off the right edge of the built site's text column, in headless Chromium at 1280 px.

For every page, after the theme's scripts have run, a table, table cell or code block counts as running
off when it ends right of the text column or scrolls sideways. Notebook outputs (`.nb-output`) may scroll.
One Chromium process loads all the pages in frames of the given width, so it takes about as long as
loading the site once.

    .venv/bin/mkdocs build -d /tmp/site && .venv/bin/python docs/scripts/check_layout.py /tmp/site [--width 1280]

Prints `page: element: first characters` for each and exits 1 if anything runs off. `tests/test_docs.py`
runs it when Chromium is installed (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

MEASURE = """<!doctype html><html><body><pre id="result"></pre><script>
const pages = %(pages)s, results = {};
let left = pages.length;
function measure(doc) {
  const col = doc.querySelector('.rst-content');
  if (!col) return ['page: no .rst-content'];
  const right = col.getBoundingClientRect().right + 1, bad = [];
  doc.querySelectorAll('.rst-content table, .rst-content td, .rst-content th, .rst-content pre, '
                       + '.rst-content pre code').forEach(el => {
    if (el.closest('.nb-output')) return;
    if (el.getBoundingClientRect().right > right || el.scrollWidth > el.clientWidth + 1)
      bad.push(el.tagName.toLowerCase() + ': ' + el.textContent.trim().replace(/\\s+/g, ' ').slice(0, 60));
  });
  return bad;
}
for (const p of pages) {
  const f = document.createElement('iframe');
  f.style.width = '%(width)dpx'; f.style.height = '900px';
  f.onload = () => setTimeout(() => {  // after the theme's scripts have wrapped the tables
    try { results[p] = measure(f.contentDocument); } catch (e) { results[p] = ['page: ' + e]; }
    if (--left === 0) document.getElementById('result').textContent = JSON.stringify(results);
  }, 1000);
  f.src = p;
  document.body.appendChild(f);
}
</script></body></html>
"""


def find_browser() -> str | None:
    """The path of a Chromium-like browser, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def overflows(
    site: Path, width: int = 1280, browser: str | None = None, timeout: float = 600
) -> dict[str, list[str]]:
    """Return `{page: [what runs off]}` for every `index.html` page of the built `site` (empty lists: fine)."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(
            f"No Chromium found (looked for {', '.join(BROWSERS)}): apt-get install chromium"
        )
    site = Path(site).resolve()
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    probe = site / "_check_layout.html"
    probe.write_text(MEASURE % {"pages": json.dumps(pages), "width": width})
    try:
        res = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=60000", f"--window-size={width},900", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    finally:
        probe.unlink()
    m = re.search(r'<pre id="result">(.*?)</pre>', res.stdout, flags=re.S)
    if not m or not m.group(1).strip():
        raise RuntimeError(f"{browser} gave no measurements (exit {res.returncode}):\n{res.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(m.group(1)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, help="the folder `mkdocs build -d` wrote")
    ap.add_argument("--width", type=int, default=1280, help="window width in px (default 1280)")
    args = ap.parse_args(argv)
    found = overflows(args.site, args.width)
    bad = [f"{page}: {what}" for page, items in sorted(found.items()) for what in items]
    print("\n".join(bad) if bad else f"{len(found)} pages: nothing runs off at {args.width} px")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
