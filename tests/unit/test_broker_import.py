"""The CSV import check: every bad row reported with its line number, good files parsed."""

from __future__ import annotations

from registry.terminal_import import parse_terminal_csv


def test_good_file() -> None:
    parsed = parse_terminal_csv("Serial, Customer ,store\nTC-1,Acme,S1\n\nTC-2,Acme,\n")
    assert parsed.problems == ()
    assert [(r.line, r.serial, r.store) for r in parsed.rows] == [
        (2, "TC-1", "S1"),
        (4, "TC-2", None),
    ]


def test_every_bad_row_is_reported() -> None:
    parsed = parse_terminal_csv(
        "serial,customer,store\nTC-1,Acme,S1\nno/slash,Acme,\nTC-3,,\nTC-1,Acme,\nTC-5,Acme,S,extra\n"
    )
    assert [p.line for p in parsed.problems] == [3, 4, 5, 6]
    assert "already appears on line 2" in str(parsed.problems[2])


def test_bad_header_and_empty_file() -> None:
    assert "lacks column" in str(parse_terminal_csv("serial,shop\nTC-1,x\n").problems[0])
    assert "empty" in str(parse_terminal_csv("").problems[0])
    assert "no terminals" in str(parse_terminal_csv("serial,customer\n").problems[0])
