"""Firmware version numbers and their order: the one place that says whether a terminal's
version is older than a release, or inside a target's range.

The order, SemVer's where SemVer speaks, and plain where it does not:

- ``MAJOR[.MINOR[.PATCH[...]]]``: dotted numeric parts compare as numbers, so
  ``2.4.1 < 2.10.0``; any number of parts, missing parts count as zero
  (``2.0 == 2.0.0``), because the TC-200 fleet reports both forms.
- ``-PRE`` (e.g. ``-rc1``, ``-beta.2``) sorts before the release it precedes:
  ``2.10.0-rc1 < 2.10.0``. Its dotted identifiers compare one by one, a shorter list
  first when one is a prefix of the other; inside an identifier, runs of digits compare
  as numbers and runs of letters case-insensitively, so ``rc2 < rc10`` (SemVer would
  put ``rc10`` first) and a number sorts before letters (``1 < alpha``).
- ``+BUILD`` is allowed and ignored by the order (SemVer's rule): ``2.4.1+b7 == 2.4.1``.

Anything else (``v2.4``, ``2.4_hotfix``, ``""``) does not parse: ``parse_version``
returns None, and the rollout rules never guess where such a terminal stands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rollouts.errors import VersionError

_VERSION = re.compile(
    r"(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:-(?P<pre>[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*))?"
    r"(?:\+[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*)?"
)
_CHUNK = re.compile(r"[0-9]+|[A-Za-z]+")
MAX_LENGTH = 64  # the firmware table's version column

# One run inside a pre-release identifier: (0, number, "") for digits, (1, 0, text)
# for letters, so that numbers sort before letters and each kind by its own rule.
_Chunk = tuple[int, int, str]
_Identifier = tuple[_Chunk, ...]


@dataclass(frozen=True, order=True)
class FirmwareVersion:
    """A parsed version; compares by the order in the module docstring, prints as given."""

    release: tuple[int, ...]  # trailing zeros dropped: 2.0.0 and 2 are equal
    is_final: int  # 0 for a pre-release, 1 for the release: a pre-release sorts first
    pre: tuple[_Identifier, ...]
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text


def parse_version(text: str) -> FirmwareVersion | None:
    """The version ``text`` names, or None when it is not one (see the module docstring)."""
    text = text.strip()
    match = _VERSION.fullmatch(text) if len(text) <= MAX_LENGTH else None
    if match is None:
        return None
    release = tuple(int(part) for part in match["release"].split("."))
    while release and release[-1] == 0:
        release = release[:-1]
    pre_text = match["pre"]
    pre = tuple(_identifier(part) for part in pre_text.split(".")) if pre_text else ()
    return FirmwareVersion(release=release, is_final=0 if pre else 1, pre=pre, text=text)


def require_version(text: str, what: str) -> FirmwareVersion:
    """``parse_version`` for a value a person typed: an error naming ``what`` if it fails."""
    version = parse_version(text)
    if version is None:
        raise VersionError(
            f"{what} {text!r} is not a version: use numbers separated by dots, "
            "optionally followed by a pre-release such as -rc1 (e.g. 2.10.0 or 2.10.0-rc1)"
        )
    return version


def _identifier(part: str) -> _Identifier:
    return tuple(
        (0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk.lower())
        for chunk in _CHUNK.findall(part)
    )
