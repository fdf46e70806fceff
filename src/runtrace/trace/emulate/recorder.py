"""Python side of the native block recorder (`_blockrec.c`): installs the C hook into a unicorn engine."""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn and speakeasy)

import ctypes
import importlib.util
from collections.abc import Callable

import numpy as np

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
import unicorn
from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE
from unicorn import unicorn as _uc_module

from runtrace.trace.disasm import executed_code
from runtrace.errors import SetupError
from runtrace.trace.emulate import hostmem

STOPPED_INSTRUCTION_CAP = 1
STOPPED_BY_CALLBACK = 2
STOPPED_OUT_OF_MEMORY = 3
STOPPED_TIMEOUT = 4
STOPPED_RUN_BUDGET = 5
_VOLATILE = 1 << 48  # with a block id: its memory may be rewritten, so C checks its bytes at every visit
_IGNORED = -2

_NEW_BLOCK = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32)
_PREFIX = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_uint32, ctypes.c_uint32)
_ON_CODE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32)


def _load_library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("runtrace.trace.emulate._blockrec")
    if spec is None or spec.origin is None:
        raise SetupError("the native block recorder is not built; run `make install` (or pip install -e .)")
    lib = ctypes.CDLL(spec.origin)
    lib.rec_new.restype = ctypes.c_void_p
    lib.rec_new.argtypes = [ctypes.c_uint64] + [ctypes.c_void_p] * 5
    lib.rec_free.argtypes = [ctypes.c_void_p]
    lib.rec_nvisits.restype = ctypes.c_size_t
    lib.rec_nvisits.argtypes = [ctypes.c_void_p]
    lib.rec_visits.restype = ctypes.POINTER(ctypes.c_uint32)
    lib.rec_visits.argtypes = [ctypes.c_void_p]
    lib.rec_insn_total.restype = ctypes.c_uint64
    lib.rec_insn_total.argtypes = [ctypes.c_void_p]
    lib.rec_nvisits_at.restype = ctypes.c_void_p
    lib.rec_nvisits_at.argtypes = [ctypes.c_void_p]
    lib.rec_insn_total_at.restype = ctypes.c_void_p
    lib.rec_insn_total_at.argtypes = [ctypes.c_void_p]
    lib.rec_orphans.restype = ctypes.c_uint64
    lib.rec_orphans.argtypes = [ctypes.c_void_p]
    lib.rec_truncated.restype = ctypes.c_uint64
    lib.rec_truncated.argtypes = [ctypes.c_void_p]
    lib.rec_rewritten.restype = ctypes.c_uint64
    lib.rec_rewritten.argtypes = [ctypes.c_void_p]
    lib.rec_finish.argtypes = [ctypes.c_void_p]
    lib.rec_stopped.restype = ctypes.c_int
    lib.rec_stopped.argtypes = [ctypes.c_void_p]
    lib.rec_set_stopped.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rec_set_code_hook.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.rec_set_run_cap.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.rec_region_add.restype = ctypes.c_int
    lib.rec_region_add.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p]
    lib.rec_region_remove.restype = ctypes.c_int
    lib.rec_region_remove.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
    return lib


_LIB: ctypes.CDLL | None = None


def require_built() -> None:
    """Raises SetupError when the native recorder cannot be loaded (checked once per process)."""
    _lib()


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        _LIB = _load_library()
    return _LIB


