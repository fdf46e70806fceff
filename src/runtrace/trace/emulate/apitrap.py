"""API calls without remapping memory: Speakeasy's reserved region stays mapped and a code hook traps it.

Speakeasy points every import, every GetProcAddress'ed function and its return hooks at addresses in
a reserved region that it keeps unmapped: a call there fails to fetch, and its handler for invalid
memory answers the API.  It then maps the region (so that unicorn's retried fetch succeeds) and unmaps
it again at the next instruction.  Mapping and unmapping unicorn memory flushes its translated code, so
every API call also cost a new translation of the code around it: about 1 ms a call in a tight loop.

Here the region is mapped once, execute-only and filled with `ret`, and a code hook bounded to it
(unicorn only places it in blocks translated from the region, so it costs nothing elsewhere) hands each
trapped address to Speakeasy's own dispatch before the instruction runs.  A program that reads or
writes the region (an imported variable Speakeasy does not know points there) gets what Speakeasy gave
it: the region readable and zeroed for that one instruction.

Returning is the other half of the cost.  Speakeasy returns from an API by writing the program
counter, and unicorn 1 answers a program counter written from a hook by leaving and re-entering its
execution loop (about 55 us).  When the API simply returns to its caller, the trap instead leaves the
return to the `ret` under it: the return address is moved above the arguments the callee pops (x86
stdcall), the stack pointer set, the result written, and the CPU's own `ret` returns.  Everything else
(callbacks, exceptions, the end of a run) still moves the program counter as Speakeasy does; an address
nothing takes ends the run with Speakeasy's `invalid_fetch` error, as before.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn and speakeasy)

import ctypes
import struct

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
from speakeasy.windows.common import EMU_RESERVE_SIZE, EMU_RESERVED
from speakeasy.winenv import arch as se_arch
from unicorn import (
    UC_HOOK_CODE,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_PROT,
    UC_MEM_WRITE_PROT,
    UcError,
    x86_const,
)
from unicorn import UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE
from unicorn import unicorn as _uc_module

_RET = b"\xc3"
_SPEAKEASY = object()  # an import left to Speakeasy's full dispatch
# Registers the binding reads into a structure, not a 64-bit integer.
_STRUCTURED = frozenset(
    [x86_const.UC_X86_REG_IDTR, x86_const.UC_X86_REG_GDTR, x86_const.UC_X86_REG_LDTR, x86_const.UC_X86_REG_TR,
     x86_const.UC_X86_REG_MSR]
    + list(range(x86_const.UC_X86_REG_FP0, x86_const.UC_X86_REG_FP0 + 8))
    + list(range(x86_const.UC_X86_REG_XMM0, x86_const.UC_X86_REG_XMM0 + 8))
    + list(range(x86_const.UC_X86_REG_YMM0, x86_const.UC_X86_REG_YMM0 + 16))
)  # fmt: skip


class ApiTraps:
    """`progress.value` is a count that moves whenever the program runs an instruction (the recorder's
    instruction counter)."""

    def __init__(self, emu, progress: ctypes.c_uint64) -> None:
        self.emu = emu
        _fast_register_reads(emu.emu_eng)
        self.trapped = 0
        # Speakeasy's own answer to a fetch it does not recognise maps a page there, which the mapped
        # region refuses: those addresses end the run here instead.
        self._speakeasy_fetch = emu._handle_invalid_fetch
        emu._handle_invalid_fetch = self._fetch
        emu._set_emu_hooks = self._keep_mapped  # Speakeasy unmaps the region at each run's start...
        emu._unset_emu_hooks = lambda: None  # ...and after every API call maps it again
        self._mapped = False
        self._open_for_data: int | None = None  # the instruction that opened the region to data
        self._speakeasy_invalid_memory = emu._hook_mem_unmapped  # registered by Speakeasy at its start
        emu._hook_mem_unmapped = self._invalid_memory
        self._speakeasy_return = emu.do_call_return
        emu.do_call_return = self._call_return
        self.uc, self.ptr = emu.emu_eng.emu, emu.get_ptr_size()
        x86 = self.ptr == 4
        self._sp = x86_const.UC_X86_REG_ESP if x86 else x86_const.UC_X86_REG_RSP
        self._pc = x86_const.UC_X86_REG_EIP if x86 else x86_const.UC_X86_REG_RIP
        self._result = x86_const.UC_X86_REG_EAX if x86 else x86_const.UC_X86_REG_RAX
        self._mask = (1 << (8 * self.ptr)) - 1
        self._native = _NativeAccess(self.uc, x86)
        self._trapped_at: int | None = None  # the trap being answered
        self._progress = progress
        self._arranged: tuple[int, int, int] | None = None  # (address, stack pointer, progress) of a return
        self._plans: dict[tuple[str, str], object] = {}  # (dll, name) -> its handler, or _SPEAKEASY
        self._verified: tuple[int, int] | None = None  # (stack pointer, the return address there)
        self._cache_api_hooks()
        self._returning = False  # its `ret` will return to the caller

    def _cache_api_hooks(self) -> None:
        # Speakeasy looks up API hooks by matching every registered pattern (fnmatch) on every call:
        # about a fifth of a call's cost.  The answer depends only on the name and the hooks
        # registered, which change only when one is added.
        emu = self.emu
        get_hooks, add_hook, found = emu.get_api_hooks, emu.add_api_hook, {}

        def get_api_hooks(mod_name, func_name):
            key = (mod_name.lower(), func_name.lower())
            hooks = found.get(key)
            if hooks is None:
                hooks = found[key] = get_hooks(mod_name, func_name)
            return hooks

        def add_api_hook(*args, **kwargs):
            found.clear()
            self._plans.clear()
            return add_hook(*args, **kwargs)

        emu.get_api_hooks, emu.add_api_hook = get_api_hooks, add_api_hook

    def _keep_mapped(self) -> None:
        """Speakeasy's `_set_emu_hooks`, called when a run starts and at the instruction after an API
        call: here it maps the region once, and closes it to data again after an access."""
        emu, engine = self.emu, self.emu.emu_eng
        if not self._mapped:
            if emu.emu_hooks_set:  # Speakeasy unmapped it already
                emu.emu_hooks_set = False
            else:
                engine.mem_unmap(EMU_RESERVED, EMU_RESERVE_SIZE)
            engine.emu.mem_map(EMU_RESERVED, EMU_RESERVE_SIZE, UC_PROT_EXEC)  # unicorn's: Speakeasy has none
            engine.mem_write(EMU_RESERVED, _RET * EMU_RESERVE_SIZE)
            engine.emu.hook_add(
                UC_HOOK_CODE, self._trap, begin=EMU_RESERVED, end=EMU_RESERVED + EMU_RESERVE_SIZE - 1
            )
            self._mapped = True
        elif self._open_for_data is not None:
            if emu.get_pc() == self._open_for_data:
                # Changing the protection makes unicorn run the accessing instruction again, hooks and
                # all: the region closes at the instruction after it.
                emu.enable_code_hook()
                return
            engine.mem_write(EMU_RESERVED, _RET * EMU_RESERVE_SIZE)
            engine.emu.mem_protect(EMU_RESERVED, EMU_RESERVE_SIZE, UC_PROT_EXEC)
            self._open_for_data = None

    def _invalid_memory(self, emu, access, address, size, value, ctx):
        if (
            access in (UC_MEM_READ_PROT, UC_MEM_WRITE_PROT)
            and EMU_RESERVED <= address < EMU_RESERVED + EMU_RESERVE_SIZE
        ):
            engine = emu.emu_eng
            engine.emu.mem_protect(EMU_RESERVED, EMU_RESERVE_SIZE, UC_PROT_READ | UC_PROT_WRITE)
            engine.mem_write(EMU_RESERVED, bytes(EMU_RESERVE_SIZE))
            self._open_for_data = emu.get_pc()
            emu.enable_code_hook()  # its next call of `_set_emu_hooks` closes the region again
            return True
        return self._speakeasy_invalid_memory(emu, access, address, size, value, ctx)

    def _trap(self, uc, address: int, size: int, user_data) -> None:
        emu = self.emu
        arranged = self._arranged
        if (
            arranged
            and arranged[0] == address
            and arranged[1:] == (self._native.read_sp(), self._progress.value)
        ):
            # unicorn runs an instruction's hooks again when the handler changed memory protection (its
            # block is translated anew): the API was answered and its return arranged already.
            return
        self.trapped += 1
        self._trapped_at, self._returning = address, False
        try:
            imported = self._import_at(address)
            plan = None if imported is None else self._plans.get(imported)
            if plan is None and imported is not None:
                plan = self._plans[imported] = self._plan(*imported)
            if plan is not None and plan is not _SPEAKEASY:
                # The common case, straight to the handler: what Speakeasy's handler for invalid
                # memory does first, then its answer for an import.
                emu.prev_pc = address
                self._call_handler(plan)
                if self._returning:
                    self._arranged = (address, self._native.read_sp(), self._progress.value)
                # Speakeasy's per-instruction hook runs at the next instruction only when it has work
                # there (an API that raised an exception, pages to unmap, ...).
                if self._pending(emu):
                    emu.enable_code_hook()
                elif emu.tmp_code_hook.enabled:
                    emu.disable_code_hook()
                return
            emu.prev_pc = address
            emu.enable_code_hook()
            if imported is not None:
                emu.handle_import_func(*imported)  # runtrace's wrapper: stubs, hooks and all
            else:
                emu._hook_mem_unmapped(emu, UC_MEM_FETCH_UNMAPPED, address, size, 0, None)
            if self._returning:
                self._arranged = (address, self._native.read_sp(), self._progress.value)
                if not self._pending(emu):
                    # Speakeasy's per-instruction hook at the return address would only switch
                    # itself off again.
                    emu.disable_code_hook()
                return
            if emu.get_pc() != address:
                return
            # Speakeasy leaves the rest to its per-instruction hook at the retried fetch, which is this
            # instruction: the end of a run (its return hook, or an API that ended it) starts the next.
            emu._hook_code(emu, address, size, {})
            if emu.get_pc() == address and not emu.run_complete:
                emu.curr_run.error = emu.get_error_info("invalid_fetch", address)
                emu.on_run_complete()
        except Exception as e:  # never raise into unicorn
            emu.curr_run.error = emu.get_error_info(f"API dispatch failed: {type(e).__name__}: {e}", address)
            emu.on_run_complete()
        finally:
            self._trapped_at = None

    def _call_handler(self, plan) -> None:
        """Speakeasy's `handle_import_func` for an API it has a handler for and no hook: the same steps,
        with the handler looked up once per name, the registers read in one call and the return
        address and stack arguments in another.  (Not its report of calls from memory the program
        allocated: runtrace writes no Speakeasy report.)"""
        emu = self.emu
        mod, func, argc, conv, imp_api, layout = plan
        native = self._native
        opc = self._trapped_at
        if layout is None:  # floating-point arguments: Speakeasy reads them
            sp = native.read_sp()
            oret = native.read_pointer(sp)
            argv = emu.get_func_argv(conv, argc)
        else:
            sp, oret, argv = native.arguments(layout)
        emu.hammer.handle_import_func(imp_api, conv, argc)
        rv = emu.api.call_api_func(mod, func, argv, ctx={"func_name": imp_api})
        sp_after, pc_after = native.read_sp_pc()
        ret = oret if sp_after == sp else native.read_pointer(sp_after)
        emu.log_api(oret, imp_api, rv, argv)
        if not emu.run_complete and ret == oret and pc_after == opc:
            if conv == se_arch.CALL_CONV_FLOAT or self._returning:
                self._verified = (sp_after, ret)
                emu.do_call_return(argc, ret, rv, conv=conv)
            else:
                self._return_by_ret(sp_after, ret, _popped_by_callee(argc, conv, self.ptr), rv)
        run = emu.get_current_run()
        if run and run.get_api_count() > emu.max_api_count:
            run.error["type"] = "max_api_count"
            run.error["count"] = emu.max_api_count
            run.error["pc"] = hex(emu.get_pc())
            run.error["last_api"] = imp_api
            emu.on_run_complete()

    def _plan(self, dll: str, name: str):
        emu = self.emu
        mod, attrs = emu.api.get_export_func_handler(dll, name)
        if not attrs:
            mod, attrs = emu.normalize_import_miss(dll, name)
        if not attrs or emu.get_api_hooks(dll, name):
            return _SPEAKEASY
        handler_name, func, argc, conv, _ordinal = attrs
        if name.startswith("ordinal_"):
            name = handler_name
        layout = None if conv == se_arch.CALL_CONV_FLOAT else self._native.layout(argc, conv)
        return mod, func, argc, conv, f"{dll}.{name}", layout

    def _import_at(self, address: int) -> tuple[str, str] | None:
        emu = self.emu
        if emu.curr_mod is None:
            emu.curr_mod = emu.get_module_from_addr(emu.get_pc())
        if emu.curr_mod is None:
            return None
        return emu.curr_mod.import_table.get(address)

    @staticmethod
    def _pending(emu) -> bool:
        """Whether Speakeasy's per-instruction hook has work at the next instruction: an exception a
        handler raised, pages to unmap, imported data to fill in, a run to restart or end."""
        return bool(
            emu.curr_exception_code
            or emu.tmp_maps
            or emu.impdata_queue
            or emu.restart_curr_run
            or emu.run_complete
            or emu.max_instructions != -1
        )

    def _call_return(self, argc, ret_addr=None, ret_value=None, conv=None):
        """Speakeasy's `do_call_return`, by the `ret` under the trap when the API returns to its caller."""
        if self._trapped_at is None or self._returning or not ret_addr or conv == se_arch.CALL_CONV_FLOAT:
            return self._speakeasy_return(argc, ret_addr, ret_value, conv)
        sp, pc = self._native.read_sp_pc()
        # Only a return to the address the call pushed, from where the trap left the program counter.
        verified, self._verified = self._verified, None
        pushed = ret_addr if verified == (sp, ret_addr) else self._native.read_pointer(sp)
        if pushed != ret_addr or pc != self._trapped_at:
            return self._speakeasy_return(argc, ret_addr, ret_value, conv)
        self._return_by_ret(sp, pushed, _popped_by_callee(argc, conv, self.ptr), ret_value)

    def _return_by_ret(self, sp: int, ret: int, popped: int, value: int | None) -> None:
        """Leave the return to the `ret` under the trap: the return address moved above the `popped`
        argument slots, the stack pointer set there, the result written."""
        if popped:
            sp += self.ptr * popped
            self.uc.mem_write(sp, ret.to_bytes(self.ptr, "little"))
        self._native.write_sp_result(sp if popped else None, None if value is None else value & self._mask)
        self._returning = True

    def _fetch(self, uc, address: int, size: int, value: int, ctx) -> bool:
        if EMU_RESERVED <= address < EMU_RESERVED + EMU_RESERVE_SIZE and not self._known(address):
            emu = self.emu
            emu.curr_run.error = emu.get_error_info("invalid_fetch", address)
            emu.on_run_complete()
            return True
        return self._speakeasy_fetch(uc, address, size, value, ctx)

    def _known(self, address: int) -> bool:
        """Whether Speakeasy's fetch handler answers this address (it maps a page for any other)."""
        emu = self.emu
        if address in (emu.return_hook, emu.exit_hook) or self._import_at(address) is not None:
            return True
        return any(a == address for a, _, _ in emu.dyn_imps) or any(a == address for a, _, _ in emu.callbacks)


