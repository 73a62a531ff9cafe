"""Display names: what a name may contain, and when two names look alike (one key per look).

A display name is shown beside every record of its key, so a stranger must not be able to register
one that passes for another volunteer's. The rules (docs/hub.md, "Display names"):

- it is NFC-normalised text (the client normalises before signing; the hub cannot change signed
  bytes, so it refuses instead), 1–64 characters, without leading, trailing or doubled spaces;
- it holds letters, marks, digits, punctuation, symbols and the ASCII space only (at least one
  letter or digit, and no combining mark first): no control,
  format (zero-width, bidi), private-use, unassigned or surrogate code points, no other spaces,
  and none of the invisible "letters" (Hangul fillers, the braille blank);
- it is written in one script (plus the script-neutral digits and punctuation), so ``аlice`` with a
  Cyrillic ``а`` is refused (:func:`confusable_homoglyphs.confusables.is_mixed_script`);
- it is unique by *look*: :func:`name_key` is a skeleton in the sense of Unicode TR39 (compatibility
  decomposition, every character mapped to one representative of its confusable class, case folded),
  built from the confusables data of `confusable_homoglyphs`_, and the hub keeps one key per skeleton.
  ``alice``, ``ALICE``, ``a1ice``, ``aIice`` and an all-Cyrillic ``аІісе`` share one (so do ``all``
  and ``aii``: erring towards "looks alike" costs a volunteer a name, never an impersonation).

.. _confusable_homoglyphs: https://pypi.org/project/confusable-homoglyphs/
"""

from __future__ import annotations

import functools
import string
import unicodedata

from confusable_homoglyphs import confusables

from autoresearch.protocol import sha256_hex

from .errors import Rejected

MAX_NAME_CHARS = 64
_ALLOWED_CATEGORIES = ("L", "M", "N", "P", "S")
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e")
"""Code points of allowed categories that render as nothing (Hangul fillers, braille blank, CGJ, …)."""
_DIRECTION_MARKS = str.maketrans("", "", "\u200e\u200f")  # the library wraps RTL homoglyphs in them


def check_display_name(name: str) -> None:
    """Refuse a display name that is not plain, single-script, NFC text.

    Raises:
        Rejected: ``bad_display_name``, naming the first offending character (as ``U+XXXX``).
    """

    def refuse(why: str) -> Rejected:
        return Rejected(f"display name {ascii(name)[:80]} {why}", code="bad_display_name")

    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise refuse(f"must have 1 to {MAX_NAME_CHARS} characters")
    if not unicodedata.is_normalized("NFC", name):
        raise refuse("is not NFC-normalised (normalise it before signing)")
    if name != name.strip(" ") or "  " in name:
        raise refuse("has leading, trailing or doubled spaces")
    for i, ch in enumerate(name):
        if ch == " ":
            continue
        if not unicodedata.category(ch).startswith(_ALLOWED_CATEGORIES) or ch in _INVISIBLE:
            raise refuse(f"holds U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')}) at {i}: letters, digits, "
                         "punctuation, symbols and single spaces only")
    if unicodedata.category(name[0]).startswith("M") or not any(unicodedata.category(ch)[0] in "LN" for ch in name):
        raise refuse("needs a letter or digit, and cannot start with a combining mark")
    if confusables.is_mixed_script(name, allowed_aliases=["COMMON", "INHERITED"]):
        raise refuse("mixes scripts (e.g. a Cyrillic letter among Latin ones)")


def name_key(name: str) -> str:
    """The uniqueness key of a display name: hex SHA-256 of its confusable skeleton (see the module
    docstring); two names with one key look alike."""
    key: str = sha256_hex(skeleton(name))
    return key


def skeleton(name: str) -> str:
    """TR39-style skeleton: NFKD, case-fold, then each character mapped to the representative of its
    class (confusables and case variants together, so ``I``, ``i``, ``l`` and ``1`` meet)."""
    table = _prototypes()
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", name).casefold())
    return "".join(table.get(ch, ch) for ch in folded)


@functools.cache
def _prototypes() -> dict[str, str]:
    """Character → representative of its confusable class: the classes are the connected components
    of the library's single-character homoglyph pairs joined with the ASCII case pairs; the
    representative is the lowest code point (so an ASCII character whenever the class has one)."""
    parent: dict[str, str] = {}

    def find(ch: str) -> str:
        root = ch
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(ch, ch) != root:  # path compression
            parent[ch], ch = root, parent[ch]
        return root

    for char, entries in confusables.confusables_data.items():
        char = char.translate(_DIRECTION_MARKS)
        if len(char) != 1:
            continue
        for entry in entries:
            other = entry["c"].translate(_DIRECTION_MARKS)
            if len(other) == 1:
                a, b = find(char), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    for upper in string.ascii_uppercase:  # ASCII case pairs join too: ``I`` ~ ``l`` and ``I`` ~ ``i``
        a, b = find(upper), find(upper.lower())  # (names are case-folded first, so other scripts'
        if a != b:  # cases meet anyway; joining their case pairs here would chain unrelated classes)
            parent[max(a, b)] = min(a, b)
    return {ch: find(ch) for ch in list(parent)}
