"""Storage and tracking URLs as text: hide passwords, find what a URL points at.

Pure string work (no SQLAlchemy, no MLflow), so every message, log line and tracked parameter
can be redacted cheaply, and a URL that no parser accepts (a password with a raw ``@`` or
``/``) is still redacted rather than echoed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)(.*)$", re.DOTALL)
_SECRET_QUERY = re.compile(r"(?i)((?:password|passwd|pwd|token|secret)=)[^&]*")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: safe to print, log and track.

    The user information ends at the last ``@`` before the host, so a password holding raw
    ``@``, ``:`` or ``/`` characters is hidden whole.
    """
    match = _SCHEME.match(url)
    if not match:
        return url
    scheme, rest = match.groups()
    at = _userinfo_end(rest)
    if at >= 0:
        user, has_password, _ = rest[:at].partition(":")
        rest = f"{user}:***@{rest[at + 1 :]}" if has_password else rest
    return scheme + _SECRET_QUERY.sub(r"\1***", rest)


def secrets_of(url: str) -> list[str]:
    """The password of ``url`` (as written and percent-decoded), to scrub from any text."""
    match = _SCHEME.match(url)
    if not match:
        return []
    rest = match.group(2)
    at = _userinfo_end(rest)
    found = []
    if at >= 0:
        _, has_password, password = rest[:at].partition(":")
        if has_password and password:
            found += [password, unquote(password)]
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(rest)]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, urls: list[str]) -> str:
    """``text`` with the passwords of ``urls`` replaced by ``***``."""
    for url in urls:
        for secret in secrets_of(url):
            text = text.replace(secret, "***")
    return text


def secrets_in(urls: list[str]) -> list[str]:
    """Every password in ``urls``, longest first (so a secret holding another goes whole)."""
    found = {secret for url in urls if url for secret in secrets_of(url)}
    return sorted(found, key=len, reverse=True)


class ScrubbedStream:
    """A text stream that writes through ``stream`` with every secret in ``secrets`` (a list
    the owner may add to later) replaced by ``***``: whatever a library prints, a warning, a
    traceback or our own line, no password reaches the terminal or a log file."""

    def __init__(self, stream: Any, secrets: list[str]) -> None:
        self.stream = stream
        self.secrets = secrets

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click tells text from binary streams by this
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        for secret in self.secrets:
            text = text.replace(secret, "***")
        self.stream.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # bytes written there would bypass the scrubbing
            raise AttributeError(name)
        return getattr(self.stream, name)


def unencoded_userinfo(url: str) -> bool:
    """True when the user or password holds a raw ``@`` or ``/``: parsers then disagree on
    where the host starts (and may print part of the password as a host name)."""
    match = _SCHEME.match(url)
    if not match:
        return False
    rest = match.group(2)
    at = _userinfo_end(rest)
    return at >= 0 and ("@" in rest[:at] or "/" in rest[:at])


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the user information, or -1. The host part holds no
    ``@``, so it is the last one before the query string."""
    return rest.split("?", 1)[0].rfind("@")


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url.removeprefix("sqlite:///").split("?", 1)[0]
    if name.startswith("file:"):
        name = name.removeprefix("file:")
    if not name or name == ":memory:":
        return None
    return Path(name)


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:FILE`` storage URL."""
    return Path(url.removeprefix("journal:")) if url.startswith("journal:") else None
