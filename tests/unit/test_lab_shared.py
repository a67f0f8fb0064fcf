"""The registry of machine resources that labs share: who uses what, and who removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdgpu_reconcile.lab import idmap, shared
from lxdgpu_reconcile.lab.faults import LabError

ENO1 = shared.veth("eno1", "lxp-1")
UID = shared.subid_line(Path("/etc/subuid"), "root:2901:1")
ONE, TWO = "/var/tmp/lab-one", "/var/tmp/lab-two"


def everyone(_: str) -> bool:
    return True


def test_the_last_user_removes_a_resource_the_first_keeps_it_for_the_other() -> None:
    registry = shared.Registry()
    registry.claim(ENO1, ONE)
    registry.claim(ENO1, TWO)
    registry.claim(UID, ONE)

    first = registry.release(ONE, alive=everyone)

    assert first.remove == (UID,)
    assert first.keep == ((ENO1, (TWO,)),)
    second = registry.release(TWO, alive=everyone)
    assert second == shared.Release(remove=(ENO1,), keep=())
    assert registry.entries == {}


def test_claiming_twice_counts_the_lab_once_and_keeps_the_first_record() -> None:
    registry = shared.Registry()
    registry.claim(ENO1, ONE)
    registry.claim(shared.veth("eno1", "other-peer"), ONE)

    assert registry.entries[ENO1.key].users == (ONE,)
    assert registry.get(shared.veth_key("eno1")) == ENO1


def test_a_lab_whose_record_is_gone_no_longer_counts() -> None:
    registry = shared.Registry()
    registry.claim(ENO1, ONE)
    registry.claim(ENO1, TWO)
    registry.claim(UID, TWO)

    release = registry.release(ONE, alive=lambda lab: lab != TWO)

    assert set(release.remove) == {ENO1, UID}
    assert release.keep == ()


def test_releasing_a_lab_that_used_nothing_removes_only_orphans() -> None:
    registry = shared.Registry()
    registry.claim(ENO1, TWO)
    registry.claim(UID, ONE)

    release = registry.release("/var/tmp/lab-three", alive=lambda lab: lab == TWO)

    assert release == shared.Release(remove=(UID,), keep=())
    assert registry.entries[ENO1.key].users == (TWO,)


def test_resources_of_one_kind_and_file() -> None:
    registry = shared.Registry()
    gid = shared.subid_line(Path("/etc/subgid"), "root:2901:1")
    for resource in (ENO1, UID, gid):
        registry.claim(resource, ONE)

    assert registry.of_kind("subid", Path("/etc/subuid")) == [UID]
    assert registry.of_kind("veth") == [ENO1]
    assert UID.key != gid.key


def test_a_lab_is_alive_while_its_record_exists(tmp_path: Path) -> None:
    assert not shared.lab_alive(str(tmp_path))
    (tmp_path / "lab.json").write_text("{}")
    assert shared.lab_alive(str(tmp_path))


def test_the_registry_is_written_back_and_vanishes_when_empty(tmp_path: Path) -> None:
    with shared.open_registry(tmp_path) as registry:
        registry.claim(ENO1, ONE)
    with shared.open_registry(tmp_path) as registry:
        assert registry.entries[ENO1.key].users == (ONE,)
        registry.release(ONE, alive=everyone)
    assert not (tmp_path / shared.REGISTRY_FILE).exists()


def test_a_claim_made_before_a_failure_is_kept(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), shared.open_registry(tmp_path) as registry:
        registry.claim(ENO1, ONE)
        raise RuntimeError("ip link failed")
    with shared.open_registry(tmp_path) as registry:
        assert registry.get(ENO1.key) == ENO1


def test_an_unreadable_registry_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / shared.REGISTRY_FILE).write_text("{not json")
    with pytest.raises(LabError, match="remove the file by hand"), shared.open_registry(tmp_path):
        pass


@pytest.mark.parametrize(
    ("line", "ids", "serves"),
    [
        ("root:2901:1", [2901], True),
        ("root:2901:1", [2902], False),
        (idmap.BASE_LINE, [], True),
        ("root:1000:1000", [1999], True),
        ("root:1000:1000", [2000], False),
    ],
)
def test_a_delegation_serves_a_lab_that_maps_its_ids_or_needs_a_base_range(
    line: str, ids: list[int], serves: bool
) -> None:
    assert idmap.serves(line, ids) is serves
