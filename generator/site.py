"""Turn a docs folder into the static site with mkdocs, and put it in place safely.

The site is built into a temporary folder beside the output; the existing output is
replaced only when the whole build succeeded, so a failed build loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from mkdocs.commands.build import build as mkdocs_build
from mkdocs.config import load_config

SITE_CONFIG = Path(__file__).resolve().parent.parent / "site_config"


def mkdocs_site(docs: Path, site: Path, title: str, nav: list) -> None:
    """Build ``docs`` into ``site`` with ``site_config/mkdocs.yml``, its assets and overrides."""
    shutil.copytree(SITE_CONFIG / "assets", docs / "assets", dirs_exist_ok=True)
    settings = yaml.safe_load((SITE_CONFIG / "mkdocs.yml").read_text(encoding="utf-8"))
    settings["theme"]["custom_dir"] = str(SITE_CONFIG / settings["theme"].get("custom_dir", "overrides"))
    settings.update(site_name=title, docs_dir=str(docs), site_dir=str(site), nav=nav)
    config_file = docs.parent / "mkdocs.yml"
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    # mkdocs reports every page left out of nav at INFO level; unit pages are, on purpose.
    logging.getLogger("mkdocs").setLevel(logging.WARNING)
    mkdocs_build(load_config(str(config_file)))
    # The theme's 404 page links from the server root, which breaks under a sub-path
    # (GitHub Pages project sites); without it, hosts show their own.
    (site / "404.html").unlink(missing_ok=True)


@contextlib.contextmanager
def staged_output(output: Path) -> Iterator[Path]:
    """A fresh folder to build into; on success it becomes ``output``, on failure it is removed."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}-build-", dir=output.parent))
    try:
        yield stage
        old = None
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}-old-", dir=output.parent))
            output.rename(old / output.name)
        (stage / "site").rename(output)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
