"""The tracer's settings: the one place its limits and their defaults are written.

Every reader of the limits (`runtrace trace`, `corpus trace`, `scan`, `serve`, the scanner, the batch
runner and the emulator) takes them from `TracerSettings`, so a default changes here and nowhere else.
This module imports nothing heavy: command lines build their options from it without loading the
emulator (Speakeasy, unicorn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from runtrace import __version__

# Bumped whenever emulation behaviour changes, so `trace` does not reuse traces made by an older tracer,
# and `scan` can tell a model trained on another revision's traces (written here, light, for both).
TRACER_REVISION = 26
TRACER_VERSION = f"runtrace-emu/{__version__}.{TRACER_REVISION}"


@dataclass(frozen=True)
class TracerSettings:
    # 10 million since revision 23 (1 million before): unpackers and decryption loops need more.  Of
    # the 210 corpus malware runs that stopped at 1 million with fewer than 1,000 API calls, 75 pass
    # 1,000 calls by 10 million (52 by 5 million, 82 by 20 million); docs/tracer.md.
    max_instructions: int = 10_000_000
    timeout_s: float = 60.0
    memory_mb: int = 1024  # each tracer child's private memory (USS), checked by the batch runner
    max_api_calls: int = 10_000  # per entry point, as Speakeasy counts them
    # Reads and writes of unmapped memory that no SEH handler takes get a zero page and go on, up to this
    # many pages per sample, instead of ending the run (0: Speakeasy's behaviour, end the entry point).
    zero_pages: int = 64
    # Calls through a NULL function pointer that return 0 to the caller instead of ending the run (0:
    # Speakeasy's behaviour).  The pointer is nearly always one the emulation left unset (a function
    # a stubbed API should have provided), not the program's own bug.
    null_calls: int = 16
    # Exports of a DLL run after DllMain, in export-table order, each with dummy arguments.  Speakeasy
    # runs 10; a library's behaviour is spread over its exports, and with 10 most library DLLs ended
    # below 1,000 instructions (measured: docs/tracer.md).
    max_exports: int = 64
    # Instructions each export (and each Python module's exec slot) may run before the next one starts
    # (0: none): one export stuck in a loop would otherwise take the whole instruction cap or time limit
    # from the exports after it.
    export_budget: int = 200_000

    def key(self) -> dict:
        """What decides whether an existing trace can be reused: these settings and the tracer's version."""
        return {**asdict(self), "tracer": TRACER_VERSION}


DEFAULTS = TracerSettings()
