"""Reading the YAML files a user writes (search spaces, exported configs), strictly.

A key written twice is an error (PyYAML silently keeps the last), text must be UTF-8 (a
UTF-8 byte-order mark is fine), and every problem is a ValueError of one short line that the
caller prefixes with the file's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adamtune.errors import one_line, shown


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with the same key twice. Merge keys (``<<:
    *base``) work as YAML defines them: the keys written beside one override the merged ones,
    so only the keys written in the mapping itself count as given twice."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: PyYAML explains it below
                break
            if duplicate:
                raise ValueError(
                    f"line {key_node.start_mark.line + 1}: key {shown(key)} is given twice"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path) -> str:
    """The file's text; raises ValueError (unreadable, not UTF-8) in one line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"must be UTF-8 text, got byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


def parse(text: str) -> Any:
    """The YAML document in ``text``; raises ValueError naming the line and the problem."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ValueError(f"{where}invalid YAML: {one_line(str(problem), 200)}") from None
    except RecursionError:
        raise ValueError("invalid YAML: nested too deeply") from None
