"""What each Lua script declares: its KEYS and ARGV, read from its header.

Each script's header declares its KEYS and ARGV once; a call builds both from
that declaration by name (``Script.keys_for``, ``Script.argv_for`` in
scripts.py), never from an order written again. The grammar is below.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any

from .keys import GlobalKeys, QueueKeys

INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)


def lua_text(name: str) -> str:
    return resources.files("django_jobqueue.engine").joinpath("lua", f"{name}.lua").read_text("utf-8")


# ---------------------------------------------------------------- declarations
#
# Each script declares its KEYS and ARGV once, in its header: the Lua long
# comment that opens the file (``--[[`` on the first line, up to the first
# line starting with ``]]``). Python reads that declaration here and builds
# every call from it, by name, so the order is written in one place.
#
# The grammar, line by line inside the header:
#
#   KEYS[n] name note              the nth key
#   ARGV[n] name note              the nth argument
#   ARGV[n] name? note             the nth argument, which may be left out
#                                  (only the last ones: absent ones end ARGV)
#   ARGV[n..] name note            every argument from the nth on: a tail of
#                                  any length, passed as one sequence
#   ARGV[n..] name {a, b} note     the same, made of groups of a, b
#   KEYS: as other.lua             the same KEYS, in the same order, as other.lua
#
# An entry starts a line (after indentation) or follows two or more spaces,
# so several fit on one line; ``KEYS[n]`` anywhere else is prose. The name
# is the first word after the bracket (lowercase letters, digits and
# underscores, starting with a letter), which a colon may end; the note, any
# text up to the next entry (and over indented lines), is documentation
# only. KEYS and the fixed ARGV are numbered 1..n without gaps, each name
# once; a tail starts right after the fixed ARGV, and a script with a tail
# has no optional arguments. A KEYS name that is a key of keys.py's
# QueueKeys or GlobalKeys (``pending``, ``job_prefix``, ``workers``...) is
# read from the keys object a call passes; any other (``job``, a job's hash)
# is given by name at each call. A library (``_name.lua``, pulled in by
# ``--@include _name``) declares no KEYS or ARGV of its own; one whose code
# uses KEYS says whose with ``KEYS: as other.lua``, and only scripts with
# those KEYS may include it. Any other form is an error when the script loads.

_HEADER = re.compile(r"\A--\[\[[ \t]*\n(.*?)^\]\]", re.DOTALL | re.MULTILINE)
_ENTRY = re.compile(
    r"(?:^[ \t]*|[ \t]{2})(KEYS|ARGV)\[(\d+)(\.\.)?\][ \t]*([^\s{]*)(?:[ \t]*\{([^}\n]*)\})?", re.MULTILINE
)
_KEYS_AS = re.compile(r"^[ \t]*KEYS: as (\w+)\.lua\b", re.MULTILINE)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Keys a call's keys object holds (QueueKeys, GlobalKeys): read from it by name.
_KEY_PROPERTIES = frozenset(
    name
    for cls in (QueueKeys, GlobalKeys)
    for name, value in vars(cls).items()
    if isinstance(value, (cached_property, property))
)


class ScriptDeclarationError(ValueError):
    """A Lua script's header does not declare its KEYS and ARGV as the grammar says."""


@dataclass(frozen=True)
class ArgvTail:
    """ARGV from ``start`` (1-based) to the end, made of groups of ``fields``
    (no fields: single values)."""

    name: str
    start: int
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScriptSpec:
    """The KEYS and ARGV a script's header declares, in order."""

    name: str
    keys: tuple[str, ...]
    # The fixed arguments; those past ``required_argv`` may be left out.
    argv: tuple[str, ...]
    required_argv: int
    tail: ArgvTail | None = None
    # The script whose KEYS these are, when declared with "KEYS: as other.lua".
    keys_as: str | None = None

    @property
    def given_keys(self) -> tuple[str, ...]:
        """The KEYS given by name at each call (not read from the keys object)."""
        return tuple(name for name in self.keys if name not in _KEY_PROPERTIES)

    def named_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """A call's KEYS by their declared names (for tests and debugging)."""
        if len(keys) != len(self.keys):
            raise ValueError(f"{self.name}.lua takes {len(self.keys)} KEYS, got {len(keys)}")
        return dict(zip(self.keys, keys, strict=True))

    def named_argv(self, args: Sequence[Any]) -> dict[str, Any]:
        """A call's ARGV by their declared names; a tail as a list of its
        groups (dicts by field name), or of its values when it has no fields."""
        fixed = len(self.argv)
        if len(args) < self.required_argv or (self.tail is None and len(args) > fixed):
            most = "any number of" if self.tail else str(fixed)
            raise ValueError(f"{self.name}.lua takes {self.required_argv} to {most} ARGV, got {len(args)}")
        named: dict[str, Any] = dict(zip(self.argv, args, strict=False))
        if self.tail is not None:
            named[self.tail.name] = _groups(self, list(args[fixed:]))
        return named


