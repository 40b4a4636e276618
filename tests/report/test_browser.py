"""The HTML report in a real headless browser (Debian's ``chromium``): it opens from a file: URL
with no network, every image decodes, no error is raised, and it renders to a non-blank page."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a headless browser: apt-get install chromium")

# Injected into a copy of the page (the report itself has no script): records errors (a failed
# resource load is an error event in the capture phase; console.error is counted too) and, once
# the page has loaded, writes what it found on <body>, which --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || 'error'));
}, true);
var consoleError = console.error;
console.error = function () { window.__errors.push('console.error'); consoleError.apply(console, arguments); };
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var fetched = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (n) { return !/^data:/.test(n); }).length;
  var b = document.body;
  b.setAttribute('data-images', String(images.length));
  b.setAttribute('data-images-broken', String(broken));
  b.setAttribute('data-fetched', String(fetched));
  b.setAttribute('data-errors', String(window.__errors.length));
  b.setAttribute('data-checked', 'yes');
});
</script>"""


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_report_renders_in_headless_chromium(main_report, tmp_path):
    page = (main_report / "index.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    result = _chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, result.stdout[:2000]
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))
    expected_images = len(re.findall(r"<img ", page))
    assert attrs.get("checked") == "yes"
    assert (attrs["images"], attrs["images-broken"], attrs["fetched"], attrs["errors"]) == (
        str(expected_images),
        "0",
        "0",
        "0",
    )
    assert expected_images >= 6

    shot = tmp_path / "report.png"
    result = _chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        "--hide-scrollbars",
        (main_report / "index.html").as_uri(),
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (4000, 1280)
    assert pixels[:, :, :3].std() > 0.1  # text, tables and figures, not a blank page
    lower = pixels[1500:3500, :, :3]
    assert (lower.mean(axis=2) < 0.5).mean() > 0.01  # figures further down rendered too
