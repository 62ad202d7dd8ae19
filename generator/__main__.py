"""Command line: ``python -m generator build CONFIG`` (also installed as ``weight-atlas``);
``deploy CONFIG`` publishes the built atlas to a git branch."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .build import build_atlas
from .config import load_config
from .deploy import MESSAGE, deploy
from .errors import AtlasError
from .inceptionv1 import write_random_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weight-atlas", description="Build a static atlas of a CNN's weights.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the atlas an atlas config describes")
    build.add_argument("config", help="atlas config (YAML), e.g. site_config/default.yml")
    build.add_argument("--output", help="output folder (default: site.output in the config)")
    build.add_argument("--quiet", action="store_true", help="print only errors")
    publish = commands.add_parser("deploy", help="publish the built atlas to a git branch (gh-pages), for GitHub Pages")
    publish.add_argument("config", help="atlas config (YAML) the atlas was built from")
    publish.add_argument("--output", help="the built atlas (default: site.output in the config)")
    publish.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")
    publish.add_argument("--branch", default="gh-pages", help="branch to publish to (default: gh-pages)")
    random = commands.add_parser("random-inceptionv1",
                                 help="write random InceptionV1 weights in the conversion's format (for offline trials)")
    random.add_argument("path")
    random.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "random-inceptionv1":
        try:
            Path(args.path).parent.mkdir(parents=True, exist_ok=True)
            write_random_checkpoint(args.path, args.seed)
        except OSError as error:
            print(f"error: could not write {args.path} ({error.strerror or error}). Choose a path in a folder "
                  f"you can write to.", file=sys.stderr)
            return 2
        print(f"wrote {args.path}: random weights, not the trained model")
        return 0
    if args.command == "deploy":
        try:
            config = load_config(args.config)
            site = Path(args.output or config.site.output)
            deploy(site, args.remote, args.branch, f"{MESSAGE}: {config.title}")
        except AtlasError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"Published {site} to the branch {args.branch} of {args.remote}.")
        return 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    # SIGTERM (a CI runner's cancel, `kill`) ends the build the way Ctrl-C does: worker
    # processes stopped, the staging folder removed, the existing site kept.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = build_atlas(load_config(args.config), args.output)
    except AtlasError as error:
        print(f"error: {error}", file=sys.stderr)
        print("The existing site, if any, was left untouched.", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a folder that became unwritable
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: the build could not write or read a file{where}: {error.strerror or error}. Free disk "
              f"space or fix the folder's permissions, then build again. The existing site, if any, was left "
              f"untouched.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted. The existing site, if any, was left untouched; finished feature visualisations "
              "are cached, and the next build goes on from there.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    stages = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.stages.items())
    print(f"Built {report.output}: {report.layers} layers, {report.units} units, {report.pages} pages "
          f"in {report.seconds:.1f}s ({stages}). Feature visualisations: {report.pictures_made} made, "
          f"{report.pictures_reused} from the cache. Open {report.output}/index.html")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
