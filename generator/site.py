"""Turn the pages into the static site with mkdocs, and put it in place safely.

mkdocs builds the pages people navigate by, plus one *shell*: an empty page at the depth
of the unit pages, carrying the theme's header, navigation and search box. Unit pages are
that shell with their own title and content, written straight into the built site, so
thousands of them cost no more than the rendering of their content.

The site is built into a temporary folder beside the output; the existing output is
replaced only when the whole build succeeded, so a failed build loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import html
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from markupsafe import Markup
from mkdocs.commands.build import build as mkdocs_build
from mkdocs.config import load_config

from .errors import AtlasError

log = logging.getLogger("weight_atlas")

SITE_CONFIG = Path(__file__).resolve().parent.parent / "site_config"
SHELL = Path("units") / "_shell" / "shell"  # same depth as units/<layer>/<unit>.html
TITLE_MARK, BODY_MARK = "@@atlas-page-title@@", "@@atlas-page-body@@"


def write_shell(docs: Path) -> None:
    """The shell page's source: a title and a body that are placeholders."""
    path = docs / SHELL.with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'---\ntitle: "{TITLE_MARK}"\n---\n<div>{BODY_MARK}</div>\n', encoding="utf-8")


@dataclass(frozen=True)
class PageShell:
    """The built shell, split around its body; ``page`` fills in a unit's title and body."""

    head: str
    tail: str

    @classmethod
    def take(cls, site: Path) -> PageShell:
        """Read the built shell out of ``site`` and remove it from there."""
        built = (site / SHELL.with_suffix(".html")).read_text(encoding="utf-8")
        shutil.rmtree(site / SHELL.parent)
        head, body_mark, tail = built.partition(BODY_MARK)
        if not body_mark:
            raise RuntimeError(f"the theme dropped the page body of {SHELL}.html; check site_config/overrides")
        return cls(_slim(head), _slim(tail))

    def page(self, title: str, body: str) -> str:
        title = html.escape(title)
        return self.head.replace(TITLE_MARK, title) + body + self.tail.replace(TITLE_MARK, title)


def _slim(html_text: str) -> str:
    """The shell without the theme's indentation and blank lines (it has no <pre> or
    <textarea>, where they would count), which every unit page would repeat."""
    if re.search(r"<(pre|textarea)\b", html_text):
        return html_text
    return re.sub(r"\n\s+", "\n", html_text)


def mkdocs_site(docs: Path, site: Path, title: str, nav: list) -> None:
    """Build ``docs`` into ``site`` with ``site_config/mkdocs.yml``, its assets and overrides."""
    shutil.copytree(SITE_CONFIG / "assets", docs / "assets", dirs_exist_ok=True)
    write_shell(docs)
    settings = yaml.safe_load((SITE_CONFIG / "mkdocs.yml").read_text(encoding="utf-8"))
    settings["theme"]["custom_dir"] = str(SITE_CONFIG / settings["theme"].get("custom_dir", "overrides"))
    settings.update(docs_dir=str(docs), site_dir=str(site), nav=nav)
    config_file = docs.parent / "mkdocs.yml"
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    # mkdocs reports every page left out of nav at INFO level; the shell is, on purpose.
    logging.getLogger("mkdocs").setLevel(logging.WARNING)
    # The theme writes site_name into headers and <title>s as it is, and into a tooltip through
    # Jinja's escape filter: escaped text marked safe is right in both.
    mkdocs_build(load_config(str(config_file), site_name=Markup(html.escape(title))))
    # The theme's 404 page links from the server root, which breaks under a sub-path
    # (GitHub Pages project sites); without it, hosts show their own. Without a site URL
    # the sitemap lists nothing, and it carries the build date: the site is better without.
    for name in ("404.html", "sitemap.xml", "sitemap.xml.gz"):
        (site / name).unlink(missing_ok=True)
    # The theme ships its search engine, search worker and source maps whether used or not.
    for unused in ("assets/javascripts/lunr", "assets/javascripts/workers"):
        shutil.rmtree(site / unused, ignore_errors=True)
    for source_map in site.rglob("*.map"):
        source_map.unlink()


MARK = ".weight-atlas"  # in every built site: a folder without it is never replaced
KEPT = (".git", "CNAME")  # a gh-pages worktree, a custom domain: carried over into every rebuild
STAGE_LOCK = ".building"  # held (flock) by the build that writes a staging folder


