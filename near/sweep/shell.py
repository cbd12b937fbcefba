"""Shell words for command templates: where a substitution stands, how to quote a value there,
and whether a piece of raw shell text is plain words. Pure (no I/O).

A command template is shell text that bash runs. Expansion substitutes ``${...}`` into it before
any shell sees it, so a value must arrive as exactly the bytes it holds, never as code. A value is
quoted for the *context* its placeholder stands in: unquoted (``x=${v}``: one single-quoted word
glued to its neighbours), inside ``'...'``, ``"..."`` or ``$'...'`` (the quote is closed, the
quoted value inserted and the quote reopened), also inside ``$(...)`` and backticks of the
template. Values that need no quoting (letters, digits, ``_+=.,:/@%-``) stay as they are, so
ordinary commands read, and hash, exactly as before.

Inside the word of one of bash's own parameter expansions (``"${X:-${v}}"``, ``${X/a/${v}}``)
quoting rules differ by operator and bash version, so a value there is not written into the
text at all: it is read from a shell variable assigned at the top of the command
(:data:`PARAM`). Where bash evaluates text as arithmetic (``$(( ))``, ``(( ))``, ``$[ ]``,
``let``, ``[[ ]]`` with ``-eq``-style operators, array subscripts, ``${X:offset}``, assignments
when the command declares integer variables) data would run as code (``a[$(cmd)]``): such a
context is refused (:func:`refused`).
"""

from __future__ import annotations

import re
import shlex

UNQUOTED, SINGLE, DOUBLE, ANSI = "", "'", '"', "$'"
ESCAPED = "\\"  # right after an unquoted backslash: the next character is taken literally
PARAM = "${"  # in the word of a parameter expansion: the value goes in as a quoted variable reference
PARAM_DQ = '${"'  # inside "..." within such a word: the same, unquoted (the quotes are the spec's)
REFUSED = "!"  # prefix of a context no value may stand in; the rest says which
_CLOSER = {SINGLE: "'", ANSI: "'", DOUBLE: '"'}
_CODE = ("", "$(", "(", "`", "[[")  # frames where the shell reads code (words and operators)
_ARITH = ("$((", "((", "$[", "a(")  # frames where bash evaluates arithmetic
_PWORD = "${w"  # the word part of a parameter expansion
_PNAME, _PSUB, _POFF = "${n", "${[", "${:"  # its name, subscript and substring offset
_SAFE = re.compile(r"[A-Za-z0-9_+=.,:/@%\-]*")
# a template's placeholders: ${name} or ${ref.attr} (groups 1 and 2), and $${, a literal ${
PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
# near's dispatch placeholders (${run_dir}, ${ncsn.run_dir}) are substituted textually later
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?\}")
_OPERATORS = set(";&|<>()\n")
# near's $${ escape and dispatch placeholders must stay intact for dispatch to find them
_BACKTICK_SPECIAL = re.compile(r"\$\$\{|\$\{[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?\}|[\\`$]")
_BASH_BACKTICK_SPECIAL = re.compile(r"[\\`$]")
_ARITH_CMD = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*let\s")
_DECLARE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(?:declare|typeset|local|export|readonly)\s((?:\s*[-+]\w*)*)")
_INT_DECL = re.compile(r"\b(?:declare|typeset|local|export|readonly)(?:\s+[-+]\w+)*\s+-\w*[in]")
_SUBSCRIPT = re.compile(r"(?:^|[\s;&|()])[A-Za-z_][A-Za-z0-9_]*\[[^\]]*$")
_ASSIGN = re.compile(r"(?:^|[\s;&|()])[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=\S*$")
_ARITH_TEST = re.compile(r"(?:^|\s)-(?:eq|ne|lt|le|gt|ge)(?:\s|$)")


def _backslashed(m: re.Match) -> str:
    text = m.group(0)
    if len(text) > 3:  # a dispatch placeholder: substituted before the shell reads the command
        return text
    return "\\" + text  # \$${ reaches the shell as \${


