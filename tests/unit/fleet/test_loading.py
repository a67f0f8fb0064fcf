"""The loader: positions, text versions, every problem at once, certificate paths."""

from __future__ import annotations

from pathlib import Path

from lxdgpu_reconcile.fleet.loading import load_fleet, load_text

REPO = Path(__file__).resolve().parents[3]

MINIMAL = """\
version: 1
hosts:
  server01: {endpoint: "unix:///var/lib/lxd/unix.socket"}
cuda:
  "9.0": /usr/local/cuda-9.0
  10.0: /usr/local/cuda-10.0
  12.10: /usr/local/cuda-12.10
templates:
  desk: {alias: tpl-desk, base: tpl-base, build_host: server01}
users:
  tom:
    host: server01
    template: desk
    uid: 1003
    gid: 1003
    cuda: [10.0, "9.0", 12.10]
"""


def test_example_fleet_validates() -> None:
    result = load_fleet(REPO / "fleet.example.yaml")
    assert result.errors == ()
    assert result.fleet is not None
    assert sorted(result.fleet.users) == ["alice", "jerry", "tom"]
    assert set(result.fleet.cuda) == {"9.0", "10.0"}


def test_versions_are_the_text_typed() -> None:
    result = load_text(MINIMAL)
    assert result.ok, result.problems
    assert result.fleet is not None
    assert list(result.fleet.cuda) == ["9.0", "10.0", "12.10"]
    assert result.fleet.users["tom"].cuda == ("10.0", "9.0", "12.10")


def test_problem_points_at_line_and_column_of_the_value() -> None:
    text = MINIMAL.replace("uid: 1003", "uid: 12")
    (problem,) = load_text(text, name="f.yaml").errors
    assert (problem.line, problem.col, problem.path) == (14, 10, "users.tom.uid")
    assert str(problem).startswith("f.yaml:14:10: users.tom.uid: 12 is a system account id")


def test_unknown_key_points_at_the_key() -> None:
    text = MINIMAL.replace("    gid: 1003\n", "    gid: 1003\n    gpu: all\n")
    (problem,) = load_text(text).errors
    assert (problem.line, problem.col) == (16, 5)
    assert problem.message == "unknown key 'gpu': did you mean 'gpus'?"


def test_every_problem_is_reported_at_once_and_sorted() -> None:
    text = (
        MINIMAL.replace("uid: 1003", "uid: 5")
        .replace('{endpoint: "unix:///var/lib/lxd/unix.socket"}', "{endpoint: ftp://x}")
        .replace("  12.10:", "  12.10: relative/cuda\n  12.11:")
    ) + "  ann: {host: server01, template: lab, uid: 1004, gid: 1004, cpu: 0}\n"
    problems = load_text(text).errors
    assert [p.path for p in problems] == [
        "hosts.server01.endpoint",
        "cuda.12.10",
        "users.tom.uid",
        "users.ann.template",
        "users.ann.cpu",
    ]
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_merge_keys_and_anchors_are_supported() -> None:
    text = MINIMAL + (
        "  ann: &person\n    host: server01\n    template: desk\n    uid: 1004\n    gid: 1004\n"
        "  bob:\n    <<: *person\n    uid: 1005\n    gid: 1005\n"
    )
    result = load_text(text)
    assert result.ok, result.problems
    assert result.fleet is not None
    assert result.fleet.users["bob"].uid == 1005
    assert result.fleet.users["bob"].template == "desk"


def test_dates_stay_text() -> None:
    text = MINIMAL.replace("profiles: []", "") + "profiles:\n  p: {description: 2019-09-09}\n"
    result = load_text(text)
    assert result.ok, result.problems
    assert result.fleet is not None
    assert result.fleet.profiles["p"].description == "2019-09-09"


def test_true_and_numbers_in_lxd_config_become_lxd_strings() -> None:
    text = MINIMAL + "profiles:\n  p:\n    config: {boot.autostart: true, limits.cpu: 4}\n"
    result = load_text(text)
    assert result.ok, result.problems
    assert result.fleet is not None
    assert result.fleet.profiles["p"].config == {"boot.autostart": "true", "limits.cpu": "4"}


def test_relative_certificate_paths_become_absolute(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("admin.crt", "admin.key", "s1.crt"):
        (tmp_path / "certs" / name).write_text("x")
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "version: 1\nhosts:\n  s1:\n    endpoint: https://192.0.2.1:8443\n"
        "    client_cert: certs/admin.crt\n    client_key: certs/admin.key\n"
        "    server_cert: certs/s1.crt\n"
    )
    result = load_fleet(fleet_file)
    assert result.problems == ()
    assert result.fleet is not None
    assert result.fleet.hosts["s1"].server_cert == str(tmp_path / "certs" / "s1.crt")


def test_missing_certificate_files_are_errors_unless_the_lab_is_used(tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(
        "version: 1\nhosts:\n  s1:\n    endpoint: https://192.0.2.1:8443\n"
        "    client_cert: a.crt\n    client_key: a.key\n    server_cert: s1.crt\n"
    )
    result = load_fleet(fleet_file)
    assert result.problems == ()  # the fleet file itself is fine
    assert [(p.severity, p.line, p.path) for p in result.reported(certs=True)] == [
        ("error", 5, "hosts.s1.client_cert"),
        ("error", 6, "hosts.s1.client_key"),
        ("error", 7, "hosts.s1.server_cert"),
    ]
    assert "does not exist" in result.reported(certs=True)[0].message
    assert result.reported(certs=False) == ()


def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    result = load_fleet(tmp_path / "nope.yaml")
    (problem,) = result.errors
    assert "cannot read the fleet file" in problem.message


def test_allow_unsafe_lets_a_profile_be_privileged() -> None:
    text = MINIMAL + (
        "profiles:\n  p:\n    allow_unsafe: true\n    config: {security.privileged: 'true'}\n"
    )
    result = load_text(text)
    assert result.ok
    assert [p.severity for p in result.problems] == ["warning"]