def _popped_by_callee(argc: int, conv, ptr: int) -> int:
    """Argument slots the callee removes from the stack, as Speakeasy's `clean_stack_args` counts them."""
    if ptr == 8 or conv == se_arch.CALL_CONV_CDECL:
        return 0
    if conv == se_arch.CALL_CONV_FASTCALL:
        return argc - 2 if argc > 2 else 0
    return argc


def _fast_register_reads(engine) -> None:
    """Reads of the general registers without the unicorn binding's per-call checks.

    An API call reads about ten registers (arguments, stack pointer, return address); the binding
    tests each id against the x86 special registers (building `range` objects to do it) and allocates
    a ctypes integer, three times the cost of the read itself.  Speakeasy reads only through its
    engine's register map, so the ids it can ask for are known: those go straight to `uc_reg_read`.
    """
    uc = engine.emu
    handle, value = uc._uch, ctypes.c_uint64(0)
    out = ctypes.byref(value)
    read, plain = _uc_module._uc.uc_reg_read, frozenset(engine.regs.values()) - _STRUCTURED
    by_id = type(uc).reg_read

    def reg_read(reg_id, opt=None):
        if reg_id not in plain or opt is not None:
            return by_id(uc, reg_id, opt)
        status = read(handle, reg_id, out)
        if status:
            raise UcError(status)
        return value.value

    uc.reg_read = reg_read


