"""Settings declared once: a config field carries its default, the rule its value must meet and
the sentence that documents it, as dataclass field metadata.

Validation (problems), the commented default config files (commented_yaml, behind both
write-default-config commands) and the configuration reference in the docs read them from the
field itself, so that no setting is checked, described or listed in a second place. Rules
between several fields (a window longer than its lookahead, say) stay in the config's
__post_init__; here each value is judged on its own, named by its dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

import yaml

CHECK, DOC, RULE = "blendsync.check", "blendsync.doc", "blendsync.rule"

Check = Callable[[str, Any], "str | None"]


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _setting(default: Any, check: Check, rule: str, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={CHECK: check, RULE: rule, DOC: doc})


def integer(default: int, *, minimum: int | None, doc: str, maximum: int | None = None) -> Any:
    """An integer from minimum to maximum (None: unbounded on that side). An upper bound keeps
    a value read from a file (a config, a checkpoint) from asking for memory no machine has."""

    def check(name: str, v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{name} must be an integer, got {v!r}"
        if minimum is not None and v < minimum:
            return f"{name} must be >= {minimum}, got {v}"
        return None if maximum is None or v <= maximum else f"{name} must be <= {maximum}, got {v}"

    rule = "integer" if minimum is None else f"integer >= {minimum}"
    return _setting(default, check, rule if maximum is None else f"{rule} and <= {maximum}", doc)


def _number(words: str, ok: Callable[[float], bool]) -> Callable[..., Any]:
    def make(default: float, *, doc: str, maximum: float | None = None) -> Any:
        def check(name: str, v: Any) -> str | None:
            if not _is_real(v) or not math.isfinite(v):
                return f"{name} must be a finite number, got {v!r}"
            if not ok(v):
                return f"{name} must be {words}, got {v}"
            return None if maximum is None or v <= maximum else f"{name} must be <= {maximum:g}, got {v:g}"

        rule = "number" if words == "finite" else f"number {words}"
        return _setting(default, check, rule if maximum is None else f"{rule} and <= {maximum:g}", doc)

    return make


real = _number("finite", lambda v: True)
positive = _number("> 0", lambda v: v > 0)
nonnegative = _number(">= 0", lambda v: v >= 0)
fraction = _number("in [0, 1)", lambda v: 0 <= v < 1)
unit = _number("in [0, 1]", lambda v: 0 <= v <= 1)


def flag(default: bool, *, doc: str) -> Any:
    def check(name: str, v: Any) -> str | None:
        return None if isinstance(v, bool) else f"{name} must be true or false, got {v!r}"

    return _setting(default, check, "true or false", doc)


def one_of(default: str, choices: Callable[[], Iterable[str]], *, doc: str) -> Any:
    """A name from a registry. choices is called when checking, so the registry it reads (a
    dict of presets, say) may be defined after the dataclass that uses it."""

    def check(name: str, v: Any) -> str | None:
        names = list(choices())
        return None if isinstance(v, str) and v in names else f"{name} must be one of {names}, got {v!r}"

    return dataclasses.field(
        default=default, metadata={CHECK: check, RULE: lambda: "one of " + ", ".join(choices()), DOC: doc}
    )


def unit_pair(default: tuple[float, float], *, doc: str) -> Any:
    def check(name: str, v: Any) -> str | None:
        ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_real(b) and 0 <= b < 1 for b in v)
        return None if ok else f"{name} must be two numbers in [0, 1), got {v!r}"

    return _setting(default, check, "two numbers in [0, 1)", doc)


def section(cls: type, *, doc: str) -> Any:
    """A nested section (its own dataclass of settings)."""
    return dataclasses.field(default_factory=cls, metadata={DOC: doc})


def documented(default: Any, *, doc: str, rule: str = "") -> Any:
    """A field checked elsewhere (by its own type), documented here."""
    return dataclasses.field(default=default, metadata={DOC: doc, RULE: rule})


def problems(cfg: Any, prefix: str = "") -> list[str]:
    """Every value of a config checked by its own field's rule, named by its dotted key,
    nested sections included."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if CHECK in f.metadata:
            p = f.metadata[CHECK](prefix + f.name, value)
            if p:
                out.append(p)
        elif DOC in f.metadata and dataclasses.is_dataclass(value):
            out += problems(value, f"{prefix}{f.name}.")
    return out


def keys(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every setting of a config class by dotted key ("optim.lr"), sections flattened."""
    out = {}
    for f in dataclasses.fields(cls):
        sub = _section_class(f)
        if sub is not None:
            out.update(keys(sub, f"{prefix}{f.name}."))
        elif DOC in f.metadata:
            out[prefix + f.name] = f
    return out


def sections(cls: type) -> dict[str, type]:
    """A config class's nested sections by field name."""
    return {f.name: sub for f in dataclasses.fields(cls) if (sub := _section_class(f)) is not None}


def rule_text(f: dataclasses.Field) -> str:
    rule = f.metadata.get(RULE, "")
    return rule() if callable(rule) else rule


def doc_text(f: dataclasses.Field) -> str:
    return f.metadata.get(DOC, "")


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _section_class(f: dataclasses.Field) -> type | None:
    if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
        return f.default_factory
    return None


def commented_yaml(cfg: Any, values: dict, header: str = "", width: int = 92) -> str:
    """values (cfg's plain dict form) as YAML with every setting's doc above it as a comment:
    the file write-default-config writes, which loads back to the same config."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    _emit(type(cfg), values, lines, 0, width)
    return "\n".join(lines) + "\n"


def _emit(cls: type, values: dict, lines: list[str], depth: int, width: int) -> None:
    pad = "  " * depth
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        f = by_name.get(key)
        doc = doc_text(f) if f is not None else ""
        if doc:
            if lines and depth == 0:
                lines.append("")
            lines += [f"{pad}# {line}" for line in textwrap.wrap(doc, width - len(pad) - 2)]
        sub = _section_class(f) if f is not None else None
        if sub is not None and isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            _emit(sub, value, lines, depth + 1, width)
            continue
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=width - len(pad) - 2)
        first, *rest = text.removesuffix("...\n").rstrip("\n").splitlines()
        lines += [f"{pad}{key}: {first}", *(f"{pad}  {line.strip()}" for line in rest)]
