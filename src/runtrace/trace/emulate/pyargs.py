"""What `PyArg_ParseTuple` and friends would store, for the stand-in Python host.

A module function checks its arguments with `PyArg_ParseTuple(args, "s#|i:name", &text, &len, &n)`
and works on what the call stored.  Returning success without storing anything leaves the outputs
uninitialised: the function then reads garbage pointers or sizes and ends on its first check.  So the
stand-in parses the format the way CPython does (`Python/getargs.c`) and says, per variadic argument,
what kind of value goes there; `winapi.PythonHost` writes plausible values of those kinds.
"""

from __future__ import annotations

# Kinds of output: a C type to store (size in bytes) or a kind of object.
OBJECT, TEXT, WIDE_TEXT, BUFFER, SKIP = "object", "text", "wide_text", "buffer", "skip"
LENGTH, FLOAT, DOUBLE, COMPLEX = "length", "float", "double", "complex"
_INT_SIZES = {
    "b": 1,
    "B": 1,
    "c": 1,
    "h": 2,
    "H": 2,
    "i": 4,
    "I": 4,
    "C": 4,
    "p": 4,
    "l": 4,
    "k": 4,
    "L": 8,
    "K": 8,
}  # fmt: skip  (C long is 4 bytes on Windows)


def output_kinds(fmt: str) -> list[str | int]:
    """One entry per variadic argument after the format: a kind above, or an integer's size in bytes
    ("n", Py_ssize_t: "ssize").  Parsing stops at ':' or ';' (the function name / error message)."""
    out: list[str | int] = []
    i = 0
    while i < len(fmt):
        c, nxt = fmt[i], fmt[i + 1 : i + 2]
        i += 1
        if c in ":;":
            break
        if c in "()|$ \t":
            continue
        if c in _INT_SIZES:
            out.append(_INT_SIZES[c])
        elif c == "n":
            out.append("ssize")
        elif c == "f":
            out.append(FLOAT)
        elif c == "d":
            out.append(DOUBLE)
        elif c == "D":
            out.append(COMPLEX)
        elif c in "OSUY":
            if nxt in ("!", "&"):  # O!: (type, PyObject **); O&: (converter, void *), not called
                out += [SKIP, OBJECT if nxt == "!" else SKIP]
                i += 1
            else:
                out.append(OBJECT)
        elif c in "szyuZwe":
            if c == "e":  # es, et, es#, et#: (encoding, char **[, length *])
                out.append(SKIP)
                i += 1
            kind = WIDE_TEXT if c in "uZ" else TEXT
            nxt = fmt[i : i + 1]
            if nxt == "*":
                out.append(BUFFER)
                i += 1
            elif nxt == "#":
                out += [kind, LENGTH]
                i += 1
            else:
                out.append(kind)
    return out
