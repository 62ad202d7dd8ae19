"""What pages of a built atlas fetch, and how soon a layer page is usable, in headless Chromium.

The benchmark's targets: a unit page at most 100 KB of its own and 300 KB on a first visit;
a layer page of 1,024 units usable within 1 s from file://.

The site is served over HTTP from a thread here, gzipping text the way GitHub Pages does,
and each page is loaded cold (the browser's cache disabled). Sizes come from the page's
Resource Timing entries: ``transferSize`` is the compressed body plus a flat 300 bytes that
Chromium counts for the headers, i.e. what a visitor downloads. "Own" bytes are the page and everything it fetches outside ``assets/``
and ``search/``; those two folders are "shared", fetched once for the whole site. (Chromium
keeps favicons apart from its HTTP cache: only the first page of a browser session fetches the
site's favicon, 2 KB of shared bytes.)
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import io
import re
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

GZIPPED = {".html", ".css", ".js", ".json", ".svg", ".txt"}  # what GitHub Pages compresses
SHARED = ("assets/", "search/")  # fetched once for the whole site
KB = 1024

_ENTRIES = """return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))
    .map(function (e) { return [e.name, e.transferSize, e.decodedBodySize]; });"""
_BIG_BUFFER = "performance.setResourceTimingBufferSize(1000000);"  # the default keeps only 250 entries
_TOOLBAR_PROBE = """new MutationObserver(function (_, observer) {
  if (document.querySelector('.wa-layer-tools .wa-filter')) {
    window.__waToolbarReady = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true});"""  # layer-tools.js adds the filter box


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of one folder, text gzipped where the request accepts it; no directory listings."""

    protocol_version = "HTTP/1.1"

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            self.send_error(404)
            return None
        body = path.read_bytes()
        kind = self.guess_type(str(path))
        if kind.startswith("text/") or kind in ("application/json", "image/svg+xml"):
            kind += "; charset=utf-8"
        accepted = {t.split(";")[0].strip() for t in self.headers.get("Accept-Encoding", "").split(",")}
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if path.suffix in GZIPPED:
            self.send_header("Vary", "Accept-Encoding")
            if "gzip" in accepted:
                body = gzip.compress(body, compresslevel=6, mtime=0)
                self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1 from a background thread; yields its base URL (ending in /)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def chromium_options(binary: str, width: int, height: int):
    """Options for a quiet headless Chromium (no background fetches) at ``width`` x ``height``
    CSS pixels, one device pixel each."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return options


def start_browser():
    """Headless Chromium with a 1280 x 800 CSS pixel viewport at one device pixel each, its cache
    disabled and room for every Resource Timing entry. Quit it with ``driver.quit()``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise RuntimeError("page weights need Debian's chromium and chromium-driver")
    driver = webdriver.Chrome(service=Service(chromedriver), options=chromium_options(chromium, 1280, 800))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _BIG_BUFFER})
    except Exception:
        driver.quit()
        raise
    return driver


def _wait_quiet(driver, quiet: float = 0.5, bound: float = 10.0) -> None:
    """Wait until no resource has finished loading for ``quiet`` seconds (at most ``bound``)."""
    deadline, last, since = time.monotonic() + bound, -1, time.monotonic()
    while time.monotonic() < deadline:
        count = driver.execute_script("return performance.getEntriesByType('resource').length")
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _scroll_to_bottom(driver, pause: float = 0.1) -> None:
    """Scroll a viewport at a time to the end of the page (which may grow as it goes)."""
    for _ in range(1000):
        at_end = driver.execute_script(
            "window.scrollBy(0, window.innerHeight);"
            "return window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 1;")
        time.sleep(pause)
        if at_end:
            return


def _sizes(driver, base_url: str) -> list[tuple[str, int, int]]:
    """(URL relative to the site, bytes over the wire, decoded bytes) of everything fetched so far."""
    out = []
    for url, transferred, decoded in driver.execute_script(_ENTRIES):
        url = url.split("#")[0].split("?")[0]
        out.append((url[len(base_url):] if url.startswith(base_url) else url, transferred, decoded))
    return out


def _own(relative: str) -> bool:
    return not relative.startswith(SHARED)


