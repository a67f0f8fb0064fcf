"""The CI jobs, cron line and systemd units in docs/gitops.md and docs/reconcile.md work as
written: every lxdgpu-reconcile command in them parses with this version's options, every YAML
block is YAML, and the systemd units pass ``systemd-analyze verify`` where it is installed. The
pull-request jobs that plan from the cron job's snapshot use ``--state`` and no credential for the
servers, and say when the snapshot was taken."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from lxdgpu_reconcile.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "docs/gitops.md", REPO / "docs/reconcile.md")
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PROGRAM = re.compile(r"(?:^|(?<=[\s/]))lxdgpu-reconcile (?=\S)")
_OPERATORS = {";", "|", "||", "&&", ">", ">>", "<", "&", "(", ")"}


def blocks(kind: str) -> list[str]:
    return [text for doc in DOCS for lang, text in _BLOCK.findall(doc.read_text()) if lang == kind]


def commands() -> list[list[str]]:
    """Every ``lxdgpu-reconcile ...`` command line in the code blocks, as arguments."""
    found = []
    for lang in ("console", "yaml", "ini", "cron"):
        for text in blocks(lang):
            for line in text.replace("\\\n", " ").splitlines():
                if lang == "console" and not line.startswith(("$ ", "# ")):
                    continue
                for match in _PROGRAM.finditer(line):
                    lexer = shlex.shlex(line[match.end() :], posix=True, punctuation_chars=True)
                    lexer.whitespace_split = True
                    args = []
                    for token in lexer:
                        if token in _OPERATORS:
                            break
                        args.append(token)
                    found.append(args)
    return found


def _rest(ctx: Any) -> list[str]:
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def _parse(args: list[str]) -> None:
    """Parse ``args`` as the command line does (raises on an unknown command or option)."""
    command: Any = typer.main.get_command(app)
    try:
        ctx = command.make_context("lxdgpu-reconcile", list(args))
    except typer.Exit as done:  # an eager option (--version) answered
        assert done.exit_code == 0 and args == ["--version"]
        return
    rest = _rest(ctx)
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name or "", rest, parent=ctx)
        rest = _rest(ctx)
    assert not rest, f"left over: {rest}"


def test_the_docs_use_the_commands_this_page_is_about() -> None:
    used = {args[0] for args in commands()}
    assert {"plan", "apply", "validate", "reconcile"} <= used


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_every_command_in_the_docs_parses(args: list[str]) -> None:
    _parse(args)


def test_every_yaml_block_is_yaml() -> None:
    for text in blocks("yaml"):
        assert yaml.safe_load(text) is not None


def test_the_cron_line_has_five_times_a_user_and_a_command() -> None:
    (text,) = blocks("cron")
    (line,) = [line for line in text.splitlines() if line and not line.startswith("#")]
    fields = line.split(None, 6)
    assert fields[:6] == ["*/15", "*", "*", "*", "*", "root"]
    assert "%" not in fields[6]  # cron would turn it into a newline


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    service, timer = blocks("ini")
    tool = Path(sys.executable).parent / "lxdgpu-reconcile"
    if not tool.exists() or shutil.which("git") is None:
        pytest.skip("the units name lxdgpu-reconcile and git, which are not both here")
    service = service.replace("/opt/lxdgpu-reconcile/.venv/bin/lxdgpu-reconcile", str(tool))
    service = service.replace("/usr/bin/git", shutil.which("git") or "git")
    (tmp_path / "lxdgpu-reconcile.service").write_text(service)
    (tmp_path / "lxdgpu-reconcile.timer").write_text(timer)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "lxdgpu-reconcile.service"),
            str(tmp_path / "lxdgpu-reconcile.timer"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) not in done.stderr, done.stderr  # no warning about the units


# --- the CI jobs and the example fleet -----------------------------------------------------------


def _yaml_blocks() -> list[dict[str, Any]]:
    page = (REPO / "docs/gitops.md").read_text()
    return [yaml.safe_load(text) for lang, text in _BLOCK.findall(page) if lang == "yaml"]


def _ci() -> tuple[dict[str, Any], dict[str, Any]]:
    """The GitHub Actions workflow and the GitLab CI file of docs/gitops.md."""
    github, gitlab, _, _ = _yaml_blocks()
    return github, gitlab


def _snapshot_ci() -> tuple[dict[str, Any], dict[str, Any]]:
    """The pull-request jobs that plan from the cron job's snapshot: GitHub's workflow, GitLab's
    job."""
    _, _, github, gitlab = _yaml_blocks()
    return github, gitlab


def _shell(ci: dict[str, Any]) -> str:
    """Every shell line of a CI file: GitHub ``run:`` steps, GitLab scripts."""
    lines = []
    for job in (ci.get("jobs") or ci).values():
        if not isinstance(job, dict):
            continue
        lines += [step["run"] for step in job.get("steps", []) if "run" in step]
        for key in ("before_script", "script", "after_script"):
            lines += job.get(key, [])
    return "\n".join(lines)


def test_the_ci_jobs_write_the_certificate_files_the_example_fleet_reads() -> None:
    example = yaml.safe_load((REPO / "fleet.example.yaml").read_text())
    read = {
        host[key] for host in example["hosts"].values() for key in ("client_cert", "client_key")
    }
    for ci in _ci():
        shell = _shell(ci)
        written = set(re.findall(r"(?:>|cp \S+) (certs/\S+)", shell))
        removed = {path for line in re.findall(r"rm -f (.*)", shell) for path in line.split()}
        assert written == read, shell
        assert removed == read
    page = (REPO / "docs/gitops.md").read_text() + (REPO / "docs/reconcile.md").read_text()
    assert "certs/client." not in page


def test_the_ci_jobs_install_a_commit_of_this_repository_and_validate_without_the_key() -> None:
    for ci in _ci():
        requirement = ci["env" if "jobs" in ci else "variables"]["LXDGPU_RECONCILE"]
        assert requirement.startswith("git+https://") and requirement.endswith(".git@COMMIT")
        (validate,) = [line for line in _shell(ci).splitlines() if " validate " in line]
        assert "--skip-certs" in validate


def test_the_gitlab_apply_job_deploys_to_the_environment_the_docs_protect() -> None:
    _, gitlab = _ci()
    assert gitlab["apply"]["environment"] == {"name": "lxd-fleet"}
    assert "protect that environment" in (REPO / "docs/gitops.md").read_text()


def _apply_scripts() -> list[str]:
    github, gitlab = _ci()
    (step,) = [s for s in github["jobs"]["apply"]["steps"] if "lxdgpu-reconcile apply" in str(s)]
    (block,) = gitlab["apply"]["script"]
    return [step["run"], block]


#: Stands in for lxdgpu-reconcile: ``apply plan.json`` exits $APPLY_STATUS; ``plan --out F``
#: saves $NEW_PLAN as F's plan and prints a comment; every call is logged.
_STUB = """#!/bin/sh
echo "$*" >> calls.log
case "$1 $2" in
  "apply plan.json") exit "$APPLY_STATUS" ;;
  "apply plan-new.json") exit 0 ;;
  plan*) printf '{"kind": "saved", "plan": %s}' "$NEW_PLAN" > plan-new.json; echo "the new plan" ;;