def check_output(output: Path, inputs: dict[str, str | Path | None],
                 containers: dict[str, str | Path | None] | None = None, probe: bool = True) -> Path:
    """The resolved ``output``, once it is clear the build may write it: before any expensive stage.

    An existing folder is replaced only if it is empty or an earlier atlas (it holds the mark
    file), so a mistyped ``site.output`` can never delete other work. None of ``inputs``
    (what they are, by name) may lie inside it, since every build replaces it, and it may not
    lie inside any of ``containers`` (folders the build reads all of). ``probe``: also try
    writing and locking beside it, as the build will.
    """
    output = output.resolve()
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / MARK).exists())):
        raise AtlasError(
            f"The output folder {output} exists and is not an atlas built by Weight Atlas (it has no {MARK} "
            f"file), so it is left alone. Set `site.output` (or --output) to a new folder, or to an "
            f"earlier atlas, which is replaced."
        )
    for what, path in inputs.items():
        if path is not None and Path(path).expanduser().resolve().is_relative_to(output):
            raise AtlasError(
                f"The {what} {path} lies inside the output folder {output}, which every build replaces. Set "
                f"`site.output` (or --output) to a folder of its own, such as site, or move the {what}."
            )
    for what, path in (containers or {}).items():
        if path is not None and output.is_relative_to(Path(path).expanduser().resolve()):
            raise AtlasError(f"The output folder {output} lies inside the {what} {path}, whose files the build "
                             f"reads. Set `site.output` (or --output) to a folder outside it.")
    if not probe:
        return output
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{output.name}-probe-", dir=output.parent))
        with _folder_lock(output.parent):  # what the swap into place needs
            pass
    except OSError as error:
        raise AtlasError(f"The output folder {output} cannot be written ({error.strerror}). Choose a folder you "
                         f"can write to with `site.output` or --output.") from None
    return output


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file is left behind)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _held(lock: Path) -> bool:
    """Whether a running build holds ``lock``; a build that died holds nothing."""
    try:
        with open(lock) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (they are delivered after it)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _real(path: Path) -> bool:
    """A regular file or a folder, not a link (nor a device, FIFO or socket)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


# What removes replaced sites: a plain Python, with nothing of the build imported.
REMOVER = "import shutil, sys\nfor folder in sys.argv[1:]:\n    shutil.rmtree(folder, ignore_errors=True)\n"
_removers: list[subprocess.Popen] = []  # held while they run (a Popen let go while running is warned of)


def remove_left(folders: list[Path]) -> subprocess.Popen | None:
    """Remove replaced sites renamed aside by :func:`staged_output`, in a process of its own that
    nobody waits for: deleting a large site takes seconds on a slow disk (what it leaves, the next
    build removes). Where no process can be started, they are removed here. Returns the process."""
    _removers[:] = [p for p in _removers if p.poll() is None]
    if not folders:
        return None
    try:
        if not sys.executable or getattr(sys, "frozen", False):
            raise OSError("no Python to run")  # embedded, or an application that is not Python
        # -I -S: nothing from the environment, the working folder or site-packages takes part
        process = subprocess.Popen([sys.executable, "-I", "-S", "-c", REMOVER, *map(str, folders)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
    except (OSError, ValueError):
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        return None
    _removers.append(process)
    return process


def wait_for_removals(timeout: float = 60) -> None:
    """Wait until the replaced sites this process has had removed (:func:`remove_left`) are gone."""
    for process in _removers:
        process.wait(timeout)


@contextlib.contextmanager
def staged_output(output: Path, leaving: list[Path] | None = None) -> Iterator[Path]:
    """A fresh folder to build into; on success its ``site`` becomes ``output``, else it is removed.

    The replaced site is only renamed aside at the swap. It is removed after the swap, by a
    process this does not wait for (:func:`remove_left`), or, when ``leaving`` is given, added
    to it, for the caller to have it removed once it has reported; a build that stops before
    that leaves it to the next build.

    The staging folders of builds that died (killed, power lost) are removed first; those of
    builds running at once into the same output are not, and each swap into place is done
    under a lock, so concurrent builds never mix their files: the last one to finish wins.
    The swap runs with Ctrl-C and SIGTERM held back, puts the old site back if a step fails,
    and carries the files named in :data:`KEPT` from the old site into the new one.
    """
    output = check_output(output, {})
    name = glob.escape(output.name)
    with _folder_lock(output.parent):
        for stale in output.parent.glob(f".{name}-build-*"):
            if not _held(stale / STAGE_LOCK):
                shutil.rmtree(stale, ignore_errors=True)
        for stale in output.parent.glob(f".{name}-old-*"):  # a swap cut short by a power loss or SIGKILL
            if not _exists(output) and _exists(stale / output.name):
                (stale / output.name).rename(output)  # the previous site, put back
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{output.name}-build-", dir=output.parent))
        lock = open(stage / STAGE_LOCK, "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield stage
        site = stage / "site"
        (site / MARK).write_text("Built by Weight Atlas; the next build replaces this folder.\n")
        (site / ".nojekyll").write_text("")  # GitHub Pages serves folders whose names start with _
        with _folder_lock(output.parent), _signals_held():
            check_output(output, {}, probe=False)  # another program may have written there meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}-old-", dir=output.parent)) / output.name
            kept = []
            try:
                if _exists(output):
                    output.rename(old)
                    for kept_name in KEPT:
                        if _real(old / kept_name):
                            (old / kept_name).rename(site / kept_name)
                            kept.append(kept_name)
                        elif _exists(old / kept_name):
                            log.warning("not kept from the previous site: %s is not a regular file or folder (a "
                                        "link could publish a file from outside the atlas)", output / kept_name)
                site.rename(output)
            except BaseException:
                for kept_name in kept:
                    (site / kept_name).rename(old / kept_name)
                if _exists(old) and not _exists(output):
                    old.rename(output)
                raise
        if not _exists(old):
            with contextlib.suppress(OSError):  # another build may have removed it as a leftover
                old.parent.rmdir()  # there was no site to replace
        elif leaving is None:
            remove_left([old.parent])  # a leftover is removed by the next build
        else:
            leaving.append(old.parent)
        for kept_name in kept:
            log.info("kept %s from the previous site", kept_name)
    finally:
        lock.close()
        shutil.rmtree(stage, ignore_errors=True)