def _groups(spec: ScriptSpec, rest: list[Any]) -> list[Any]:
    assert spec.tail is not None
    size = len(spec.tail.fields)
    if not size:
        return rest
    if len(rest) % size:
        raise ValueError(f"{spec.name}.lua: ARGV from {spec.tail.start} on come in groups of {size}, got {len(rest)}")
    return [dict(zip(spec.tail.fields, rest[i : i + size], strict=True)) for i in range(0, len(rest), size)]


@cache
def declaration(name: str) -> ScriptSpec:
    """What ``lua/<name>.lua`` declares; for a library (``_name``), no KEYS or
    ARGV of its own, and whose KEYS its code uses (``keys_as``)."""
    _check_name(f"lua/{name}.lua", name.removeprefix("_"))
    return parse_declaration(name, lua_text(name))


def parse_declaration(name: str, text: str) -> ScriptSpec:
    """What the Lua text of script ``name`` declares (a library's when
    ``name`` starts with "_"); ScriptDeclarationError if it breaks the grammar."""
    if name.startswith("_"):
        return _library_declaration(name, text)
    header = _HEADER.match(text)
    if header is None:
        raise ScriptDeclarationError(f"{name}.lua: no header: the file must open with a --[[ ... ]] comment")
    spec = _script_declaration(name, header.group(1))
    for library in INCLUDE.findall(text):
        _check_include(spec, declaration(library))
    return spec


def _library_declaration(name: str, text: str) -> ScriptSpec:
    lines = []
    for line in text.splitlines():
        if not line.startswith("--") or line.startswith("--@include"):
            break
        lines.append(line[2:])
    comment = "\n".join(lines)
    if _ENTRY.search(comment):
        raise ScriptDeclarationError(f"{name}.lua: a library declares no KEYS or ARGV of its own (see KEYS: as)")
    keys_as = _KEYS_AS.search(comment)
    return ScriptSpec(name, (), (), 0, keys_as=keys_as.group(1) if keys_as else None)


def _script_declaration(name: str, header: str) -> ScriptSpec:
    keys: dict[int, str] = {}
    argv: dict[int, str] = {}
    optional: set[int] = set()
    tails: list[ArgvTail] = []
    for match in _ENTRY.finditer(header):
        kind, number, repeated, word, fields = match.groups()
        where = f"{name}.lua: {kind}[{number}{repeated or ''}]"
        word = word.removesuffix(":")
        if kind == "ARGV" and not repeated and word.endswith("?"):
            word = word[:-1]
            optional.add(int(number))
        _check_name(where, word)
        if repeated:
            tails.append(_tail(where, kind, word, int(number), fields))
        elif fields is not None:
            raise ScriptDeclarationError(f"{where}: only a tail (ARGV[n..]) has {{fields}}")
        else:
            _add(where, keys if kind == "KEYS" else argv, int(number), word)
    keys_as = _KEYS_AS.search(header)
    if keys_as and keys:
        raise ScriptDeclarationError(f"{name}.lua: declares its KEYS and 'KEYS: as {keys_as.group(1)}.lua' both")
    key_names = _shared_keys(name, keys_as.group(1)) if keys_as else _ordered(name, "KEYS", keys)
    argv_names = _ordered(name, "ARGV", argv)
    required = min(optional, default=len(argv_names) + 1) - 1
    if optional != set(range(required + 1, len(argv_names) + 1)):
        raise ScriptDeclarationError(f"{name}.lua: only the last ARGV may be optional (name?)")
    return _spec(name, key_names, argv_names, required, tails, keys_as.group(1) if keys_as else None)


def _tail(where: str, kind: str, name: str, start: int, fields: str | None) -> ArgvTail:
    if kind == "KEYS":
        raise ScriptDeclarationError(f"{where}: KEYS have no tail: declare each key")
    group = tuple(f.strip() for f in fields.split(",")) if fields is not None else ()
    for field_name in group:
        _check_name(f"{where} {{...}}", field_name)
    return ArgvTail(name, start, group)


