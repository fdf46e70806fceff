"""Imports unicorn and Speakeasy without the parts of their import cost that tracing never uses.

Every `runtrace scan` process pays for these imports, so they are worth about a third of a second:

- unicorn 1.0.2's Python bindings (the release Speakeasy requires) import `pkg_resources` and
  `distutils.sysconfig` only to list places their shared library might be, and the first place they try
  is the `lib` folder beside their own module.  Those two imports load most of setuptools: about 0.15 s
  plus a deprecation warning.  While unicorn is imported, both names are answered by small stand-ins that
  give the same `lib` folder.
- Speakeasy imports `jsonschema` (about 0.07 s with its dependencies) only to validate its configuration
  in `Speakeasy.__init__`.  While Speakeasy is imported, `jsonschema` is a lazy stand-in that imports the
  real package on first use; the emulator's configuration is fixed by runtrace and validated against
  Speakeasy's schema by the tests, so `emulator.Speakeasy` skips the per-run validation.
- Speakeasy's advapi32 imports pycryptodome's ARC4 for `CryptEncrypt`/`CryptDecrypt`, and loading its
  native part asks `platform.architecture()`, which runs the `file` command in a subprocess: about 10 ms
  of every `runtrace scan` on one core, for a cipher few programs use.  `Crypto.Cipher.ARC4` is a lazy
  stand-in too, the real module imported at the first call that needs it.

The stand-ins are removed from `sys.modules` afterwards, so a later `import pkg_resources`,
`import jsonschema` or `from Crypto.Cipher import ARC4` gets the real module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
import types
from pathlib import Path


def _unicorn_standins() -> dict[str, types.ModuleType]:
    def resource_filename(package: str, name: str) -> str:
        spec = importlib.util.find_spec(package)
        base = Path(spec.origin).parent if spec and spec.origin else Path()
        return str(base / name)

    pkg_resources = types.ModuleType("pkg_resources")
    pkg_resources.resource_filename = resource_filename
    distutils_sysconfig = types.ModuleType("distutils.sysconfig")
    distutils_sysconfig.get_python_lib = lambda *args, **kwargs: sysconfig.get_paths()["purelib"]
    distutils = types.ModuleType("distutils")
    distutils.sysconfig = distutils_sysconfig
    return {
        "pkg_resources": pkg_resources,
        "distutils": distutils,
        "distutils.sysconfig": distutils_sysconfig,
    }


class _LazyModule(types.ModuleType):
    """Stands for a module until an attribute is read, then imports the real one and answers from it."""

    def __getattr__(self, attribute: str):
        if sys.modules.get(self.__name__) is self:  # still standing in: nothing real to ask yet
            raise AttributeError(attribute)
        return getattr(importlib.import_module(self.__name__), attribute)


def _speakeasy_standins() -> dict[str, types.ModuleType]:
    package = _LazyModule("jsonschema")
    package.__path__ = []  # a package, so that `import jsonschema.exceptions` binds the submodule
    exceptions = _LazyModule("jsonschema.exceptions")
    package.exceptions = exceptions
    # `from Crypto.Cipher import ARC4` (advapi32's CryptEncrypt/CryptDecrypt) gets the stand-in from
    # sys.modules; Crypto.Cipher itself is imported for real.
    return {
        "jsonschema": package,
        "jsonschema.exceptions": exceptions,
        "Crypto.Cipher.ARC4": _LazyModule("Crypto.Cipher.ARC4"),
    }


def _import_with(standins: dict[str, types.ModuleType], name: str) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    added = {n: module for n, module in standins.items() if n not in sys.modules}
    sys.modules.update(added)
    try:
        module = importlib.import_module(name)
    finally:
        for n, module_ in added.items():
            if sys.modules.get(n) is module_:
                del sys.modules[n]
    return module


def load_unicorn() -> types.ModuleType:
    """Import and return `unicorn` (a no-op when it is already imported)."""
    return _import_with(_unicorn_standins(), "unicorn")


def load_speakeasy() -> types.ModuleType:
    """Import and return `speakeasy` (and unicorn first, see above)."""
    load_unicorn()
    return _import_with(_speakeasy_standins(), "speakeasy")


load_speakeasy()
