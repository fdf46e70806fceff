"""Producing and reading run traces: one `Trace` model, one backend per source."""

from runtrace.trace.model import ApiCall, Arch, BasicBlock, EntryPoint, StopReason, Trace, TraceMeta

__all__ = ["ApiCall", "Arch", "BasicBlock", "EntryPoint", "StopReason", "Trace", "TraceMeta"]
