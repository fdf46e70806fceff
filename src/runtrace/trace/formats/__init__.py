"""Trace file formats: one module per format, each registering itself with `registry`.

Importing the package imports every format module, so the registry knows them all; detection tries
them in this order (binary formats before text logs).  A new format is one new module, imported here.
"""

from runtrace.trace.formats import native, x64dbg, textlog  # noqa: F401,I001  (order: detection order)
