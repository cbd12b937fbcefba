"""Shell words for command templates: where a substitution stands, how to quote a value there,
and whether a piece of raw shell text is plain words. Pure (no I/O).

A command template is shell text that bash runs. Expansion substitutes ``${...}`` into it before
any shell sees it, so a value must arrive as exactly the bytes it holds, never as code. A value is
quoted for the *context* its placeholder stands in: unquoted (``x=${v}``: one single-quoted word
glued to its neighbours), inside ``'...'``, ``"..."`` or ``$'...'`` (the quote is closed, the
quoted value inserted and the quote reopened), also inside ``$(...)`` and backticks of the
template. Values that need no quoting (letters, digits, ``_+=.,:/@%-``) stay as they are, so
ordinary commands read, and hash, exactly as before.
"""

from __future__ import annotations

import re
import shlex

UNQUOTED, SINGLE, DOUBLE, ANSI = "", "'", '"', "$'"
ESCAPED = "\\"  # right after an unquoted backslash: the next character is taken literally
_CLOSER = {SINGLE: "'", ANSI: "'", DOUBLE: '"'}
_CODE = ("", "$(", "(", "`")  # frames where the shell reads code (words and operators)
_SAFE = re.compile(r"[A-Za-z0-9_+=.,:/@%\-]*")
# near's dispatch placeholders (${run_dir}, ${ncsn.run_dir}) are substituted textually later
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?\}")
_OPERATORS = set(";&|<>()\n")
# near's $${ escape and dispatch placeholders must stay intact for dispatch to find them
_BACKTICK_SPECIAL = re.compile(r"\$\$\{|\$\{[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?\}|[\\`$]")


def _backslashed(m: re.Match) -> str:
    text = m.group(0)
    if len(text) > 3:  # a dispatch placeholder: substituted before the shell reads the command
        return text
    return "\\" + text  # \$${ reaches the shell as \${


def quote(word: str, context: str = UNQUOTED) -> str:
    """``word`` as one shell word at a place in ``context`` (see :func:`contexts`); near's dispatch
    placeholders inside it stay readable (they hold paths near makes)."""
    bare = _PLACEHOLDER.sub("", word) if "${" in word else word
    if _SAFE.fullmatch(bare) and (word or context.lstrip("`") != UNQUOTED):
        return word
    levels = len(context) - len(context.lstrip("`"))
    context = context[levels:]
    quoted = shlex.quote(word)
    if context != UNQUOTED:
        quoted = _CLOSER[context] + quoted + context
    for _ in range(levels):  # inside `...` the shell first removes a backslash before \, ` and $
        quoted = _BACKTICK_SPECIAL.sub(_backslashed, quoted)
    return quoted


def _scan(text: str, with_ticks: bool = False):
    """Yield ``(index, frame, escaped)`` before each character and once at the end: ``frame`` is the
    innermost construct the character is read in ('' top-level code, '$(' or '(' or '`' nested
    code, "'", '"', "$'" quotes, '#' a comment). ``with_ticks``: a fourth item, the number of
    enclosing backtick substitutions."""
    stack = [""]
    escaped = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        top = stack[-1]
        yield (i, top, escaped, stack.count("`")) if with_ticks else (i, top, escaped)
        if escaped:
            escaped = False
        elif top in _CODE:
            nxt = text[i + 1] if i + 1 < n else ""
            if c == "\\":
                escaped = True
            elif c == "'":
                stack.append(SINGLE)
            elif c == '"':
                stack.append(DOUBLE)
            elif c == "$" and nxt == "'":
                stack.append(ANSI)
                i += 1
            elif c == "$" and nxt == "(":
                stack.append("$(")
                i += 1
            elif c == "`":
                if top == "`":
                    stack.pop()
                else:
                    stack.append("`")
            elif c == "(" and top in ("$(", "("):
                stack.append("(")
            elif c == ")" and top in ("$(", "("):
                stack.pop()
            elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()<>"):
                stack.append("#")
        elif top == "#":
            if c == "\n":
                stack.pop()
        elif top == SINGLE:
            if c == "'":
                stack.pop()
        elif top == ANSI:
            if c == "\\":
                escaped = True
            elif c == "'":
                stack.pop()
        elif top == DOUBLE:
            nxt = text[i + 1] if i + 1 < n else ""
            if c == "\\" and nxt in '$`"\\\n':
                escaped = True
            elif c == '"':
                stack.pop()
            elif c == "$" and nxt == "(":
                stack.append("$(")
                i += 1
            elif c == "`":
                stack.append("`")
        i += 1
    frame = stack[-1] if len(stack) > 1 else ""
    yield (n, frame, escaped, stack.count("`")) if with_ticks else (n, frame, escaped)


def contexts(text: str, positions: set[int]) -> dict[int, str]:
    """The quoting context at each of ``positions``: ESCAPED, or UNQUOTED, SINGLE, DOUBLE or ANSI,
    preceded by one backtick per enclosing old-style command substitution."""
    out = {}
    for i, frame, escaped, ticks in _scan(text, with_ticks=True):
        if i in positions:
            out[i] = ESCAPED if escaped else "`" * ticks + (frame if frame in _CLOSER else UNQUOTED)
    return out


def unbalanced(text: str) -> str | None:
    """What is left open at the end of ``text`` (a quote, ``$(``, a backtick, a backslash), or None."""
    *_, (_, frame, escaped) = _scan(text)
    if escaped:
        return "a trailing backslash"
    if frame in _CLOSER:
        return f"an unclosed {frame} quote"
    if frame in ("$(", "(", "`"):
        return f"an unclosed {'`' if frame == '`' else '$('}"
    return None


def not_words(text: str) -> str | None:
    """None if ``text`` is only shell words (quoted or not: what a raw variable may hold), else what
    is in the way: an operator (``;`` ``&`` ``|`` ``<`` ``>`` ``(`` ``)`` or a newline), a command
    substitution, a comment or an unclosed quote."""
    for i, frame, escaped in _scan(text):
        if escaped or i == len(text):
            continue
        c = text[i]
        if frame in _CODE or frame == DOUBLE:
            if c == "`" or (c == "$" and text[i + 1 : i + 2] == "("):
                return f"a command substitution ({text[i:i + 2]!r})"
        if frame in _CODE:
            if c in _OPERATORS:
                return "a newline" if c == "\n" else f"the shell operator {c!r}"
            if c == "#" and (i == 0 or text[i - 1] in " \t"):
                return "a comment ('#')"
    return unbalanced(text)
