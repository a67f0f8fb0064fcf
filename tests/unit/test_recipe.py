"""The recipe hash and the pure decisions around template images (no LXD involved)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.models import Fleet, ImageServer, Template, TemplateFile
from lxdgpu_reconcile.state import ImageObs
from lxdgpu_reconcile.templates import recipe
from lxdgpu_reconcile.templates.sources import TemplateFileError, template_files

BASE_FP = "a" * 64
SERVERS = {"images": ImageServer(url="https://images.example.net/")}


def template(**changes: object) -> Template:
    fields: dict[str, object] = {
        "alias": "tpl-desk",
        "base": "images:ubuntu/22.04",
        "build_host": "server01",
        "steps": ("apt-get update", "apt-get install -y build-essential"),
        "files": (TemplateFile(path="/etc/motd", content="hello\n", mode="0644"),),
    }
    fields.update(changes)
    return Template.model_validate(fields)


def hash_of(tpl: Template, base: str = BASE_FP) -> str:
    return recipe.recipe_hash(tpl, base, file_contents=recipe.inline_contents(tpl))


def image(fp: str, *aliases: str, **properties: str) -> ImageObs:
    return ImageObs(fingerprint=fp, aliases=aliases, properties=properties)


# --- the hash ---------------------------------------------------------------------------------


def test_hash_is_sha256_and_stable() -> None:
    first = hash_of(template())
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first)
    assert hash_of(template()) == first


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"steps": ("apt-get update",)}, id="step-removed"),
        pytest.param(
            {"steps": ("apt-get install -y build-essential", "apt-get update")},
            id="steps-reordered",
        ),
        pytest.param({"steps": ("apt-get update", "apt-get install -y gcc")}, id="step-changed"),
        pytest.param(
            {"files": (TemplateFile(path="/etc/motd", content="bye\n"),)}, id="file-content"
        ),
        pytest.param(
            {"files": (TemplateFile(path="/etc/motd", content="hello\n", mode="0600"),)},
            id="file-mode",
        ),
        pytest.param(
            {"files": (TemplateFile(path="/etc/issue", content="hello\n"),)}, id="file-path"
        ),
        pytest.param({"files": ()}, id="file-removed"),
    ],
)
def test_hash_changes_with_the_recipe(changes: dict[str, object]) -> None:
    assert hash_of(template(**changes)) != hash_of(template())


def test_hash_changes_with_the_base() -> None:
    assert hash_of(template(), "b" * 64) != hash_of(template())


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"alias": "other"}, id="alias"),
        pytest.param({"build_host": "server02"}, id="build-host"),
        pytest.param({"hosts": ("server02",)}, id="hosts"),
        pytest.param({"description": "a desktop"}, id="description"),
        pytest.param({"base": "images:debian/12"}, id="base-text-with-same-fingerprint"),
    ],
)
def test_hash_ignores_what_is_not_the_recipe(changes: dict[str, object]) -> None:
    assert hash_of(template(**changes)) == hash_of(template())


def test_equivalent_modes_hash_the_same() -> None:
    a = template(files=(TemplateFile(path="/x", content="x", mode="644"),))
    b = template(files=(TemplateFile(path="/x", content="x", mode="0644"),))
    assert hash_of(a) == hash_of(b)


def test_a_source_file_is_hashed_by_its_content() -> None:
    tpl = template(files=(TemplateFile(path="/opt/run.sh", source="run.sh", mode="0755"),))
    one = recipe.recipe_hash(tpl, BASE_FP, file_contents={"/opt/run.sh": b"echo 1\n"})
    two = recipe.recipe_hash(tpl, BASE_FP, file_contents={"/opt/run.sh": b"echo 2\n"})
    assert one != two


def test_missing_file_content_is_an_error() -> None:
    tpl = template(files=(TemplateFile(path="/opt/run.sh", source="run.sh"),))
    with pytest.raises(ValueError, match=re.escape("/opt/run.sh")):
        recipe.recipe_hash(tpl, BASE_FP, file_contents={})


def test_recipe_document_lists_what_is_hashed() -> None:
    doc = recipe.recipe_document(template(), BASE_FP, file_contents={"/etc/motd": b"hello\n"})
    assert doc == {
        "version": recipe.RECIPE_VERSION,
        "base": BASE_FP,
        "steps": ["apt-get update", "apt-get install -y build-essential"],
        "files": [
            {
                "path": "/etc/motd",
                "mode": "0644",
                "sha256": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
            }
        ],
    }


# --- the base ---------------------------------------------------------------------------------


def test_server_base_is_keyed_by_the_local_alias_when_the_build_host_has_it() -> None:
    base = recipe.parse_base(template(), SERVERS)
    assert base == recipe.Base(
        alias="ubuntu/22.04",
        server="images",
        url="https://images.example.net/",
        protocol="simplestreams",
    )
    images = [image(BASE_FP, "ubuntu/22.04")]
    assert recipe.base_key(base, images) == BASE_FP
    assert recipe.base_source(base, images) == {"type": "image", "fingerprint": BASE_FP}


def test_server_base_is_keyed_by_server_and_alias_otherwise() -> None:
    base = recipe.parse_base(template(), SERVERS)
    assert recipe.base_key(base, []) == "server https://images.example.net/ alias ubuntu/22.04"
    assert recipe.base_source(base, []) == {
        "type": "image",
        "mode": "pull",
        "server": "https://images.example.net/",
        "protocol": "simplestreams",
        "alias": "ubuntu/22.04",
    }


def test_local_base_needs_the_alias_on_the_build_host() -> None:
    base = recipe.parse_base(template(base="busybox"), SERVERS)
    assert base == recipe.Base(alias="busybox")
    assert recipe.base_key(base, []) is None
    assert recipe.base_source(base, []) is None
    assert recipe.base_key(base, [image(BASE_FP, "busybox")]) == BASE_FP


# --- names, modes, properties -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("desk", "lxdgpu-build-desk-0a1b2c"),
        ("Ubuntu_22.04 Desktop", "lxdgpu-build-ubuntu-22-04-desktop-0a1b2c"),
        ("__", "lxdgpu-build-template-0a1b2c"),
        ("x" * 63, "lxdgpu-build-" + "x" * 43 + "-0a1b2c"),
        ("a-" * 30, "lxdgpu-build-" + ("a-" * 22)[:43] + "-0a1b2c"),
    ],
)
def test_build_container_names_are_valid_lxd_names(name: str, expected: str) -> None:
    built = recipe.build_container_name(name, "0a1b2c")
    assert built == expected
    assert len(built) <= 63
    assert re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", built)
    assert "--" not in built


@pytest.mark.parametrize(
    ("mode", "header"), [("0644", "0644"), ("644", "0644"), ("4755", "04755"), ("0600", "0600")]
)
def test_modes_are_sent_as_octal(mode: str, header: str) -> None:
    assert recipe.lxd_mode(mode) == header


def test_build_container_tags_mark_it_as_a_build() -> None:
    config = recipe.build_container_config("desk")
    assert config == {
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.role": "build",
        "user.lxdgpu.template": "desk",
    }
    assert recipe.is_build_container(config)
    assert not recipe.is_build_container({"user.lxdgpu.managed": "true"})


def test_image_properties() -> None:
    props = recipe.image_properties(
        "desk", template(), recipe_hash="sha256:1", base_fingerprint=BASE_FP
    )
    assert props == {
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.template": "desk",
        "user.lxdgpu.recipe-hash": "sha256:1",
        "user.lxdgpu.base-fingerprint": BASE_FP,
        "description": "template desk (lxdgpu-reconcile)",
    }
    assert recipe.previous_alias("tpl-desk") == "tpl-desk-previous"


# --- what is current ----------------------------------------------------------------------------


def test_build_reasons() -> None:
    built = image("f1", "tpl-desk", **{recipe.PROP_RECIPE_HASH: "sha256:aaaaaaaaaaaaaaaa"})
    foreign = image("f2", "tpl-desk")
    assert recipe.build_reason("tpl-desk", None, "sha256:b") == (
        "alias tpl-desk does not exist on the build host"
    )
    assert "no recipe hash" in (recipe.build_reason("tpl-desk", foreign, "sha256:b") or "")
    assert recipe.build_reason("tpl-desk", built, "sha256:bbbbbbbbbbbbbbbb") == (
        "recipe changed (aaaaaaaaaaaa -> bbbbbbbbbbbb)"
    )
    assert recipe.build_reason("tpl-desk", built, "sha256:aaaaaaaaaaaaaaaa") is None
    assert recipe.is_current(built, "sha256:aaaaaaaaaaaaaaaa")
    assert not recipe.is_current(foreign, "sha256:aaaaaaaaaaaaaaaa")
    assert not recipe.is_current(None, "sha256:aaaaaaaaaaaaaaaa")


def test_an_older_image_with_the_recipe_is_found() -> None:
    tagged = {"user.lxdgpu.managed": "true", "user.lxdgpu.template": "desk"}
    older = image("f1", "tpl-desk-previous", **tagged, **{recipe.PROP_RECIPE_HASH: "sha256:1"})
    other = image(
        "f2", **{**tagged, "user.lxdgpu.template": "other"}, **{recipe.PROP_RECIPE_HASH: "sha256:1"}
    )
    assert recipe.image_with_recipe([other, older], "desk", "sha256:1") == older
    assert recipe.image_with_recipe([other, older], "desk", "sha256:2") is None


def test_distribution_hosts() -> None:
    fleet = Fleet.model_validate(
        {
            "version": 1,
            "hosts": {h: {"endpoint": "unix:///x"} for h in ("s1", "s2", "s3")},
            "templates": {
                "desk": {"alias": "d", "base": "busybox", "build_host": "s1"},
                "pinned": {
                    "alias": "p",
                    "base": "busybox",
                    "build_host": "s1",
                    "hosts": ["s3", "s1"],
                },
            },
            "users": {
                "tom": {"host": "s2", "template": "desk", "uid": 1001, "gid": 1001},
                "ann": {"host": "s1", "template": "desk", "uid": 1002, "gid": 1002},
                "bob": {"host": "s2", "template": "desk", "uid": 1003, "gid": 1003},
            },
        }
    )
    assert recipe.distribution_hosts(fleet, "desk") == ("s2", "s1")
    assert recipe.copy_targets(fleet, "desk") == ("s2",)
    assert recipe.distribution_hosts(fleet, "pinned") == ("s3", "s1")
    assert recipe.copy_targets(fleet, "pinned") == ("s3",)


# --- reading the files --------------------------------------------------------------------------


def test_template_files_reads_sources_relative_to_the_fleet(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    tpl = template(
        files=(
            TemplateFile(path="/etc/motd", content="hello\n"),
            TemplateFile(path="/opt/run.sh", source="run.sh", mode="0755"),
        )
    )
    assert template_files(tpl, tmp_path) == {
        "/etc/motd": b"hello\n",
        "/opt/run.sh": b"#!/bin/sh\necho hi\n",
    }


def test_template_files_says_which_file_is_missing(tmp_path: Path) -> None:
    tpl = template(files=(TemplateFile(path="/opt/run.sh", source="gone.sh"),))
    with pytest.raises(TemplateFileError) as caught:
        template_files(tpl, tmp_path)
    assert "/opt/run.sh" in caught.value.message
    assert str(tmp_path / "gone.sh") in caught.value.message
