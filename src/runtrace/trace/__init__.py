"""Producing and reading run traces: one `Trace` model, one backend per source.

The model's names are re-exported lazily: `runtrace.trace.settings`, which every command line reads for
its option defaults, must not pull numpy and capstone in with the package.
"""

__all__ = ["ApiCall", "Arch", "BasicBlock", "EntryPoint", "StopReason", "Trace", "TraceMeta"]


def __getattr__(name: str):
    if name in __all__:
        from runtrace.trace import model

        return getattr(model, name)
    raise AttributeError(f"module 'runtrace.trace' has no attribute {name!r}")