def quote(word: str, context: str = UNQUOTED, *, final: bool = False) -> str:
    """``word`` as one shell word at a place in ``context`` (see :func:`contexts`). In a template
    (``final`` false) near's dispatch placeholders inside it stay readable: dispatch quotes them
    for their own place. ``final``: ``word`` goes into the text bash reads (a path at dispatch)."""
    bare = _PLACEHOLDER.sub("", word) if "${" in word and not final else word
    if _SAFE.fullmatch(bare) and (word or context.lstrip("`") != UNQUOTED):
        return word
    levels = len(context) - len(context.lstrip("`"))
    context = context[levels:]
    quoted = shlex.quote(word)
    if context != UNQUOTED:
        quoted = _CLOSER[context] + quoted + context
    special = _BASH_BACKTICK_SPECIAL if final else _BACKTICK_SPECIAL
    for _ in range(levels):  # inside `...` the shell first removes a backslash before \, ` and $
        quoted = special.sub(_backslashed, quoted)
    return quoted


def variable_ref(name: str, context: str) -> str:
    """How a value held in shell variable ``name`` is read at a ``PARAM`` or ``PARAM_DQ`` place:
    quoted, so that bash neither splits it, nor globs it, nor reads it as a pattern or ``&``."""
    return f'"${{{name}}}"' if context == PARAM else f"${{{name}}}"


def _scan(text: str):
    """Yield ``(index, stack, escaped)`` before each character and once at the end: ``stack`` is
    the list of enclosing constructs, innermost last ('' top-level code, '$(' '(' '`' '[[' nested
    code, "'" '"' "$'" quotes, '#' a comment, '${n' '${[' '${:' '${w' the parts of a parameter
    expansion, '$((' '((' '$[' 'a(' arithmetic). The stack is shared: copy it to keep it.
    A near placeholder (``${name}``, ``${ref.attr}``) is one position: its first character.
    ``$${`` (near's escape for a literal ``${``) opens a parameter expansion as ``${`` does."""
    stack = [""]
    escaped = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        top = stack[-1]
        yield i, stack, escaped
        nxt = text[i + 1] if i + 1 < n else ""
        if escaped:
            escaped = False
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
        elif top == _PNAME:
            if c == "$" and nxt == "{":  # ${${v}}: a name made of a value
                stack.append(_PNAME)
                i += 1
            elif c.isalnum() or c == "_" or (c in "@*#?-$!" and text[i - 1] in "{#!"):
                pass
            elif c == "}":
                stack.pop()
            elif c == "[":
                stack[-1] = _PSUB
            elif c == ":" and nxt not in "-=?+":
                stack[-1] = _POFF
            else:
                stack[-1] = _PWORD  # the operator: -, =, ?, +, #, %, /, ^, ",", @, :-, ...
        elif top == _PSUB:
            if c == "]":
                stack[-1] = _PNAME
            elif c == "$" and nxt in "({":
                stack.append("$(" if nxt == "(" else _PNAME)
                i += 1
        elif top == _POFF:
            if c == "}":
                stack.pop()
            elif c == "$" and nxt in "({":
                stack.append("$(" if nxt == "(" else _PNAME)
                i += 1
        elif c == "$" and (nxt == "{" or text.startswith("${", i + 1)):
            m = _PLACEHOLDER.match(text, i)
            if m:
                i = m.end()  # one value: yielded once above, at its '$'
                continue
            i += 2 if nxt == "{" else 3
            stack.append(_PNAME)
            if i < n and text[i] in "#!" and text[i + 1 : i + 2] not in ("}", ""):
                i += 1  # ${#name} (length), ${!name} (indirection)
            continue
        elif top in _ARITH:
            if c == "$" and nxt == "(" and text[i + 2 : i + 3] != "(":
                stack.append("$(")
                i += 1
            elif c == "(":
                stack.append("a(")
            elif c == ")" and top == "a(":
                stack.pop()
            elif c == ")" and nxt == ")" and top in ("$((", "(("):
                stack.pop()
                i += 1
            elif c == "]" and top == "$[":
                stack.pop()
        elif c == "$" and nxt == "(":
            arith = text[i + 2 : i + 3] == "("
            stack.append("$((" if arith else "$(")
            i += 2 if arith else 1
        elif c == "$" and nxt == "[":
            stack.append("$[")
            i += 1
        elif c == "`":
            if top == "`":
                stack.pop()
            else:
                stack.append("`")
        elif top == DOUBLE:
            if c == "\\" and nxt in '$`"\\\n':
                escaped = True
            elif c == '"':
                stack.pop()
        elif c == "\\":
            escaped = True
        elif c == "'":
            stack.append(SINGLE)
        elif c == '"':
            stack.append(DOUBLE)
        elif top == _PWORD:
            if c == "}":
                stack.pop()
        elif c == "$" and nxt == "'":
            stack.append(ANSI)
            i += 1
        elif c == "(" and nxt == "(":
            stack.append("((")
            i += 1
        elif c == "(" and top in ("$(", "("):
            stack.append("(")
        elif c == ")" and top in ("$(", "("):
            stack.pop()
        elif c == "[" and nxt == "[" and (i == 0 or text[i - 1] in " \t\n;&|(") \
                and text[i + 2 : i + 3] in (" ", "\t", "\n"):
            stack.append("[[")
            i += 1
        elif c == "]" and nxt == "]" and top == "[[" and text[i - 1] in " \t\n":
            stack.pop()
            i += 1
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()<>"):
            stack.append("#")
        i += 1
    yield n, stack, escaped


