"""YAML text for Kubernetes manifests: the JSON data model in block style, multi-line strings as literals.

Kubernetes reads YAML 1.2 and PyYAML reads YAML 1.1; the subset written here means the same to
both. Mappings and sequences are in block style. A string is plain only where no YAML 1.1 or 1.2
resolver could take it for anything but a string; every other string is double-quoted the way
JSON quotes it (a JSON string is a valid YAML double-quoted scalar). A string of several lines is
a literal block, so that a ``config.pbtxt`` or a script inside a ConfigMap stays readable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Plain (unquoted) strings: a letter first, then only characters that never start YAML syntax.
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_./-]*$")
# Words that YAML 1.1 resolves to booleans or null (YAML 1.2 only true/false/null): always quoted.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
# Characters that YAML does not allow raw (outside its printable set) or reads as line breaks
# (YAML 1.1: NEL, LS, PS), beyond the C0 controls that JSON escapes anyway.
_ESCAPE = re.compile(r"[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
# ... and what a literal block cannot carry: those, and every control but tab and newline.
_NOT_LITERAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_STEP = "  "


def scalar(value: Any) -> str:
    """One scalar (str, int, float, bool or None) on one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no YAML for the float {value!r} in a manifest")
        mantissa, e, exponent = repr(value).partition("e")
        # YAML 1.1 reads a float only with a '.' in it ('1e-05' would be a string)
        return mantissa + ("" if "." in mantissa else ".0") + e + exponent
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:  # fullmatch: "$" would let "a\n" through
            return value
        return _ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))
    raise TypeError(f"no YAML for a value of type {type(value).__name__}")


def _literal(text: str, indent: str) -> list[str] | None:
    """``text`` as a literal block: its header, then its lines at ``indent``; None where one cannot carry it.

    The content indentation is detected from the first non-empty line, so that line must not start
    with a space, and a line of spaces only would be read as an empty line: both are quoted instead.
    """
    if "\n" not in text or _NOT_LITERAL.search(text):
        return None
    body = text.rstrip("\n")
    lines = body.split("\n")
    first = next((line for line in lines if line), "")
    if not first or first[0] == " " or any(line and not line.strip(" ") for line in lines):
        return None
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    lines += [""] * (trailing - 1 if chomp == "+" else 0)
    return ["|" + chomp] + [indent + line if line else "" for line in lines]


def _is_collection(value: Any) -> bool:
    return isinstance(value, Mapping) or (isinstance(value, Sequence) and not isinstance(value, str))


def _inline(value: Any, indent: str) -> list[str]:
    """A scalar or an empty collection after 'key:' or '-': its first line's text, then further lines."""
    if isinstance(value, Mapping):
        return ["{}"]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ["[]"]
    if isinstance(value, str):
        block = _literal(value, indent + _STEP)
        if block is not None:
            return block
    return [scalar(value)]


def _block(value: Any, indent: str) -> list[str]:
    """A non-empty mapping or sequence as block lines, its entries at ``indent``."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping keys must be strings, got {key!r}")
            if _is_collection(item) and item:
                out.append(f"{indent}{scalar(key)}:")
                out += _block(item, indent + _STEP)
            else:
                first, *rest = _inline(item, indent)
                out.append(f"{indent}{scalar(key)}: {first}")
                out += rest
        return out
    for item in value:
        if _is_collection(item) and item:
            nested = _block(item, indent + _STEP)
            out.append(f"{indent}- {nested[0][len(indent) + len(_STEP):]}")
            out += nested[1:]
        else:
            first, *rest = _inline(item, indent)
            out.append(f"{indent}- {first}")
            out += rest
    return out


def dump(document: Any) -> str:
    """One YAML document (without ``---``), ending in a newline."""
    lines = _block(document, "") if _is_collection(document) and document else _inline(document, "")
    return "\n".join(lines) + "\n"


def dump_all(documents: Sequence[Any]) -> str:
    """Several documents, each after a ``---`` line."""
    return "".join("---\n" + dump(d) for d in documents)
