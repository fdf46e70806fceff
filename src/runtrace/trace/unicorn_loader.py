"""Imports unicorn without pulling in setuptools.

unicorn 1.0.2's Python bindings (the release Speakeasy requires) import `pkg_resources` and
`distutils.sysconfig` only to list places their shared library might be, and the first place they try
is the `lib` folder beside their own module.  Those two imports load most of setuptools: about 0.15 s of
every `runtrace scan` process, plus a deprecation warning.  While unicorn is imported, both names are
answered by small stand-ins that give the same `lib` folder; the stand-ins are removed afterwards, so any
later `import pkg_resources` gets the real module.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
import types
from pathlib import Path

_STANDINS = ("pkg_resources", "distutils", "distutils.sysconfig")


def _standins() -> dict[str, types.ModuleType]:
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


def load() -> types.ModuleType:
    """Import and return `unicorn` (a no-op when it is already imported)."""
    if "unicorn" in sys.modules:
        return sys.modules["unicorn"]
    added = {name: module for name, module in _standins().items() if name not in sys.modules}
    sys.modules.update(added)
    try:
        import unicorn
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return unicorn


load()
