"""Checks only read (issue 9, item 1): two guards for the ``odbc`` and ``sql`` kinds.

1. ``refusal`` is a conservative look at the statement before it is sent: it must start (after
   comments and parentheses) with a query keyword and hold one statement. It errs on the side of
   refusing; it cannot see what a query does (``WITH x AS (DELETE ...)``), so
2. every connection is also read-only on the server (PostgreSQL and MariaDB read-only
   transactions, SQLite ``query_only`` / ``mode=ro``), never in autocommit, and rolled back after
   every count. MariaDB commits DDL even in a read-only transaction: there the keyword check is the
   guard, which is why it refuses anything it cannot read plainly.
"""

from __future__ import annotations

import re

QUERY_WORDS = ("SELECT", "WITH", "VALUES", "TABLE")

_LEADING = re.compile(r"\s+|--[^\n]*(?:\n|$)|\(")
_WORD = re.compile(r"[A-Za-z_]+")
# MySQL/MariaDB run the body of /*! ... */ and /*M! ... */ "comments".
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!")
# SELECT ... INTO creates a table (PostgreSQL) or writes a server file (MariaDB INTO OUTFILE).
_INTO = re.compile(r"(?i)\binto\b")


class NotAQuery(Exception):
    """The statement was refused before it was sent; the message says why."""


def refusal(statement: str) -> str | None:
    """Why ``statement`` is not accepted as a read-only counting query, or None when it is."""
    if _EXECUTABLE_COMMENT.search(statement):
        return "it holds a MySQL executable comment (/*! ... */); a check only reads"
    body = _skip_leading(statement)
    if body is None:
        return "it has an unterminated /* comment"
    word = _WORD.match(body)
    first = word.group(0).upper() if word else body[:1]
    if first not in QUERY_WORDS:
        shown = first or "nothing"
        return f"{shown} is not a query; a check only reads (it must start with {', '.join(QUERY_WORDS)})"
    # Any ';' before the end may start a second statement; one inside a string literal is refused
    # too, because telling them apart depends on each server's quoting rules.
    if ";" in body.rstrip().rstrip(";"):
        return "it holds more than one statement (';'); a check runs exactly one query"
    if _INTO.search(body):
        return "SELECT ... INTO writes; a check only reads"
    return None


def _skip_leading(text: str) -> str | None:
    """The statement after its leading whitespace, comments and parentheses."""
    position = 0
    while position < len(text):
        if text.startswith("/*", position):
            end = text.find("*/", position + 2)
            if end < 0:
                return None
            position = end + 2
            continue
        match = _LEADING.match(text, position)
        if match is None:
            break
        position = match.end()
    return text[position:]
