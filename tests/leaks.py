"""Looking for a password in everything a user or a log could see of an error."""

from __future__ import annotations

import traceback

PASSWORD = "S3cr3t-pw%zz"  # "%zz" is a bad percent-escape in a URI
SPELLINGS = (PASSWORD, "S3cr3t")  # "S3cr3t" alone catches a partly quoted or decoded password


def everything_shown(exc: BaseException) -> str:
    """All a user or a log could see of ``exc``: each link of its chain, and its traceback."""
    seen, texts, todo = set(), [], [exc]
    while todo:
        link = todo.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        texts += [str(link), repr(link), repr(link.args)]
        todo += [link.__cause__, link.__context__]
    texts.append("".join(traceback.format_exception(exc)))
    return "\n".join(texts)


def assert_no_password(text: str) -> None:
    for spelling in SPELLINGS:
        assert spelling not in text, f"{spelling!r} shows in:\n{text}"
