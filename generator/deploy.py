"""Publish a built atlas to a git branch (``gh-pages``), as ``mkdocs gh-deploy`` does.

The branch gets one new commit holding exactly the atlas folder, plus ``.nojekyll`` so
that GitHub Pages serves it as it is (its Jekyll drops folders whose names start with
``_``). mkdocs' own machinery, ghp_import, writes that commit with ``git fast-import``
straight into the branch: the working tree, the index and the current branch are never
touched. The remote's branch is fetched first, so the new commit follows it and the push
is a fast-forward from any clone.

Only regular files that lie inside the atlas folder are published: a symbolic link (which
could point at any file of the machine), a device, a FIFO or a socket there stops the
publication, named, before anything is committed.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import ghp_import

from .errors import AtlasError
from .site import MARK

MESSAGE = "Publish Weight Atlas"  # the commit's message; the command line adds the atlas title


def deploy(site: Path, remote: str = "origin", branch: str = "gh-pages", message: str | None = None) -> None:
    """Commit the built atlas ``site`` to ``branch`` and push that branch to ``remote``."""
    site = Path(site)
    check_site(site)
    check_target(remote, branch)
    publish(site, remote, branch, message)


def check_site(site: Path) -> None:
    """Refuse a folder that is not a built atlas, or that holds anything but folders and regular files."""
    if not site.is_dir():
        raise AtlasError(f"There is no atlas at {site} to publish. Build it first (make atlas, or python -m "
                         f"generator build CONFIG), or pass the folder it was built into with --output.")
    if not (site / MARK).is_file():
        raise AtlasError(f"{site} is not an atlas built by Weight Atlas (it has no {MARK} file), so it is not "
                         f"published. Build the atlas into it first (make atlas), or pass the folder an atlas "
                         f"was built into with --output.")
    if (site / ".git").exists():
        raise AtlasError(f"{site} holds a .git of its own (a worktree or clone of the published branch), which "
                         f"would be published with it. Publish from there with git (git -C {site} add -A, "
                         f"commit, push), or remove {site / '.git'} and run this again.")
    strange = [f"{path.relative_to(site)} ({kind})" for path, kind in _not_regular(site)]
    if strange:
        shown = ", ".join(strange[:5]) + (f" and {len(strange) - 5} more" if len(strange) > 5 else "")
        raise AtlasError(f"{site} holds {len(strange)} entr{'y that is' if len(strange) == 1 else 'ies that are'} "
                         f"not a regular file: {shown}. Only the atlas's own files are published, never what a link "
                         f"points to. Remove them, or rebuild the atlas (make atlas), and publish again.")


def _not_regular(site: Path) -> list[tuple[Path, str]]:
    """Every entry under ``site`` that is neither a folder nor a regular file, with what it is."""
    found = []
    for folder, folders, files in os.walk(site, followlinks=False):
        for name in [*folders, *files]:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found.append((path, f"a link to {os.readlink(path)[:100]}"))
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
                found.append((path, kind))
    return sorted(found)


def check_target(remote: str, branch: str) -> None:
    """Refuse to publish where it cannot work (no repository, an unknown remote, a bad branch
    name, the branch checked out), and fetch the remote's branch, which also tells that the
    remote answers."""
    if _git("rev-parse", "--git-dir").returncode != 0:
        raise AtlasError("The current folder is not in a git repository, so there is no remote to publish to. "
                         "Run the command from your clone of the project.")
    remotes = _git("remote").stdout.split()
    if remote not in remotes:
        known = ", ".join(remotes) if remotes else "none"
        raise AtlasError(f"This repository has no remote named {remote!r} (its remotes: {known}). Pass one of "
                         f"them with --remote (make deploy REMOTE=name), or add it: git remote add {remote} URL.")
    if _git("check-ref-format", "--branch", branch).returncode != 0:
        raise AtlasError(f"{branch!r} is not a valid git branch name. Pass another with --branch, such as gh-pages.")
    if _git("symbolic-ref", "--quiet", "--short", "HEAD").stdout.strip() == branch:
        raise AtlasError(f"You are on the branch {branch!r}, which publishing replaces. Check out your working "
                         f"branch first, or publish to another one with --branch.")
    _fetch(remote, branch)


def publish(site: Path, remote: str, branch: str, message: str | None) -> None:
    """Commit ``site`` onto ``branch`` (after the remote's) and push it."""
    before = {_commit(f"refs/heads/{branch}"), _commit(f"refs/remotes/{remote}/{branch}")}
    try:
        ghp_import.ghp_import(str(site.resolve()), mesg=message or MESSAGE, remote=remote, branch=branch,
                              push=False, nojekyll=True)
    except ghp_import.GhpError as error:
        raise AtlasError(f"git could not commit the atlas to {branch!r}: {error.message}") from None
    except (TypeError, BrokenPipeError):  # ghp_import 2.1 when fast-import fails (it writes bytes to
        # sys.stdout, or to a closed pipe): whether the branch moved is checked below
        pass
    if _commit(f"refs/heads/{branch}") in before:
        raise AtlasError(f"git could not commit the atlas to the branch {branch!r} (git fast-import failed; its "
                         f"message is above). Check that the repository is writable, then run the command again.")
    pushed = _git("push", remote, f"refs/heads/{branch}:refs/heads/{branch}")
    if pushed.returncode != 0:
        raise AtlasError(f"git could not push the branch {branch!r} to {remote!r}:\n{_last_lines(pushed.stderr)}\n"
                         f"The atlas is committed to the local branch {branch!r}; fix the cause (access to the "
                         f"remote, the network) and run the command again.")


def _git(*args: str) -> subprocess.CompletedProcess:
    """Run git in the current folder, its output captured as text."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise AtlasError("git is not installed (or not on PATH); install it to publish the atlas.") from None


def _commit(ref: str) -> str:
    """The commit ``ref`` points to, or "" when there is no such ref."""
    return _git("rev-parse", "--verify", "--quiet", ref).stdout.strip()


def _fetch(remote: str, branch: str) -> None:
    """Bring the remote's ``branch``, if it has one, into ``refs/remotes/<remote>/<branch>``,
    where ghp_import takes the new commit's parent from."""
    listed = _git("ls-remote", "--exit-code", "--heads", remote, f"refs/heads/{branch}")
    if listed.returncode == 2:  # reachable, without the branch: the first publication
        return
    if listed.returncode == 0:
        listed = _git("fetch", "--quiet", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
    if listed.returncode != 0:
        raise AtlasError(f"git could not read the remote {remote!r}:\n{_last_lines(listed.stderr)}\n"
                         f"Check its URL (git remote -v) and your access to it, then run the command again.")


def _last_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:]) or "(git printed nothing)"
