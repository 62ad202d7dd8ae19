"""Command line: ``python -m generator build CONFIG`` (also installed as ``weight-atlas``);
``deploy CONFIG`` publishes the built atlas to a git branch; ``cache verify CONFIG`` checks a
picture cache without building.

No command ends with a traceback: a problem with the input is an :class:`AtlasError`
printed as it is, and anything else is reported in one paragraph, with the traceback only
when ``WEIGHT_ATLAS_DEBUG`` is set.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import stat
import sys
import traceback
from pathlib import Path

from .build import build_atlas
from .cache_check import verify_cache
from .config import MAX_SEED, load_config
from .deploy import MESSAGE, check_target, deploy
from .errors import AtlasError
from .site import remove_left
from .inceptionv1 import write_random_checkpoint

KEPT_NOTE = "The existing site, if any, was left untouched."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weight-atlas", description="Build a static atlas of a CNN's weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the atlas an atlas config describes")
    build.add_argument("config", help="atlas config (YAML), e.g. site_config/default.yml")
    build.add_argument("--output", help="output folder (default: site.output in the config)")
    build.add_argument("--quiet", action="store_true", help="print only errors")
    build.add_argument("--profile", action="store_true",
                       help="also print each stage's time and the build process's peak memory in it")
    publish = commands.add_parser("deploy", help="publish the built atlas to a git branch (gh-pages), for GitHub Pages")
    publish.add_argument("config", help="atlas config (YAML) the atlas was built from")
    publish.add_argument("--output", help="the built atlas (default: site.output in the config)")
    publish.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")
    publish.add_argument("--branch", default="gh-pages", help="branch to publish to (default: gh-pages)")
    publish.add_argument("--build", action="store_true",
                         help="check the remote, then build the atlas, then publish it (what make deploy runs)")
    publish.add_argument("--quiet", action="store_true", help="print only errors")
    cache = commands.add_parser("cache", help="check the cache of pictures and dataset examples")
    cache.add_argument("action", choices=["verify"], help="verify: check every entry, delete the damaged ones")
    cache.add_argument("config", help="atlas config (YAML) whose `cache` folder is checked")
    cache.add_argument("--dry-run", action="store_true", help="only list damaged entries, delete nothing")
    random = commands.add_parser("random-inceptionv1",
                                 help="write random InceptionV1 weights in the conversion's format (for offline trials)")
    random.add_argument("path")
    random.add_argument("--seed", type=int, default=0, help=f"0 to {MAX_SEED:,} (default 0)")
    random.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        if args.command == "random-inceptionv1":
            return _random_inceptionv1(Path(args.path), args.seed, args.force)
        if args.command == "cache":
            return _verify(args.config, args.dry_run)
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
        if args.command == "deploy":
            return _deploy(args)
        return _build(load_config(args.config), args.output, args.profile)
    except AtlasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: still one paragraph, not a traceback
        if os.environ.get("WEIGHT_ATLAS_DEBUG"):
            traceback.print_exc()
        place = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {Path(place.filename).name}:{place.lineno}" if place else ""
        print(f"error: an unexpected {type(error).__name__}{where}: {str(error)[:300]}. This is a fault of Weight "
              f"Atlas, not of your input; please report it with the command you ran (set WEIGHT_ATLAS_DEBUG=1 to see "
              f"the traceback). {KEPT_NOTE}", file=sys.stderr)
        return 3


def _build(config, output: str | None, profile: bool = False) -> int:
    """Build the atlas; 0 on success, else the exit status, with the problem printed."""
    # SIGTERM (a CI runner's cancel, `kill`) ends the build the way Ctrl-C does: worker
    # processes stopped, the staging folder removed, the existing site kept.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    leaving: list[Path] = []  # the replaced site, removed once the build has reported
    try:
        report = build_atlas(config, output, leaving)
    except AtlasError as error:
        print(f"error: {error}", file=sys.stderr)
        print(KEPT_NOTE, file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a folder that became unwritable
        print(f"error: {_io_problem(error, config, output)} {KEPT_NOTE}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"Interrupted. {KEPT_NOTE} Finished feature visualisations are cached, and the next build goes on "
              f"from there.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.stages.items())
    print(f"Built {report.output}: {report.layers} layers, {report.units} units, {report.pages} pages "
          f"in {report.seconds:.1f}s ({stages}). Feature visualisations: {report.pictures_made} made, "
          f"{report.pictures_reused} from the cache. Open {report.output}/index.html")
    if profile:
        print(_profile(report))
    sys.stdout.flush()
    remove_left(leaving)
    return 0


def _profile(report) -> str:
    """Each stage's seconds and the build process's peak memory in it, as a table."""
    width = max(len(name) for name in report.stages)
    rows = [f"{'stage':<{width}}  {'seconds':>8}  {'peak MB':>8}"]
    rows += [f"{name:<{width}}  {seconds:8.1f}  {report.peaks.get(name, 0.0):8.0f}"
             for name, seconds in report.stages.items()]
    rows.append(f"{'whole build':<{width}}  {report.seconds:8.1f}  {max(report.peaks.values(), default=0.0):8.0f}")
    return "\n".join(rows)


def _io_problem(error: OSError, config, output: str | None) -> str:
    """What a failed read or write means for the user: a full disk names the folders written
    and their free space (the file that happened to fail may be one the build copies from)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        folders = {"the output folder's": Path(output or config.site.output).expanduser().resolve().parent,
                   "the cache": Path(config.cache).expanduser().resolve()}
        free = []
        for what, folder in folders.items():
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            free.append(f"{what} {folder} ({shutil.disk_usage(folder).free / 2**20:,.0f} MB free)")
        return (f"the disk is full ({error.strerror}). The build writes into {' and '.join(free)}. Free disk space "
                f"there, or set `site.output` and `cache` to a disk with room, then build again.")
    where = f" ({error.filename})" if error.filename else ""
    return (f"the build could not write or read a file{where}: {error.strerror or error}. Fix the folder's "
            f"permissions, or free disk space, then build again.")


