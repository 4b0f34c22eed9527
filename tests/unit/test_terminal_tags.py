"""Terminal tags as pure rules: what a tag is, a typed list, an edit, and the terminal
list's and the API's tag filter (a malformed tag narrows to nothing, never widens)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict

from console.api import ApiInputError, TerminalQuery
from console.terminals import ListQuery
from registry.terminal_tags import TagError, check_tags, edited_tags, is_tag, parse_tags


@pytest.mark.parametrize("tag", ["pilot", "region:north", "v2.4_rc-1", "A", "x" * 64, "Pilot"])
def test_good_tags(tag: str) -> None:
    assert is_tag(tag)


@pytest.mark.parametrize("tag", ["", "x" * 65, "two words", "ümlaut", "a/b", "a,b", "tab\there"])
def test_bad_tags(tag: str) -> None:
    assert not is_tag(tag)


def test_a_typed_list_is_split_trimmed_sorted_and_kept_once() -> None:
    assert parse_tags(" pilot, region:north ,, pilot ,Berlin") == (
        "Berlin",
        "pilot",
        "region:north",
    )
    assert parse_tags("") == () and parse_tags(" , ") == ()


def test_a_bad_list_says_which_tags_and_the_rule() -> None:
    with pytest.raises(TagError, match=r"'two words' is not a tag: a tag is 1 to 64 letters"):
        parse_tags("pilot, two words")
    with pytest.raises(TagError, match=r"'a/b', 'c d' are not tags"):
        parse_tags("a/b, c d")
    with pytest.raises(TagError, match="at most 20 tags, not 21"):
        check_tags(f"t{n}" for n in range(21))
    assert len(check_tags(f"t{n}" for n in range(20))) == 20


def test_an_edit_adds_and_removes_and_checks_only_what_is_new() -> None:
    assert edited_tags(["b", "a"], add=["c"], remove=["a", "absent"]) == ("b", "c")
    assert edited_tags(["b"], replace=["z", "y"]) == ("y", "z")
    assert edited_tags(["b"], replace=[]) == ()
    # An old tag that breaks today's rule can still be taken off, and is kept otherwise.
    assert edited_tags(["bad tag", "ok"], remove=["bad tag"]) == ("ok",)
    assert edited_tags(["bad tag"], add=["ok"]) == ("bad tag", "ok")
    with pytest.raises(TagError):
        edited_tags([], add=["bad tag"])
    with pytest.raises(TagError, match="at most 20 tags, not 21"):
        edited_tags([f"t{n}" for n in range(20)], add=["one-more"])


def test_the_lists_tag_filter_keeps_every_tag_asked_for() -> None:
    query = ListQuery.parse(MultiDict([("tag", "pilot, north"), ("tag", "pilot"), ("tag", "")]))
    assert query.tags == ("pilot", "north") and query.filter.tags == ("pilot", "north")
    assert query.args()["tag"] == "pilot,north"
    assert "tagged pilot, north" in query.filter.describe()
    assert query.filter.to_json()["tags"] == ["pilot", "north"]
    # Malformed or too long: kept (it matches nothing), cut only to stay malformed.
    odd = ListQuery.parse(MultiDict([("tag", "two words,y" + "x" * 500)]))
    assert odd.tags[0] == "two words" and len(odd.tags[1]) == 65 and not is_tag(odd.tags[1])
    many = ListQuery.parse(MultiDict([("tag", ",".join(f"t{n}" for n in range(40)))]))
    assert len(many.tags) == 21  # past what a terminal may carry: matches nothing either way


def test_the_apis_tag_filter_refuses_a_bad_tag() -> None:
    query = TerminalQuery.parse(MultiDict([("tag", "pilot,north")]))
    assert query.filter.tags == ("north", "pilot")
    with pytest.raises(ApiInputError, match="tag: 'no good' is not a tag"):
        TerminalQuery.parse(MultiDict([("tag", "no good")]))
