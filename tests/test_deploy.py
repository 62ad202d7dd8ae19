"""Publishing: `python -m generator deploy` to local bare repositories, its errors, the
Makefile's deploy target and the GitHub Pages workflow. No atlas is built: a folder with
the mark file stands in for one."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from generator.__main__ import main
from generator.site import MARK

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def published(bare: Path, branch: str = "gh-pages") -> set[str]:
    return set(git(f"--git-dir={bare}", "ls-tree", "-r", branch, "--name-only").split())


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A clone with one commit, a bare `origin`, a fake atlas in `site/` and its config;
    the current folder is the clone."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    work, bare = tmp_path / "work", tmp_path / "origin.git"
    git("init", "--quiet", "--bare", str(bare))
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    git("config", "user.name", "Tester", cwd=work)
    git("config", "user.email", "tester@example.com", cwd=work)
    (work / "README.md").write_text("source\n")
    (work / ".gitignore").write_text("site/\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "source", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    site = work / "site"
    (site / "_internal").mkdir(parents=True)
    (site / "index.html").write_text("<h1>Atlas</h1>\n")
    (site / "_internal" / "data.json").write_text("{}\n")
    (site / MARK).write_text("Built by Weight Atlas\n")
    (work / "atlas.yml").write_text("title: T\nsite:\n  output: site\n")
    monkeypatch.chdir(work)
    return work, bare


def test_deploy_publishes_the_site_with_nojekyll_and_leaves_the_clone_alone(repo, capsys):
    work, bare = repo
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    assert main(["deploy", "atlas.yml"]) == 0
    assert {"index.html", "_internal/data.json", ".nojekyll"} <= published(bare)
    assert git(f"--git-dir={bare}", "log", "-1", "--format=%s", "gh-pages").strip() == "Publish Weight Atlas: T"
    assert git("symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == status
    assert sorted(p.name for p in work.iterdir()) == [".git", ".gitignore", "README.md", "atlas.yml", "site"]
    assert "Published site" in capsys.readouterr().out

    # A second publication follows the first, also from a clone that never published.
    (work / "site" / "index.html").write_text("<h1>Atlas 2</h1>\n")
    git("branch", "-D", "gh-pages")
    git("update-ref", "-d", "refs/remotes/origin/gh-pages")
    assert main(["deploy", "atlas.yml"]) == 0
    assert git(f"--git-dir={bare}", "rev-list", "--count", "gh-pages").strip() == "2"
    assert git(f"--git-dir={bare}", "show", "gh-pages:index.html") == "<h1>Atlas 2</h1>\n"


def test_deploy_to_another_remote_branch_and_folder(repo, tmp_path):
    work, bare = repo
    backup = tmp_path / "backup.git"
    git("init", "--quiet", "--bare", str(backup))
    git("remote", "add", "backup", str(backup))
    shutil.move(work / "site", tmp_path / "elsewhere")
    assert main(["deploy", "atlas.yml", "--remote", "backup", "--branch", "pages",
                 "--output", str(tmp_path / "elsewhere")]) == 0
    assert {"index.html", ".nojekyll"} <= published(backup, "pages")
    assert git(f"--git-dir={bare}", "branch", "--list") == ""


@pytest.mark.parametrize("case, expected", [
    ("no mark", "has no .weight-atlas file"),
    ("no folder", "There is no atlas at"),
    ("unknown remote", "no remote named 'nowhere' (its remotes: origin)"),
    ("current branch", "You are on the branch 'main'"),
    ("bad branch", "not a valid git branch name"),
    ("no repository", "not in a git repository"),
    ("push refused", "git could not push the branch 'gh-pages' to 'origin'"),
    ("git inside", "holds a .git of its own"),
])
def test_deploy_errors_name_the_problem(repo, case, expected, capsys):
    work, bare = repo
    args = ["deploy", "atlas.yml"]
    if case == "no mark":
        (work / "site" / MARK).unlink()
    elif case == "no folder":
        shutil.rmtree(work / "site")
    elif case == "unknown remote":
        args += ["--remote", "nowhere"]
    elif case == "current branch":
        args += ["--branch", "main"]
    elif case == "bad branch":
        args += ["--branch=-x"]  # would be an option to git
    elif case == "no repository":
        shutil.rmtree(work / ".git")
    elif case == "git inside":  # a gh-pages worktree kept in the site folder
        (work / "site" / ".git").mkdir()
        (work / "site" / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    elif case == "push refused":
        hook = bare / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'publishing is closed' >&2\nexit 1\n")
        hook.chmod(0o755)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    if case == "push refused":
        assert "publishing is closed" in err
    if (work / ".git").exists():
        assert git("symbolic-ref", "--short", "HEAD").strip() == "main"
    if case != "push refused":
        assert git(f"--git-dir={bare}", "branch", "--list") == ""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_deploy_passes_remote_and_branch():
    # -n prints the commands (the install's too, when it is due) without running any.
    printed = subprocess.run(["make", "-n", "-C", str(ROOT), "deploy", "REMOTE=backup", "BRANCH=pages"],
                             check=True, capture_output=True, text=True).stdout
    deploy = [line for line in printed.splitlines() if " -m generator deploy " in line]
    # one command: it checks the remote, builds the atlas, then publishes it
    assert len(deploy) == 1 and "--build --remote backup --branch pages" in deploy[0]


def test_pages_workflow():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "atlas.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"]["group"] == "pages"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = [step.get("uses", "") for step in build["steps"]]
    for action in ("actions/checkout@", "actions/setup-python@", "actions/cache@", "actions/configure-pages@",
                   "actions/upload-pages-artifact@"):
        assert any(u.startswith(action) for u in uses), action
    cache = next(step for step in build["steps"] if step.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == ".atlas-cache" and cache["with"]["restore-keys"]
    assert any("make atlas" in step.get("run", "") for step in build["steps"])
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")