def page_weight(driver, base_url: str, path: str) -> dict:
    """What a cold visit to ``path`` (relative to ``base_url``) fetches, in KB, once the network is
    quiet: its own bytes over the wire (the page and what it fetches outside ``assets/`` and
    ``search/``), the whole first visit, its own bytes decoded, the number of requests and the
    five largest fetches; and ``all_images_kb``, its own bytes after scrolling to the bottom,
    every lazy image loaded. ``driver`` comes from :func:`start_browser`."""
    driver.get("about:blank")
    driver.get(base_url + path)  # returns after the load event
    _wait_quiet(driver)
    first = _sizes(driver, base_url)
    _scroll_to_bottom(driver)
    _wait_quiet(driver)
    scrolled = _sizes(driver, base_url)
    return {
        "path": path,
        "own_kb": sum(t for u, t, _ in first if _own(u)) / KB,
        "first_visit_kb": sum(t for _, t, _ in first) / KB,
        "own_decoded_kb": sum(d for u, _, d in first if _own(u)) / KB,
        "requests": len(first),
        "largest": [(u, t / KB) for u, t, _ in sorted(first, key=lambda e: -e[1])[:5]],
        "all_images_kb": sum(t for u, t, _ in scrolled if _own(u)) / KB,
    }


def layer_page_ready(driver, file_path: Path, runs: int = 3) -> float:
    """Seconds from navigation start until a layer page opened from file:// is usable: its load
    event done and the layer toolbar (layer-tools.js) in place; the median of ``runs`` cold loads."""
    probe = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _TOOLBAR_PROBE})
    try:
        times = []
        for _ in range(runs):
            driver.get("about:blank")
            driver.get(Path(file_path).resolve().as_uri())
            deadline = time.monotonic() + 10
            while (ready := driver.execute_script("return window.__waToolbarReady")) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{file_path}: the layer toolbar never appeared")
                time.sleep(0.05)
            load = driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
            times.append(max(load, ready) / 1000)
        return statistics.median(times)
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": probe["identifier"]})


def typical_pages(site: Path, per_layer: int = 1, limit: int = 8) -> tuple[list[str], list[str]]:
    """The worst cases: in each ``units/<layer>/`` the ``per_layer`` unit pages with the most
    ``<img`` tags (at most ``limit`` pages in all), and the layer page with the most unit cells.
    Paths are relative to ``site``, with forward slashes."""
    units = []
    for folder in sorted(p for p in (site / "units").iterdir() if p.is_dir()):
        pages = sorted(folder.glob("*.html"), key=lambda p: -p.read_text(encoding="utf-8").count("<img"))
        units += [p.relative_to(site).as_posix() for p in pages[:per_layer]]
    cell = re.compile(r'class="wa-cell[" ]')
    layers = sorted((site / "layers").glob("*.html"),
                    key=lambda p: -len(cell.findall(p.read_text(encoding="utf-8"))))
    return units[:limit], [p.relative_to(site).as_posix() for p in layers[:1]]


def measure_site(site: Path, unit_pages: list[str], layer_pages: list[str]) -> dict:
    """Weights of ``unit_pages`` and ``layer_pages`` (paths relative to ``site``), how soon each
    layer page is usable from file://, and the maxima and medians the targets are checked on."""
    site = Path(site).resolve()
    with serve(site) as base_url:
        driver = start_browser()
        try:
            units = [page_weight(driver, base_url, p) for p in unit_pages]
            layers = [dict(page_weight(driver, base_url, p), ready_s=layer_page_ready(driver, site / p))
                      for p in layer_pages]
        finally:
            driver.quit()
    summary = {}
    for name, pages, key in (("unit", units, "own_kb"), ("unit", units, "first_visit_kb"),
                             ("layer", layers, "ready_s")):
        values = [p[key] for p in pages]
        if values:
            summary[f"{name}_{key}_max"] = max(values)
            summary[f"{name}_{key}_median"] = statistics.median(values)
    return {"unit_pages": units, "layer_pages": layers, **summary}


if __name__ == "__main__":
    import json
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "site")
    print(json.dumps(measure_site(folder, *typical_pages(folder)), indent=1))
