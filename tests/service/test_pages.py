"""The page memo: reused only while every input is equal, bounded, first in first out."""

from __future__ import annotations

from service.pages import PageMemo

HISTORY = ("1", "2")
EMBEDDING = b"\x00" * 8


def test_a_page_comes_back_for_the_same_inputs() -> None:
    memo: PageMemo[list[str]] = PageMemo(4)
    memo.put("u", 10, HISTORY, EMBEDDING, ["a", "b"])
    assert memo.get("u", 10, HISTORY, EMBEDDING) == ["a", "b"]


def test_any_changed_input_misses() -> None:
    memo: PageMemo[list[str]] = PageMemo(4)
    memo.put("u", 10, HISTORY, EMBEDDING, ["a"])
    assert memo.get("u", 5, HISTORY, EMBEDDING) is None  # another k
    assert memo.get("v", 10, HISTORY, EMBEDDING) is None  # another user
    assert memo.get("u", 10, (*HISTORY, "3"), EMBEDDING) is None  # an event since
    assert memo.get("u", 10, HISTORY, b"\x01" * 8) is None  # re-encoded embedding


def test_the_oldest_page_makes_room() -> None:
    memo: PageMemo[str] = PageMemo(2)
    for user in ("a", "b", "c"):
        memo.put(user, 10, HISTORY, EMBEDDING, user)
    assert len(memo) == 2
    assert memo.get("a", 10, HISTORY, EMBEDDING) is None
    assert memo.get("c", 10, HISTORY, EMBEDDING) == "c"
    memo.put("b", 10, HISTORY, EMBEDDING, "b2")  # replacing keeps the size
    assert len(memo) == 2
    assert memo.get("b", 10, HISTORY, EMBEDDING) == "b2"


def test_capacity_zero_keeps_nothing() -> None:
    memo: PageMemo[str] = PageMemo(0)
    memo.put("a", 10, HISTORY, EMBEDDING, "a")
    assert memo.get("a", 10, HISTORY, EMBEDDING) is None