esac
"""


@pytest.mark.parametrize(
    ("apply_status", "new_plan", "status", "calls"),
    [
        (0, "{}", 0, ["apply plan.json"]),
        (1, '{"actions": [1, 2]}', 0, ["apply plan.json", "plan", "apply plan-new.json"]),
        (1, '{"actions": [2]}', 1, ["apply plan.json", "plan"]),
        (4, '{"actions": [1, 2]}', 0, ["apply plan.json", "plan", "apply plan-new.json"]),
    ],
    ids=["applied", "stale-same-plan", "stale-new-plan", "locked-same-plan"],
)
def test_the_apply_job_applies_only_the_reviewed_plan(
    tmp_path: Path, apply_status: int, new_plan: str, status: int, calls: list[str]
) -> None:
    scripts = _apply_scripts()
    assert scripts[0] == scripts[1]  # GitHub and GitLab run the same recovery
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "lxdgpu-reconcile"
    stub.write_text(_STUB)
    stub.chmod(0o755)
    (tmp_path / "plan.json").write_text('{"kind": "saved", "plan": {"actions": [1, 2]}}')
    summary = tmp_path / "summary.md"
    done = subprocess.run(
        ["bash", "-e", "-c", scripts[0]],
        cwd=tmp_path,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "APPLY_STATUS": str(apply_status),
            "NEW_PLAN": new_plan,
            "GITHUB_STEP_SUMMARY": str(summary),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == status, done.stderr
    logged = (tmp_path / "calls.log").read_text().splitlines()
    assert [line if line.startswith("apply") else line.split()[0] for line in logged] == calls
    if status:
        assert "changed since it was reviewed" in done.stderr
        assert summary.read_text() == "the new plan\n"


# --- the pull-request jobs that plan from the cron job's snapshot --------------------------------


def test_the_snapshot_jobs_plan_from_the_snapshot_with_no_credential_for_the_servers() -> None:
    github, gitlab = _snapshot_ci()
    assert list(github[True]) == ["pull_request"]  # YAML 1.1 reads the key `on` as true
    (job,) = github["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"  # no self-hosted runner that reaches the hosts
    ((name, mr_job),) = gitlab.items()
    assert name == "plan-mr-snapshot" and mr_job["extends"] == ".tool" and "tags" not in mr_job
    assert mr_job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert mr_job["artifacts"]["paths"] == ["plan.md"]  # not the snapshot: its config is unmasked
    for ci in (github, gitlab):
        text = yaml.safe_dump(ci)
        assert "certs/" not in text and "LXD_CLIENT" not in text and "lxd-fleet]" not in text
        shell = _shell(ci)
        assert "--output snapshot.json" in shell
        (plan,) = [
            line for line in shell.splitlines() if line.lstrip().startswith("lxdgpu-reconcile ")
        ]
        args = shlex.split(plan.split("lxdgpu-reconcile ", 1)[1].split(">")[0])
        assert args == [
            "plan",
            "-f",
            "fleet.yaml",
            "--state",
            "snapshot.json",
            "--format",
            "markdown",
        ]
        _parse(args)


def _plan_scripts() -> list[str]:
    """The shell that plans and writes ``plan.md``: GitHub's step, GitLab's script lines between
    the fetch and the post."""
    github, gitlab = _snapshot_ci()
    (job,) = github["jobs"].values()
    (step,) = [s for s in job["steps"] if "--state" in s.get("run", "")]
    return [step["run"], "\n".join(gitlab["plan-mr-snapshot"]["script"][1:-2])]


_PLAN_STUB = """#!/bin/sh
echo "$*" >> calls.log
if [ "$PLAN_STATUS" != 1 ]; then printf '<!-- lxdgpu-reconcile plan -->\\nthe plan\\n'; fi
exit "$PLAN_STATUS"
"""


@pytest.mark.parametrize("which", [0, 1], ids=["github", "gitlab"])
@pytest.mark.parametrize(
    ("plan_status", "snapshot", "comment"),
    [
        (0, '{"taken_at": "2026-05-01T02:00:00+00:00"}', "the plan\n"),
        (2, '{"taken_at": "2026-05-01T02:00:00+00:00"}', "the plan\n"),
        (1, "not json", "No plan: see the job log.\n"),
    ],
    ids=["plan", "changes", "bad-snapshot"],
)
def test_the_snapshot_job_says_when_the_snapshot_was_taken(
    tmp_path: Path, which: int, plan_status: int, snapshot: str, comment: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "lxdgpu-reconcile"
    stub.write_text(_PLAN_STUB)
    stub.chmod(0o755)
    (tmp_path / "snapshot.json").write_text(snapshot)
    output = tmp_path / "output"
    done = subprocess.run(
        ["bash", "-e", "-c", _plan_scripts()[which]],
        cwd=tmp_path,
        env={
            "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "PLAN_STATUS": str(plan_status),
            "GITHUB_OUTPUT": str(output),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # the comment is posted; the status decides later
    calls = (tmp_path / "calls.log").read_text()
    assert calls == "plan -f fleet.yaml --state snapshot.json --format markdown\n"
    taken = "2026-05-01T02:00:00+00:00" if plan_status != 1 else "an unknown time"
    assert (tmp_path / "plan.md").read_text() == (
        f"<!-- lxdgpu-reconcile plan -->\n{comment}"
        f"\nPlanned against the snapshot taken at {taken}, not the live hosts.\n"
    )
    if which == 0:
        assert output.read_text() == f"status={plan_status}\n"