class BlockRecorder:
    """Records what one unicorn engine executes, as a sequence of visits of raw blocks.

    Raw blocks are unicorn's translation blocks, parts of them where execution left a block part way,
    and single instructions of blocks unicorn did not report (`_blockrec.c` says when that happens);
    `blocks.canonicalize` merges them into basic blocks.  Blocks get ids in order of first execution;
    `raw_blocks[i]` is (address, bytes) of block i, `raw_code[i]` its instruction lengths and last
    mnemonic.  Code for which `foreign(address)` is true (the emulator's own trampolines) is never
    recorded.  Code for which `fixed(address, size)` is true cannot change (a read-only code section);
    any other block's bytes are checked at every visit, so code rewritten in place is recorded as it
    ran.  The instruction cap is enforced in C, at block granularity (a trace may overshoot by one
    block).
    """

    def __init__(
        self,
        uc: unicorn.Uc,
        bits: int,
        max_instructions: int,
        foreign: Callable[[int], bool] | None = None,
        fixed: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.uc = uc
        self.bits = bits
        self.foreign = foreign
        self.fixed = fixed
        self.raw_blocks: list[tuple[int, bytes]] = []
        self._buffer = ctypes.create_string_buffer(0x1000)  # new blocks' bytes are read into it
        # Per raw block, its instruction lengths and last mnemonic (`disasm.executed_code`), decoded once
        # here and reused by `blocks.canonicalize`.
        self.raw_code: list[tuple[tuple[int, ...], str | None]] = []
        self._ids: dict[tuple[int, bytes], int] = {}
        # Kept alive as long as the recorder: C calls them.
        self._callback = _NEW_BLOCK(self._on_new_block)
        self._prefix_callback = _PREFIX(self._on_prefix)
        lib = _lib()
        self._rec = lib.rec_new(
            max(0, max_instructions),
            uc._uch,
            ctypes.cast(_uc_module._uc.uc_emu_stop, ctypes.c_void_p),
            ctypes.cast(_uc_module._uc.uc_mem_read, ctypes.c_void_p),
            ctypes.cast(self._callback, ctypes.c_void_p),
            ctypes.cast(self._prefix_callback, ctypes.c_void_p),
        )
        if not self._rec:
            raise MemoryError("cannot allocate the block recorder")
        hostmem.attach(uc, self._rec)  # where the engine's memory is, for the checks of writable code
        # Both hooks, always: the code hook is what finds the instructions of blocks unicorn did not
        # report and the blocks execution left part way.
        self._add_native_hook(UC_HOOK_BLOCK, lib.rec_hook)
        self._add_native_hook(UC_HOOK_CODE, lib.rec_code_hook)
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
        """A per-instruction hook calling `callback(address, size)` only while enabled (gate in C).

        The callback returns True when it moved the program counter away (the instruction does not
        run, so it is not recorded)."""
        if self._code_callback is None:
            self._code_callback = _ON_CODE(callback)
            _lib().rec_set_code_hook(self._rec, ctypes.cast(self._code_callback, ctypes.c_void_p), 0)
        return GatedCodeHook(self)

    def set_code_hook_enabled(self, enabled: bool) -> None:
        _lib().rec_set_code_hook(self._rec, None, int(enabled))

    def _on_new_block(self, address: int, size: int) -> int:
        # Called from C for a block (address, size) not seen before, or a volatile one whose bytes
        # changed; must never raise into C.
        try:
            if self.foreign is not None and self.foreign(address):
                return _IGNORED
            data = self._read(address, size)
            packed = self._raw_block(address, data)
            if self.fixed is None or not self.fixed(address, size):
                packed |= _VOLATILE
            return packed
        except Exception:
            return -1

    def _read(self, address: int, size: int) -> bytes:
        """`bytes(uc.mem_read(address, size))` through one buffer kept for every block: the binding's
        `mem_read` allocates and zeroes a buffer and copies it twice for each of the thousands of new
        blocks of a trace."""
        if size > len(self._buffer):
            self._buffer = ctypes.create_string_buffer(size)
        status = _uc_module._uc.uc_mem_read(self.uc._uch, ctypes.c_uint64(address), self._buffer, size)
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        return ctypes.string_at(self._buffer, size)

    def _on_prefix(self, block_id: int, size: int) -> int:
        # Called from C when execution left a block part way: the part that ran, from the bytes that
        # ran (the program may have rewritten them since, in an exception handler); never raises.
        try:
            address, data = self.raw_blocks[block_id]
            return self._raw_block(address, data[:size])
        except Exception:
            return -1

    def _raw_block(self, address: int, data: bytes) -> int:
        """(id << 16) | instruction count of the raw block, added if new."""
        key = (address, data)
        block_id = self._ids.get(key)
        if block_id is None:
            block_id = self._ids[key] = len(self.raw_blocks)
            self.raw_blocks.append(key)
            self.raw_code.append(executed_code(data, address, self.bits))
        n = len(self.raw_code[block_id][0])
        return (block_id << 16) | min(n, 0xFFFF)

    @property
    def visit_count(self) -> int:
        return int(_lib().rec_nvisits(self._rec))

    @property
    def instruction_count(self) -> int:
        return int(_lib().rec_insn_total(self._rec))

    def instruction_counter(self) -> ctypes.c_uint64:
        """The instruction count as a ctypes integer over the recorder's own: `.value` is the count now
        (as `instruction_count`, without a call into the library).  Valid until `close`."""
        return ctypes.c_uint64.from_address(_lib().rec_insn_total_at(self._rec))

    def visit_counter(self) -> ctypes.c_size_t:
        """The number of visits so far, as `instruction_counter` gives the instruction count."""
        return ctypes.c_size_t.from_address(_lib().rec_nvisits_at(self._rec))

    @property
    def orphan_instructions(self) -> int:
        """Instructions recorded one by one because unicorn ran their block without its block hook."""
        return int(_lib().rec_orphans(self._rec))

    @property
    def rewritten_visits(self) -> int:
        """Visits of blocks whose bytes had changed since the block was last seen at that address."""
        return int(_lib().rec_rewritten(self._rec))

    @property
    def truncated_visits(self) -> int:
        """Visits of blocks that execution left part way, recorded as the part that ran."""
        return int(_lib().rec_truncated(self._rec))

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
        """The visits so far; ends the recording (the last block may have been left part way)."""
        _lib().rec_finish(self._rec)
        n = self.visit_count
        if n == 0:
            return np.zeros(0, dtype=np.uint32)
        return np.ctypeslib.as_array(_lib().rec_visits(self._rec), shape=(n,)).copy()

    def close(self) -> None:
        if self._rec:
            hostmem.detach(self.uc, self._rec)
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
