"""Python side of the native block recorder (`_blockrec.c`): installs the C hook into a unicorn engine."""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn and speakeasy)

import ctypes
import importlib.util

import numpy as np

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
import unicorn
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE
from unicorn import unicorn as _uc_module

from runtrace.trace.disasm import instruction_lengths

STOPPED_INSTRUCTION_CAP = 1
STOPPED_BY_CALLBACK = 2
STOPPED_OUT_OF_MEMORY = 3
STOPPED_TIMEOUT = 4
STOPPED_RUN_BUDGET = 5

_NEW_BLOCK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32)
_ON_CODE = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint32)


def _load_library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("runtrace.trace.emulate._blockrec")
    if spec is None or spec.origin is None:
        raise ImportError("the native block recorder is not built; run `make install` (or pip install -e .)")
    lib = ctypes.CDLL(spec.origin)
    lib.rec_new.restype = ctypes.c_void_p
    lib.rec_new.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p]
    lib.rec_free.argtypes = [ctypes.c_void_p]
    lib.rec_nvisits.restype = ctypes.c_size_t
    lib.rec_nvisits.argtypes = [ctypes.c_void_p]
    lib.rec_visits.restype = ctypes.POINTER(ctypes.c_uint32)
    lib.rec_visits.argtypes = [ctypes.c_void_p]
    lib.rec_insn_total.restype = ctypes.c_uint64
    lib.rec_insn_total.argtypes = [ctypes.c_void_p]
    lib.rec_stopped.restype = ctypes.c_int
    lib.rec_stopped.argtypes = [ctypes.c_void_p]
    lib.rec_set_stopped.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rec_set_code_hook.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.rec_set_run_cap.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    return lib


_LIB: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        _LIB = _load_library()
    return _LIB


class BlockRecorder:
    """Records every executed translation block of one unicorn engine.

    Blocks get ids in order of first execution; `raw_blocks[i]` is (address, bytes) of block i.  The
    instruction cap is enforced in C, at block granularity (a trace may overshoot by one block).
    """

    def __init__(self, uc: unicorn.Uc, bits: int, max_instructions: int) -> None:
        self.uc = uc
        self.bits = bits
        self.raw_blocks: list[tuple[int, bytes]] = []
        self._ids: dict[tuple[int, int], int] = {}
        self._callback = _NEW_BLOCK(self._on_new_block)  # kept alive as long as the recorder
        lib = _lib()
        stop = ctypes.cast(_uc_module._uc.uc_emu_stop, ctypes.c_void_p)
        self._rec = lib.rec_new(max(0, max_instructions), stop, ctypes.cast(self._callback, ctypes.c_void_p))
        if not self._rec:
            raise MemoryError("cannot allocate the block recorder")
        self._add_native_hook(UC_HOOK_BLOCK, lib.rec_hook)
        self._code_callback = None

    def _add_native_hook(self, kind: int, function) -> None:
        handle = ctypes.c_size_t()
        err = _uc_module._uc.uc_hook_add(
            self.uc._uch, ctypes.byref(handle), kind, ctypes.cast(function, ctypes.c_void_p),
            ctypes.c_void_p(self._rec), ctypes.c_uint64(1), ctypes.c_uint64(0),
        )  # fmt: skip
        if err != unicorn.UC_ERR_OK:
            raise unicorn.UcError(err)

    def install_code_hook(self, callback) -> GatedCodeHook:
        """A per-instruction hook calling `callback(address, size)` only while enabled (gate in C)."""
        if self._code_callback is None:
            self._code_callback = _ON_CODE(callback)
            _lib().rec_set_code_hook(self._rec, ctypes.cast(self._code_callback, ctypes.c_void_p), 0)
            self._add_native_hook(UC_HOOK_CODE, _lib().rec_code_hook)
        return GatedCodeHook(self)

    def set_code_hook_enabled(self, enabled: bool) -> None:
        _lib().rec_set_code_hook(self._rec, None, int(enabled))

    def _on_new_block(self, address: int, size: int) -> int:
        # Called from C the first time a (address, size) block runs; must never raise into C.
        try:
            data = bytes(self.uc.mem_read(address, size))
            n = len(instruction_lengths(data, address, self.bits)) or 1
            block_id = len(self.raw_blocks)
            self.raw_blocks.append((address, data))
            return (block_id << 16) | min(n, 0xFFFF)
        except Exception:
            return -1

    @property
    def visit_count(self) -> int:
        return int(_lib().rec_nvisits(self._rec))

    @property
    def instruction_count(self) -> int:
        return int(_lib().rec_insn_total(self._rec))

    @property
    def stopped(self) -> int:
        return int(_lib().rec_stopped(self._rec))

    def request_stop(self, why: int) -> None:
        """Thread-safe: mark the recorder stopped and stop the engine (used by the timeout watchdog)."""
        _lib().rec_set_stopped(self._rec, why)
        self.uc.emu_stop()

    def set_run_budget(self, instructions: int) -> None:
        """Stop the engine (`stopped` = STOPPED_RUN_BUDGET) once the run starting now has executed
        this many instructions (0: no budget); lifts a budget stop of the previous run."""
        cap = self.instruction_count + instructions if instructions > 0 else 0
        _lib().rec_set_run_cap(self._rec, cap)

    def visits(self) -> np.ndarray:
        n = self.visit_count
        if n == 0:
            return np.zeros(0, dtype=np.uint32)
        return np.ctypeslib.as_array(_lib().rec_visits(self._rec), shape=(n,)).copy()

    def close(self) -> None:
        if self._rec:
            _lib().rec_free(self._rec)
            self._rec = None


class GatedCodeHook:
    """Stands in for Speakeasy's temporary code hook object (it calls enable/disable on it)."""

    def __init__(self, recorder: BlockRecorder) -> None:
        self.recorder = recorder
        self.enabled = False
        self.added = True

    def enable(self) -> None:
        self.enabled = True
        self.recorder.set_code_hook_enabled(True)

    def disable(self) -> None:
        self.enabled = False
        self.recorder.set_code_hook_enabled(False)
