"""Root's subuid/subgid delegations for the lab: which lines to add, and removing exactly them."""

from __future__ import annotations

from pathlib import Path

from lxdgpu_reconcile.lab import idmap

DEBIAN = "_lxd:100000:10000001\nroot:100000:10000001\n"


def test_ids_root_lacks_get_one_line_each() -> None:
    assert idmap.lines_to_add(DEBIAN, [1004, 1003, 1003]) == ("root:1003:1", "root:1004:1")


def test_ids_already_delegated_get_nothing() -> None:
    text = DEBIAN + "root:1000:1000\n"
    assert idmap.lines_to_add(text, [1003, 1999, 150000]) == ()


def test_only_roots_lines_count() -> None:
    text = "_lxd:1000:1000\nalice:1003:1\nroot:100000:65536\n"
    assert idmap.lines_to_add(text, [1003]) == ("root:1003:1",)


def test_a_base_range_is_added_when_root_has_none_large_enough() -> None:
    assert idmap.lines_to_add("root:1003:1\n", [1003, 1004]) == (
        idmap.BASE_LINE,
        "root:1004:1",
    )
    assert idmap.lines_to_add("", []) == (idmap.BASE_LINE,)


def test_malformed_lines_are_ignored() -> None:
    assert idmap.root_ranges("root:x:1\n# comment\nroot:5:\nroot:100000:65536\n") == [
        (100000, 65536)
    ]


def test_removal_takes_exactly_the_recorded_lines() -> None:
    text = DEBIAN + "root:1003:1\nalice:1003:1\nroot:1004:1\n"
    assert idmap.without_lines(text, ["root:1003:1", "root:1004:1", "root:9:1"]) == (
        DEBIAN + "alice:1003:1\n"
    )


def test_removal_of_a_duplicated_line_leaves_the_earlier_one() -> None:
    text = "root:1003:1\nroot:100000:65536\nroot:1003:1\n"
    assert idmap.without_lines(text, ["root:1003:1"]) == "root:1003:1\nroot:100000:65536\n"


def test_nothing_to_remove_leaves_the_text_as_it_was() -> None:
    assert idmap.without_lines("root:1:1", ["root:2:1"]) == "root:1:1"


def test_add_then_remove_round_trips_a_file(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text(DEBIAN.rstrip("\n"))
    added = idmap.add_lines(path, [1003, 1005])
    assert added == ("root:1003:1", "root:1005:1")
    assert path.read_text() == DEBIAN + "root:1003:1\nroot:1005:1\n"
    assert idmap.add_lines(path, [1003, 1005]) == ()
    idmap.remove_lines(path, added)
    assert path.read_text() == DEBIAN