def _context(text: str, i: int, stack: list[str], escaped: bool, int_decl: bool, cmd_start: int,
             test_start: int | None) -> str:
    """The context of a placeholder at ``text[i]`` (see :func:`contexts`)."""
    if escaped:
        return ESCAPED
    for f in stack:
        if f in _ARITH:
            return REFUSED + "an arithmetic expression (" + _ARITH_NAMES[f] + ")"
        if f in _PARTS:
            return REFUSED + _PARTS[f]
    top = stack[-1]
    if _PWORD in stack:
        inner = stack[len(stack) - stack[::-1].index(_PWORD):]
        if not inner:
            return PARAM
        if inner == [DOUBLE]:
            return PARAM_DQ
        if any(f in (SINGLE, ANSI) for f in inner):
            return REFUSED + "quotes inside a parameter expansion (${X:-'...'}); drop the quotes"
    if test_start is not None:
        end = text.find("]]", i)
        if _ARITH_TEST.search(text[test_start:end if end >= 0 else len(text)]):
            return REFUSED + "a [[ ]] test with an arithmetic operator (-eq, -lt, ...)"
    head = text[cmd_start:i].lstrip()
    if _ARITH_CMD.match(head):
        return REFUSED + "the arguments of let (arithmetic)"
    m = _DECLARE.match(head)
    if m and re.search(r"-\w*[ina]", m.group(1) or ""):
        return REFUSED + "a declare/typeset/local with -i, -n or -a (bash evaluates the value)"
    word = head.rsplit(None, 1)[-1] if head and not head[-1].isspace() else ""
    if _SUBSCRIPT.search(" " + word):
        return REFUSED + "an array subscript (arithmetic)"
    if int_decl and _ASSIGN.search(" " + word):
        return REFUSED + "an assignment in a command that declares integer or reference variables"
    ticks = stack.count("`")
    return "`" * ticks + (top if top in _CLOSER else UNQUOTED)


_ARITH_NAMES = {"$((": "$(( ))", "a(": "$(( ))", "((": "(( ))", "$[": "$[ ]"}
_PARTS = {_PNAME: "the name of a parameter expansion (${...})",
          _POFF: "the offset or length of a substring expansion (${X:offset:length}, arithmetic)",
          _PSUB: "an array subscript (arithmetic)"}


def contexts(text: str, positions: set[int]) -> dict[int, str]:
    """The context at each of ``positions`` (the ``$`` of a placeholder): ESCAPED; UNQUOTED,
    SINGLE, DOUBLE or ANSI preceded by one backtick per enclosing old-style command substitution;
    PARAM or PARAM_DQ (in the word of a parameter expansion); or REFUSED followed by what the
    place is (arithmetic, the name of a parameter expansion, ...)."""
    out: dict[int, str] = {}
    if not positions:
        return out
    int_decl = bool(_INT_DECL.search(text))
    entered: dict[int, int] = {1: 0}  # depth -> where the construct at that depth began
    starts: dict[int, int] = {1: 0}  # depth of a code frame -> where its current simple command began
    depth = 1
    for i, stack, escaped in _scan(text):
        d = len(stack)
        if d > depth:
            for k in range(depth + 1, d + 1):
                entered[k] = starts[k] = i
        depth = d
        if i in positions:
            code = max(k for k, f in enumerate(stack) if f in _CODE) + 1
            test = next((entered[k + 1] for k, f in enumerate(stack) if f == "[["), None)
            out[i] = _context(text, i, stack, escaped, int_decl, starts[code], test)
        elif i < len(text) and not escaped and stack[-1] in _CODE and text[i] in ";&|\n(":
            starts[d] = i + 1
    return out


