"""A command template read once, at add time, into the parts validation needs: the environment
assignments, the program (``near train``, ``python -m near train``), the trainer kind and the
override words, each word a sequence of literal text and placeholders. Pure (no I/O).

Words are split as the shell splits them (quotes removed, operators such as ``;`` or ``&&`` end
the call, also without blanks around them). Expansion fills each word's placeholders with its
values as they are (a value is one word's data, never re-split), so validation reads exactly
the arguments the trainer will get instead of splitting a rendered command again.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from near.sweep.shell import PLACEHOLDER, expansions

_PLACEHOLDER = PLACEHOLDER
_SHELL_CHARS = set(";&|<>()")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# a placeholder stands in the text shlex splits as one private-use character
_FIRST_SLOT = 0xF0000
_SLOTS = re.compile("([\U000F0000-\U000FFFFD])")
# marks, in the text shlex splits, where bash expands something (shlex would keep it as text)
_EXPANDS = "\U0010FFFD"


@dataclass(frozen=True)
class Slot:
    """A placeholder in a word: ``${name}`` (attr None) or ``${name.attr}``."""

    name: str
    attr: str | None = None


Word = tuple  # of str (literal text, quotes removed) and Slot


@dataclass(frozen=True)
class Call:
    """A command's call of near's trainer: ``ENV=... near train KIND OVERRIDE...``."""

    env: tuple[Word, ...]
    program: tuple[str, ...]
    kind: Word
    overrides: tuple[Word, ...]
    to_end: bool = True  # the overrides run to the end of the command (then the stage's own follow)
    # words of the call (kind, overrides) that bash changes before the trainer reads them, with
    # what it does there: validation would read them as written, so a validated stage refuses them
    expanded: tuple[tuple[str, str], ...] = ()


def parse_call(template: str) -> Call | None:
    """The trainer call of ``template`` (``${...}`` placeholders kept as :class:`Slot` parts;
    ``$${`` is a literal ``${``), or None if it does not run ``near train KIND``."""
    slots: list[Slot | str] = []

    def mark(m: re.Match) -> str:
        slots.append("${" if m.group(0) == "$${" else Slot(m.group(1), m.group(2)))
        return chr(_FIRST_SLOT + len(slots) - 1)

    if _SLOTS.search(template) or _EXPANDS in template:
        return None  # cannot tell its own characters from placeholders
    sites = expansions(template)
    what = [w for _, w in sites]
    for at, _ in reversed(sites):
        template = template[:at] + _EXPANDS + template[at:]
    text = _PLACEHOLDER.sub(mark, template)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        marked = list(lexer)
    except ValueError:
        return None
    tokens = [t.replace(_EXPANDS, "") for t in marked]
    for i, tok in enumerate(tokens):
        if os.path.basename(tok) == "near" and tokens[i + 1 : i + 2] == ["train"]:
            first, start = i, i + 2
        elif tok == "-m" and tokens[i + 1 : i + 3] == ["near", "train"]:
            first, start = max(i - 1, 0), i + 3
        else:
            continue
        if start >= len(tokens):
            return None
        env = []
        for t in reversed(tokens[:first]):
            if not _ENV.match(t):
                break
            env.insert(0, t)
        overrides = []
        after = tokens[start + 1:]
        to_end = True
        for j, t in enumerate(after):
            if (t and set(t) <= _SHELL_CHARS) or (t.isdigit() and after[j + 1 : j + 2] and after[j + 1][0] in "<>"):
                to_end = False  # an operator, or the file descriptor of a redirection (2>&1)
                break
            overrides.append(t)
        word = _word_of(slots)
        # the n-th mark in the text is the n-th expansion site
        seen = [marked[k].count(_EXPANDS) for k in range(len(marked))]
        expanded = []
        for k in range(start, start + 1 + len(overrides)):
            if seen[k]:
                shown = "".join(p if isinstance(p, str) else f"${{{p.name}{'.' + p.attr if p.attr else ''}}}"
                                for p in word(tokens[k]))
                expanded.append((shown, what[sum(seen[:k])]))
        return Call(tuple(map(word, env)), tuple(tokens[first:start]), word(tokens[start]),
                    tuple(map(word, overrides)), to_end, tuple(expanded))
    return None


def _word_of(slots: list):
    def word(token: str) -> Word:
        parts: list = []
        for piece in _SLOTS.split(token):
            if len(piece) == 1 and _FIRST_SLOT <= ord(piece) < _FIRST_SLOT + len(slots):
                slot = slots[ord(piece) - _FIRST_SLOT]
                if isinstance(slot, str):  # $${: literal text
                    piece = slot
                else:
                    parts.append(slot)
                    continue
            if piece:
                if parts and isinstance(parts[-1], str):
                    parts[-1] += piece
                else:
                    parts.append(piece)
        return tuple(parts)
    return word


DUMMY_ROOT = "/tmp/near-validate"  # dispatch paths as validation sees them


def dummy_paths(text: str) -> str:
    """``text`` (one word, placeholders of dispatch left in, ``$${`` for a literal ``${``) as the
    trainer will read it, a dummy path standing for each path dispatch fills in."""
    return _PLACEHOLDER.sub(_dummy, text) if "${" in text else text


def _dummy(m: re.Match) -> str:
    if m.group(0) == "$${":
        return "${"
    name, attr = m.group(1), m.group(2)
    return f"{DUMMY_ROOT}/{name}" if attr is None else f"{DUMMY_ROOT}/{name}_{attr}"


def dummy_slot(slot: Slot) -> str:
    """What validation reads for a dispatch placeholder."""
    return f"{DUMMY_ROOT}/{slot.name}" if slot.attr is None else f"{DUMMY_ROOT}/{slot.name}_{slot.attr}"