def _check_include(spec: ScriptSpec, library: ScriptSpec) -> None:
    """A library whose code uses KEYS by number fits only scripts with the KEYS it was written for."""
    if library.keys_as in (None, spec.name):
        return
    if spec.keys != declaration(library.keys_as).keys:
        raise ScriptDeclarationError(
            f"{spec.name}.lua: includes {library.name}.lua, whose code uses the KEYS of {library.keys_as}.lua, "
            f"but declares other KEYS"
        )


def _check_name(where: str, name: str) -> None:
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScriptDeclarationError(
            f"{where}: {name!r} is not a name (lowercase letters, digits and underscores, starting with a letter)"
        )


def _add(where: str, entries: dict[int, str], number: int, name: str) -> None:
    if number in entries:
        raise ScriptDeclarationError(f"{where}: declared twice ({entries[number]!r} and {name!r})")
    entries[number] = name


def _ordered(script: str, kind: str, entries: dict[int, str]) -> tuple[str, ...]:
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise ScriptDeclarationError(f"{script}.lua: {kind} must be numbered 1..n without gaps, got {sorted(entries)}")
    names = tuple(entries[i] for i in range(1, len(entries) + 1))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ScriptDeclarationError(f"{script}.lua: {kind} names declared more than once: {', '.join(twice)}")
    return names


def _shared_keys(script: str, other: str) -> tuple[str, ...]:
    spec = declaration(other)
    if spec.keys_as is not None or not spec.keys:
        raise ScriptDeclarationError(f"{script}.lua: KEYS: as {other}.lua, which declares no KEYS of its own")
    return spec.keys


def _spec(
    name: str, keys: tuple[str, ...], argv: tuple[str, ...], required: int, tails: list[ArgvTail], keys_as: str | None
) -> ScriptSpec:
    if len(tails) > 1:
        raise ScriptDeclarationError(f"{name}.lua: one ARGV tail (ARGV[n..]) at most")
    tail = tails[0] if tails else None
    if tail is not None:
        if required < len(argv):
            raise ScriptDeclarationError(f"{name}.lua: a script with an ARGV tail has no optional ARGV")
        if tail.start != len(argv) + 1:
            raise ScriptDeclarationError(f"{name}.lua: the ARGV tail must start at ARGV[{len(argv) + 1}]")
        if tail.name in argv:
            raise ScriptDeclarationError(f"{name}.lua: ARGV names declared more than once: {tail.name}")
    return ScriptSpec(name, keys, argv, required, tail, keys_as)


# The builders are compiled from the declaration, as dataclasses compiles
# __init__: a call is then what a hand-written list would cost (the claim and
# the completion build one per batch of jobs), and a name left out or
# unknown is Python's own TypeError. Only names checked by _check_name reach
# the generated text; its own names start with "_", which a declared one cannot.
_ABSENT: Any = object()


def keys_builder(spec: ScriptSpec) -> Callable[..., list[str]]:
    given = spec.given_keys
    params = "_keys, /" + (", *, " + ", ".join(given) if given else "")
    values = ", ".join(name if name in given else f"_keys.{name}" for name in spec.keys)
    return _compile(spec, f"{spec.name}_keys", f"def {spec.name}_keys({params}):\n    return [{values}]\n")


def argv_builder(spec: ScriptSpec) -> Callable[..., list[Any]]:
    required = spec.argv[: spec.required_argv]
    optional = spec.argv[spec.required_argv :]
    params = [*required, *(f"{name}=_ABSENT" for name in optional)]
    if spec.tail is not None:
        params.append(f"{spec.tail.name}=()")
    function = f"{spec.name}_argv"
    signature = f"def {function}(*, {', '.join(params)}):\n" if params else f"def {function}():\n"
    values = ", ".join([*required, *([f"*{spec.tail.name}"] if spec.tail else [])])
    lines = [signature, f"    _argv = [{values}]\n"]
    for i, name in enumerate(optional):
        later = optional[i + 1 :]
        lines.append(f"    if {name} is _ABSENT:\n")
        if later:
            given = " or ".join(f"{n} is not _ABSENT" for n in later)
            message = f"{spec.name}.lua: ARGV {name} is left out, so {', '.join(later)} must be too"
            lines.append(f"        if {given}:\n            raise TypeError({message!r})\n")
        lines.append(f"        return _argv\n    _argv.append({name})\n")
    lines.append("    return _argv\n")
    return _compile(spec, function, "".join(lines))


def _compile(spec: ScriptSpec, function: str, text: str) -> Callable[..., list[Any]]:
    namespace: dict[str, Any] = {"_ABSENT": _ABSENT}
    exec(compile(text, f"<{spec.name}.lua header>", "exec"), namespace)  # noqa: S102 - validated names only
    built: Callable[..., list[Any]] = namespace[function]
    return built