def _deploy(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    site = Path(args.output or config.site.output).expanduser()
    if args.build:
        check_target(args.remote, args.branch)  # before the build, which can take an hour
        built = _build(config, args.output)
        if built:
            return built
    deploy(site, args.remote, args.branch, f"{MESSAGE}: {config.title}")
    print(f"Published {site} to the branch {args.branch} of {args.remote}.")
    return 0


def _verify(config_path: str, dry_run: bool) -> int:
    config = load_config(config_path)
    report = verify_cache(Path(config.cache), delete=not dry_run)
    for problem in report.damaged:
        print(f"damaged: {problem}")
    action = "listed" if dry_run else "deleted; the next build makes them again"
    print(f"Checked {report.checked:,} entries of the cache {config.cache}: {len(report.damaged)} damaged"
          f"{f' ({action})' if report.damaged else ''}.")
    return 1 if report.damaged else 0


def _random_inceptionv1(path: Path, seed: int, force: bool) -> int:
    if not 0 <= seed <= MAX_SEED:
        raise AtlasError(f"--seed must be a whole number from 0 to {MAX_SEED:,}, not {seed}.")
    if os.path.lexists(path):
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise AtlasError(f"{path} exists and is not a regular file; it is left alone. Choose another path.")
        if not force:
            raise AtlasError(f"{path} exists; it is left alone. Choose another path, or pass --force to replace it "
                             f"with random weights.")
    try:
        write_random_checkpoint(path, seed)
    except OSError as error:
        raise AtlasError(f"could not write {path} ({error.strerror or error}). Choose a path in a folder you can "
                         f"write to, on a disk with room.") from None
    print(f"wrote {path}: random weights, not the trained model")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
