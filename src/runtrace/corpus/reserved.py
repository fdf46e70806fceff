"""Software reserved for an independent check of the project, which must never enter the corpus.

Two kinds are reserved: every npm package, and every PyPI project whose sha256 of its PEP 503-normalised
name (lower case, runs of `-`, `_`, `.` as one `-`) starts with `0` or `1` - about one project in eight.
The rule lives here, in one function, and every path by which a file can enter the corpus calls it: the
sources config when it is loaded, the wheel download before it reaches the network, and the build for
every candidate file of every source type (so a source type added later is checked without knowing
about this rule).  A reserved name stops the build with a one-line error; it is never skipped quietly,
because a config that names one is a mistake to fix, not a file to do without.
"""

from __future__ import annotations

import hashlib
import re

RESERVED_PREFIXES = ("0", "1")
RULE_PYPI = "PyPI projects whose sha256 of the normalised name starts with 0 or 1 are reserved"
RULE_NPM = "npm packages are reserved"


class ReservedError(ValueError):
    """A reserved package was asked for; the message names it and the rule, on one line."""


def normalise_pypi_name(name: str) -> str:
    """PEP 503: lower case, every run of `-`, `_` and `.` becomes one `-`."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _ecosystems(source: str) -> set[str]:
    # A source names its ecosystem in its type ("pypi", "npm") or as a word of a longer name
    # ("pypi-history", "npm_registry"); either way the word is what decides the rule.
    return set(re.split(r"[^a-z0-9]+", source.lower()))


def reserved_reason(source: str, package: str) -> str | None:
    """Why `package` from `source` is reserved, or None when it may enter the corpus."""
    words = _ecosystems(source)
    if "npm" in words:
        return RULE_NPM
    if "pypi" in words:
        digest = hashlib.sha256(normalise_pypi_name(package).encode()).hexdigest()
        if digest.startswith(RESERVED_PREFIXES):
            return f"{RULE_PYPI} (sha256 {digest[:8]}...)"
    return None


def refuse_reserved(source: str, package: str, where: str = "") -> None:
    """Raise `ReservedError` for a reserved package; the one check every source path calls."""
    reason = reserved_reason(source, package)
    if reason is not None:
        prefix = f"{where}: " if where else ""
        raise ReservedError(f"{prefix}{source} package {package!r} is reserved: {reason}")