class _NativeAccess:
    """The registers and stack words an API call needs, each group in one call into unicorn.

    The binding's `reg_read` checks each id against the special registers and allocates a ctypes
    integer; an API call reads about ten registers and words.  Here the stack pointer, program
    counter and argument registers come in one `uc_reg_read_batch`, and the return address with the
    stack arguments in one `uc_mem_read`.
    """

    def __init__(self, uc, x86: bool) -> None:
        c = x86_const
        self.ptr = 4 if x86 else 8
        regs = (
            [c.UC_X86_REG_ESP, c.UC_X86_REG_EIP, c.UC_X86_REG_ECX, c.UC_X86_REG_EDX]
            if x86
            else [c.UC_X86_REG_RSP, c.UC_X86_REG_RIP, c.UC_X86_REG_RCX, c.UC_X86_REG_RDX, c.UC_X86_REG_R8,
                  c.UC_X86_REG_R9]
        )  # fmt: skip
        self._handle, lib = uc._uch, _uc_module._uc
        self._read_batch, self._write_batch = lib.uc_reg_read_batch, lib.uc_reg_write_batch
        self._mem_read, self._reg_read = lib.uc_mem_read, lib.uc_reg_read
        self._ids = (ctypes.c_int * len(regs))(*regs)
        self._values = (ctypes.c_uint64 * len(regs))()
        self._pointers = (ctypes.c_void_p * len(regs))(
            *(ctypes.addressof(self._values) + 8 * i for i in range(len(regs)))
        )
        self._n = len(regs)
        self._sp_id, self._result_id = regs[0], c.UC_X86_REG_EAX if x86 else c.UC_X86_REG_RAX
        self._one = ctypes.c_uint64()
        self._one_ref = ctypes.byref(self._one)
        self._buffer = ctypes.create_string_buffer(8 * 64)
        self._word = struct.Struct("<I" if x86 else "<Q")
        self._write, self._w_ids = lib.uc_reg_write, (ctypes.c_int * 2)(self._sp_id, self._result_id)
        self._w_values = (ctypes.c_uint64 * 2)()
        self._w_pointers = (ctypes.c_void_p * 2)(
            ctypes.addressof(self._w_values), ctypes.addressof(self._w_values) + 8
        )

    def layout(self, argc: int, conv) -> tuple[int, int, struct.Struct]:
        """How a call's arguments are found: (arguments in registers, offset of the first stack argument
        from the return address, format of the return address and the stack arguments)."""
        if self.ptr == 8:
            in_registers, skip = min(argc, 4), 4
        elif conv == se_arch.CALL_CONV_FASTCALL:
            in_registers, skip = min(argc, 2), 0
        else:
            in_registers, skip = 0, 0
        on_stack = argc - in_registers
        word = "I" if self.ptr == 4 else "Q"
        fmt = struct.Struct(f"<{word}{skip * 'x' * self.ptr}{on_stack * word}")
        return in_registers, fmt.size, fmt

    def _check(self, status: int) -> None:
        if status:
            raise UcError(status)

    def arguments(self, layout) -> tuple[int, int, list[int]]:
        """(stack pointer, return address, arguments) of a call trapped at its callee's first instruction."""
        in_registers, size, fmt = layout
        self._check(self._read_batch(self._handle, self._ids, self._pointers, self._n))
        values = self._values
        sp = values[0]
        self._check(self._mem_read(self._handle, ctypes.c_uint64(sp), self._buffer, size))
        words = fmt.unpack_from(self._buffer)
        return sp, words[0], [*values[2 : 2 + in_registers], *words[1:]]

    def read_sp(self) -> int:
        self._check(self._reg_read(self._handle, self._sp_id, self._one_ref))
        return self._one.value

    def read_sp_pc(self) -> tuple[int, int]:
        self._check(self._read_batch(self._handle, self._ids, self._pointers, 2))
        return self._values[0], self._values[1]

    def read_pointer(self, address: int) -> int:
        self._check(self._mem_read(self._handle, ctypes.c_uint64(address), self._buffer, self.ptr))
        return self._word.unpack_from(self._buffer)[0]

    def write_sp_result(self, sp: int | None, result: int | None) -> None:
        """Set the stack pointer and the result register (either may be None: left as it is)."""
        if sp is not None and result is not None:
            self._w_values[0], self._w_values[1] = sp, result
            self._check(self._write_batch(self._handle, self._w_ids, self._w_pointers, 2))
        elif sp is not None or result is not None:
            self._one.value = sp if sp is not None else result
            self._check(
                self._write(self._handle, self._sp_id if sp is not None else self._result_id, self._one_ref)
            )
