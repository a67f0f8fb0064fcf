"""Hostile fleet files: YAML bombs and deep nesting are refused quickly, with little memory and
no RecursionError; template sources that leave the fleet file's folder are refused by validate
and again when the files are read."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.loading import load_fleet, load_text
from lxdgpu_reconcile.fleet.models import Template
from lxdgpu_reconcile.templates.sources import TemplateFileError, template_files

#: The classic billion laughs: 10^9 strings from a few hundred bytes.
BILLION_LAUGHS = "version: 1\n" + "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else ','.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _bounded(text: str) -> tuple[list[str], float, int]:
    """The errors of ``text``, the seconds and the peak bytes it took to find them."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = load_text(text)
        seconds = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return [str(p) for p in result.errors], seconds, peak


def test_billion_laughs_is_refused_quickly_with_little_memory() -> None:
    assert len(BILLION_LAUGHS) < 500
    errors, _, peak = _bounded(BILLION_LAUGHS)
    assert errors == [
        "fleet.yaml:7:1: f: aliases expand to more than 100000 values (a YAML bomb?): write the "
        "values out, or use fewer nested aliases"
    ]
    # Memory, not time, is what a bomb exhausts; speed is measured in benchmarks/.
    assert peak < 100 * 2**20


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", "fleet.yaml:2:67: (top level)"),
        ("version: 1\nx: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n", "fleet.yaml:2:"),
        ("version: 1\nx: &a [*a]\n", "fleet.yaml:2:4: x"),
        ("version: 1\nx: &a {<<: *a}\n", "fleet.yaml:2:4: x"),
    ],
    ids=["deep-sequences", "deep-mappings", "recursive-alias", "recursive-merge"],
)
def test_deep_nesting_is_a_problem_with_its_line_not_a_recursion_error(
    text: str, where: str
) -> None:
    errors, _, _ = _bounded(text)
    assert len(errors) == 1 and errors[0].startswith(where)
    assert "nested more than 64 levels deep (or an alias contains itself)" in errors[0]


def test_a_few_hundred_aliased_values_are_fine() -> None:
    users = "".join(
        f"  u{i}: {{<<: *user, uid: {2000 + i}, gid: {2000 + i}}}\n" for i in range(300)
    )
    text = (
        "version: 1\nhosts:\n  h1: {endpoint: 'unix:///var/lib/lxd/unix.socket'}\n"
        "templates:\n  desk: {alias: tpl-desk, base: tpl-base, build_host: h1}\n"
        "x-user: &user {host: h1, template: desk, cuda: []}\n"
    )
    result = load_text(text + "users:\n" + users)
    assert [p.path for p in result.errors] == ["x-user"]  # only the unknown top-level key


# --- template sources -------------------------------------------------------------------------

SOURCE_FLEET = """\
version: 1
hosts:
  server01: {{endpoint: "unix:///var/lib/lxd/unix.socket"}}
templates:
  desk:
    alias: tpl-desk
    base: tpl-base
    build_host: server01
    files:
      - {{path: /etc/motd, source: {source}}}
"""


def _fleet_with_source(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir(exist_ok=True)
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / "motd").write_text("hello\n")
    (tmp_path / "secret.key").write_text("PRIVATE\n")
    path = folder / "fleet.yaml"
    path.write_text(SOURCE_FLEET.format(source=source))
    return path


def _source_errors(path: Path) -> list[str]:
    return [f"{p.line} {p.path}: {p.message}" for p in load_fleet(path).errors]


def test_a_source_inside_the_folder_is_fine(tmp_path: Path) -> None:
    path = _fleet_with_source(tmp_path, "files/motd")
    result = load_fleet(path)
    assert result.errors == ()
    assert result.fleet is not None
    template = result.fleet.templates["desk"]
    assert template_files(template, path.parent) == {"/etc/motd": b"hello\n"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/etc/shadow", "is an absolute path"),
        ("../secret.key", "contains '..'"),
        ("files/../../secret.key", "contains '..'"),
        ("link.key", "resolves to"),
        ("files/missing", "does not exist"),
        ("files", "is not a regular file"),
    ],
)
def test_a_source_outside_the_folder_is_refused_by_validate_at_its_line(
    tmp_path: Path, source: str, message: str
) -> None:
    path = _fleet_with_source(tmp_path, source)
    os.symlink(tmp_path / "secret.key", path.parent / "link.key")
    (error,) = _source_errors(path)
    assert error.startswith("10 templates.desk.files[0].source: ")
    assert message in error


@pytest.mark.parametrize("source", ["/etc/shadow", "../secret.key", "link.key", "dir/key"])
def test_reading_a_source_outside_the_folder_is_refused(tmp_path: Path, source: str) -> None:
    folder = tmp_path / "repo"
    folder.mkdir()
    (tmp_path / "secret.key").write_text("PRIVATE\n")
    os.symlink(tmp_path / "secret.key", folder / "link.key")
    os.symlink(tmp_path, folder / "dir")  # a linked folder leads outside too
    template = Template.model_validate(
        {
            "alias": "tpl-desk",
            "base": "tpl-base",
            "build_host": "server01",
            "files": [{"path": "/etc/motd", "source": source}],
        }
    )
    with pytest.raises(TemplateFileError) as caught:
        template_files(template, folder)
    assert "outside the fleet file's folder" in caught.value.message
    assert "PRIVATE" not in caught.value.message + caught.value.hint