def normalize_command(text: str) -> str:
    """``text`` with each run of blanks that separates words in code made one space (one newline
    if the run holds a line break), and stripped: folded YAML reads as one line, while a command
    of several lines keeps them (a comment line ends at its newline). Quoted text, comments and
    escaped characters are kept byte for byte."""
    blanks = {i for i, stack, escaped in _scan(text)
              if i < len(text) and not escaped and stack[-1] in _CODE and text[i] in " \t\r\n"}
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j in blanks:
            j += 1
        if j > i:
            out.append("\n" if "\n" in text[i:j] else " ")
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out).strip(" \t\r\n")


def refused(context: str) -> str | None:
    """What a refused context is (None when a value may stand there)."""
    return context[len(REFUSED):] if context.startswith(REFUSED) else None


def unbalanced(text: str) -> str | None:
    """What is left open at the end of ``text`` (a quote, ``$(``, a backtick, a backslash, a
    parameter expansion, an arithmetic expression), or None."""
    *_, (_, stack, escaped) = _scan(text)
    frame = stack[-1] if len(stack) > 1 else ""
    if escaped:
        return "a trailing backslash"
    if frame in _CLOSER:
        return f"an unclosed {frame} quote"
    if frame in ("$(", "(", "`"):
        return f"an unclosed {'`' if frame == '`' else '$('}"
    if frame in (_PNAME, _PSUB, _POFF, _PWORD):
        return "an unclosed ${"
    if frame in _ARITH:
        return "an unclosed arithmetic expression"
    if frame == "[[":
        return "an unclosed [["
    return None


_BRACE_SEQUENCE = re.compile(r"(?:-?[0-9]+\.\.-?[0-9]+|[A-Za-z]\.\.[A-Za-z])(?:\.\.-?[0-9]+)?")
# what may follow a `$` for bash to expand it (outside double quotes also $'...' and $"...")
_DOLLAR_NEXT = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@*#?$!-{([")


def expansions(text: str) -> list[tuple[int, str]]:
    """Where bash changes the words of the top-level shell text ``text`` beyond removing quotes
    (``(index, what)``, in order): a parameter expansion (``$X``, ``$${X}``, near's escape for
    ``${X}``), a command substitution, arithmetic, ``$'...'``/``$"..."`` quoting, or a brace
    expansion (``k={a:1,b:2}`` becomes the two words ``k=a:1 k=b:2``). near's placeholders are
    values, quoted for their place, so they are none of these."""
    chars: dict[int, tuple[str, bool]] = {}  # index -> (where: code, "dq" or other, escaped)
    for i, stack, escaped in _scan(text):
        where = "code" if len(stack) == 1 else "dq" if len(stack) == 2 and stack[1] == DOUBLE else ""
        chars[i] = (where, escaped)
    out: list[tuple[int, str]] = []
    for i, (where, escaped) in chars.items():
        if escaped or not where or i == len(text):
            continue
        c, nxt = text[i], text[i + 1 : i + 2]
        if c == "$" and not _PLACEHOLDER.match(text, i):
            if nxt == "(" or nxt == "[":
                out.append((i, "command substitution or arithmetic"))
            elif nxt in _DOLLAR_NEXT or (where == "code" and nxt in ("'", '"')):
                out.append((i, "quoting bash reads itself" if nxt in "'\"" else "parameter expansion"))
        elif c == "`":
            out.append((i, "command substitution"))
        elif c == "{" and where == "code" and _brace_end(text, i, chars):
            out.append((i, "brace expansion"))
    return out


def _brace_end(text: str, start: int, chars: dict[int, tuple[str, bool]]) -> bool:
    """Whether the unquoted ``{`` at ``start`` opens a brace expansion: a matching unquoted ``}``
    in the same word with an unquoted ``,`` between them, or a sequence (``{1..3}``)."""
    depth, comma = 1, False
    for j in range(start + 1, len(text)):
        where, escaped = chars.get(j, ("", False))  # not listed: inside a placeholder
        if where != "code" or escaped:
            continue
        c = text[j]
        if c in " \t\n;&|<>()":
            return False
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return comma or bool(_BRACE_SEQUENCE.fullmatch(text[start + 1 : j]))
        elif c == "," and depth == 1:
            comma = True
    return False


def not_words(text: str) -> str | None:
    """None if ``text`` is only shell words (quoted or not: what a raw variable may hold), else what
    is in the way: an operator (``;`` ``&`` ``|`` ``<`` ``>`` ``(`` ``)`` or a newline), a command
    substitution, a comment or an unclosed quote."""
    for i, stack, escaped in _scan(text):
        frame = stack[-1]
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
