"""The emulator backend: runs a PE inside Speakeasy (Windows user-mode emulation on unicorn) and records
the executed basic blocks and API calls.  Nothing is executed natively.

Recording happens at block granularity through a native unicorn hook (recorder.py); API calls are taken
from Speakeasy's API dispatch.  An API Speakeasy has no handler for does not end the run, as it would by
default: it is stubbed (returns 0), recorded as an event and the program goes on.
"""

from __future__ import annotations  # noqa: I001  (speakeasy_loader must come before unicorn and speakeasy)

import contextlib
import dataclasses
import json
import logging
import ntpath
import threading
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

from runtrace.trace.emulate import speakeasy_loader  # noqa: F401  (first: lean imports of unicorn and speakeasy)
import speakeasy
from speakeasy.common import PERM_MEM_RW as PERM_RW
from speakeasy.errors import NotSupportedError
from speakeasy.windows import win32 as se_win32
from speakeasy.windows.common import EMU_RESERVE_SIZE, EMU_RESERVED
from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import (
    apitrap,
    behaviour,
    cxxeh32,
    decoys,
    exportargs,
    filedata,
    guardpage,
    hostmem,
    imageload,
    lookups,
    memlimits,
    memranges,
    msvcmangle,
    processes,
    pycapi,
    procdata,
    registry,
    repeatable,
    seh32,
    stack,
    startup,
    stdcallargs,
    strings,
    sysapi,
    systemdlls,
    winapi,
)
from runtrace.trace.blocks import canonicalize
from runtrace.trace.model import ApiCall, BasicBlock, EntryPoint, StopReason, Trace, TraceMeta
from runtrace.trace.settings import TRACER_VERSION, TracerSettings
from runtrace.trace.emulate.pe import inspect_pe
from runtrace.trace.emulate.recorder import (
    STOPPED_INSTRUCTION_CAP,
    STOPPED_OUT_OF_MEMORY,
    STOPPED_RUN_BUDGET,
    STOPPED_TIMEOUT,
    BlockRecorder,
)

STATUS_ACCESS_VIOLATION = 0xC0000005
PAGE = 0x1000
NULL_REGION = 0x10000  # Windows maps nothing below 64 KiB

# Runs with an instruction budget of their own (TracerSettings.export_budget).
_BUDGETED_RUNS = ("export.", "python.")
_IMAGE_SCN_MEM_EXECUTE = 0x20000000
_IMAGE_SCN_MEM_WRITE = 0x80000000
# C-runtime DLLs use cdecl on x86: the caller pops the arguments, so a stub need not know their number.
_CDECL_DLL_PREFIXES = ("msvcr", "ucrtbase", "api-ms-win-crt-", "msvcp", "vcruntime", "crtdll")


class EmulationError(RuntimeError):
    """The emulator could not start on this file (one-line reason)."""


def _speakeasy_config(settings: TracerSettings, process: startup.Process = startup.FIRST) -> dict:
    cfg = json.loads(resources.files("speakeasy").joinpath("configs/default.json").read_text())
    cfg["timeout"] = 0  # runtrace runs its own watchdog over the whole run, not per entry point
    cfg["max_api_count"] = settings.max_api_calls
    cfg["analysis"] = {"memory_tracing": False, "strings": False}
    cfg["command_line"] = process.command_line
    # Speakeasy puts the program in its current directory.  (A started program gets its own folder as
    # current directory: on Windows it would inherit its parent's.)
    cfg["current_dir"] = ntpath.dirname(process.program)
    registry.configure(cfg)
    return cfg


class _Win32Emulator(speakeasy.Win32Emulator):
    """Speakeasy's user-mode emulator with the program where its command line says it is.

    Speakeasy names a program given as bytes `<sha256>.exe` in its current directory (system32), so
    GetModuleFileName answered `C:\\Windows\\system32\\<sha256>.exe` while GetCommandLine names
    `startup.PROGRAM`; a program that opens, copies or compares its own path from one found nothing at
    the other.  The module keeps Speakeasy's name (`mod_name`, its memory tags)."""

    program = startup.PROGRAM  # a started program's own path replaces it (`_Speakeasy`)

    def _init_name(self, path, data=None):
        super()._init_name(path, data)
        if data:
            self.file_name = self.bin_base_name = ntpath.basename(self.program)

    def load_library(self, mod_name):
        """Speakeasy's, and a system DLL it has no module for loads as a decoy (`systemdlls`)."""
        module = super().load_library(mod_name)
        if module or not systemdlls.is_system_dll(mod_name):
            return module
        self.modules_always_exist = True
        try:
            return super().load_library(mod_name)
        finally:
            self.modules_always_exist = False


class _Speakeasy(speakeasy.Speakeasy):
    """Speakeasy without its per-run validation of the configuration against its JSON schema, and
    parsing the program once.

    The configuration is `_speakeasy_config`'s, fixed by runtrace; the tests validate it with Speakeasy's
    own `validate_config`.  Validating it again in every tracer process would import jsonschema there
    (see `speakeasy_loader`) for no information.

    Speakeasy parses the program to choose its emulator (user mode, or kernel mode for a driver; .NET
    refused), then parses it again to load it: 4 to 34 ms each with pefile on the scan benchmark's files.
    Here the user-mode emulator loads it, and the loaded program is asked what Speakeasy would have
    asked first; a driver is then loaded Speakeasy's own way, a .NET assembly refused with its error."""

    _chose_by_parsing = False

    def __init__(self, *args, program: str = startup.PROGRAM, **kwargs) -> None:
        self.program = program
        super().__init__(*args, **kwargs)

    def _init_config(self, config: dict) -> None:
        self.config = config

    def _init_emulator(self, path=None, data=None, is_raw_code=False) -> None:
        if data is None or is_raw_code or self._chose_by_parsing:
            super()._init_emulator(path=path, data=data, is_raw_code=is_raw_code)
            if type(self.emu) is speakeasy.Win32Emulator:  # Speakeasy's choice: the same program path
                self.emu.__class__ = _Win32Emulator
        else:
            self.emu = _Win32Emulator(config=self.config, logger=self.logger, argv=self.argv,
                                      debug=self.debug, exit_event=self.exit_event)  # fmt: skip
        self.emu.program = self.program
        if data is not None and not is_raw_code:
            stack.install(self.emu, stack.main_stack_size(data))

    def load_module(self, path=None, data=None):
        module = super().load_module(path=path, data=data)
        if data is None or self._chose_by_parsing:
            return module
        if module.is_dotnet():
            raise NotSupportedError(".NET assemblies are not currently supported")  # Speakeasy's words
        if module.is_driver():
            self._chose_by_parsing = True
            self.loaded_bins.pop()
            return super().load_module(path=path, data=data)
        return module


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("runtrace.speakeasy")
    log.propagate = False
    log.setLevel(logging.CRITICAL)
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


class _Session:
    """One emulation: Speakeasy, the recorder, and the bookkeeping patched into Speakeasy's dispatch."""

    def __init__(
        self,
        data: bytes,
        settings: TracerSettings,
        process: startup.Process = startup.FIRST,
        files: list[tuple[str, bytes]] | None = None,
        budget: tuple[int, float] | None = None,
    ) -> None:
        """`process`: the image's path and command line; `files`: (path, contents) on the emulated disk
        besides the image (what an earlier process of the run left); `budget`: the instructions and
        seconds left of the settings' (a started program runs on its parent's remainder)."""
        self.settings, self.process = settings, process
        self.budget = budget or (settings.max_instructions, settings.timeout_s)
        self.info = inspect_pe(data)
        self.bits = self.info.arch.bits
        repeatable.install()
        hostmem.install()
        decoys.install()
        imageload.install()
        lookups.install_exports()  # before the image and the decoy DLLs are mapped
        filedata.install()
        memranges.install()
        winapi.install_crt_data()
        pycapi.install_data()
        config = _speakeasy_config(settings, process)
        self.se = _Speakeasy(config=config, logger=_quiet_logger(), program=process.program)
        try:
            self.module = self.se.load_module(data=data)
        except Exception as e:  # Speakeasy raises many types for files it cannot map
            raise EmulationError(f"emulator could not load the image: {type(e).__name__}: {e}") from None
        self.emu = self.se.emu
        own = filedata.path_key(process.program)
        for path, contents in files or ():
            if filedata.path_key(path) != own:
                self.emu.fileman.add_existing_file(path, contents)
        lookups.install(self.emu)
        memlimits.install(self.emu, self.bits)
        strings.install(self.emu)
        sysapi.map_user_shared_data(self.emu, self.bits)
        self._read_only_code = self._read_only_code_ranges()
        base = self.module.get_base()
        self._image = (base, base + self.module.get_image_size())
        self.recorder = BlockRecorder(
            self.emu.emu_eng.emu,
            self.bits,
            self.budget[0],
            foreign=self._emulator_code,
            fixed=self._fixed_code,
        )
        # raw position, name, return address, supported, arguments, result (as the handler left them:
        # `typed_calls` makes them plain integers and strings once the run is over)
        self.api_calls: list[tuple[int, str, int, bool, tuple, int | None]] = []
        self.entries: list[tuple[str, int, int]] = []  # run type, address, raw first visit
        self.unsupported: dict[str, int] = {}
        self.handler_errors: dict[str, int] = {}
        self.zero_pages: list[int] = []
        self.null_calls: list[int] = []  # return addresses of calls through a NULL pointer
        self.data_exports: list[str] = []  # exports not run: they point outside executable sections
        self.traps = apitrap.ApiTraps(self.emu, self.recorder.instruction_counter())
        # amd64 exceptions go through the unwind tables (seh64.py); x86 ones through Speakeasy's SEH.
        self.seh64 = None
        if self.bits == 64:
            from runtrace.trace.emulate import seh64  # only for amd64 (its import is ~3 ms of every scan)

            self.seh64 = seh64.Seh64(self.emu)
        self._patch()
        self._patch_memory_faults()
        self._install_code_hook()
        self.host = winapi.install(self.se, self.bits, settings.max_exports, self.seh64)
        procdata.install(self.emu)
        guardpage.GuardPages(self.emu, self.seh64).install(self.se)
        if self.seh64 is None:
            seh32.install(self.se)
            cxxeh32.CxxExceptions(self.emu).install(self.se)
        if self.seh64 is not None:
            self.seh64.install()  # last: its hooks see every fault and fetch first

    def _emulator_code(self, address: int) -> bool:
        """True for code that is Speakeasy's, not the program's: its reserved region (API and return
        trampolines) and its decoy system DLLs, whose exports it answers in Python."""
        if EMU_RESERVED <= address < EMU_RESERVED + EMU_RESERVE_SIZE:
            return True
        if self._image[0] <= address < self._image[1]:
            return False  # the program's own image, where most new blocks are: no walk of the module list
        module = self.emu.get_mod_from_addr(address)
        return module is not None and module.is_decoy()

    def _read_only_code_ranges(self) -> list[tuple[int, int]]:
        base = self.module.get_base()
        return [
            (base + s.VirtualAddress, base + s.VirtualAddress + max(s.Misc_VirtualSize, s.SizeOfRawData))
            for s in self.module.sections
            if s.Characteristics & _IMAGE_SCN_MEM_EXECUTE and not s.Characteristics & _IMAGE_SCN_MEM_WRITE
        ]

    def _fixed_code(self, address: int, size: int) -> bool:
        """True for code that cannot be rewritten: inside a read-only code section of the image.  (A
        program could still make it writable with VirtualProtect; unpackers write to writable sections
        and to memory they allocate, which the recorder checks at every visit.)"""
        return any(lo <= address and address + size <= hi for lo, hi in self._read_only_code)

    def _executable(self, address: int) -> bool:
        """False for an address inside the image but outside its executable sections: a data export,
        or a forwarded one (its address is that of its "dll.name" string)."""
        base = self.module.get_base()
        if not base <= address < base + self.module.OPTIONAL_HEADER.SizeOfImage:
            return True
        return any(
            base + s.VirtualAddress
            <= address
            < base + s.VirtualAddress + max(s.Misc_VirtualSize, s.SizeOfRawData)
            for s in self.module.sections
            if s.Characteristics & _IMAGE_SCN_MEM_EXECUTE
        )

    def _patch(self) -> None:
        emu, rec = self.emu, self.recorder
        visits = rec.visit_counter()
        orig_exec_run, orig_import = emu._exec_run, emu.handle_import_func
        export_args: list[exportargs.ExportArgs] = []  # mapped at the first export

        def log_api(pc, imp_api, rv, argv):
            # Instead of Speakeasy's, which formats every call for a logger that is off and keeps a
            # copy of it for a report runtrace does not write; its per-run API limit counts them here.
            self.api_calls.append((visits.value - 1, imp_api, pc, True, argv, rv))
            emu.curr_run.num_apis += 1

        def exec_run(run):
            self.entries.append((str(run.type), run.start_addr, rec.visit_count))
            budgeted = str(run.type).startswith(_BUDGETED_RUNS)
            rec.set_run_budget(self.settings.export_budget if budgeted else 0)
            if export_args and run.args == export_args[0].values:
                export_args[0].reset()
            try:
                return orig_exec_run(run)
            except Exception as e:
                # Setting up the run failed (a TLS directory pointing nowhere, ...): Speakeasy would end
                # the whole emulation with a traceback; this run gets the error, the next one starts.
                run.error = {"type": f"run set-up failed: {type(e).__name__}: {e}", "pc": hex(run.start_addr)}
                return emu._exec_next_run()

        def handle_import_func(dll, name):
            own = self.host.own_handler(dll, name)
            if own is not None:
                return self._own_call(dll, name, *own)
            _, attrs = emu.api.get_export_func_handler(dll, name)
            if not attrs:
                _, attrs = emu.normalize_import_miss(dll, name)
            if attrs or emu.get_api_hooks(dll, name):
                return orig_import(dll, name)
            self._stub(dll, name)

        emu.log_api, emu._exec_run, emu.handle_import_func = log_api, exec_run, handle_import_func

        orig_add_run = emu.add_run

        def add_run(run):
            # An export outside the image's executable sections is data (lxml's `LxmlElementType`, a
            # type object; a DLL's exported variables): Windows never runs it, Speakeasy calls it, and
            # its bytes as code fault, eat zero pages and end the trace before the real exports run.
            if str(run.type).startswith("export.") and not self._executable(run.start_addr):
                self.data_exports.append(str(run.type)[len("export.") :])
                return None
            # Speakeasy calls every export with four pointers near 0x41420000, a gigabyte read as a size;
            # exportargs says what each export gets instead.  (ServiceMain keeps its own argc/argv.)
            if str(run.type).startswith("export.") and len(run.args) == exportargs.ARG_COUNT:
                if not export_args:
                    wide = exportargs.prefers_wide(name for _, name in self.module.imports.values())
                    export_args.append(exportargs.ExportArgs(emu, emu.get_ptr_size(), wide))
                run.args = export_args[0].values
            return orig_add_run(run)

        emu.add_run = add_run

        api, orig_call = emu.api, emu.api.call_api_func

        def call_api_func(mod, func, argv, ctx):
            # A Speakeasy handler that fails (bad pointer argument, a bug) would end the run; the program
            # gets 0 instead, as from a stub, and the failure is recorded.
            try:
                return orig_call(mod, func, argv, ctx)
            except Exception as e:
                key = f"{ctx.get('func_name', '?')}: {type(e).__name__}"
                self.handler_errors[key] = self.handler_errors.get(key, 0) + 1
                return 0

        api.call_api_func = call_api_func

        engine = emu.emu_eng
        orig_start = engine.start

        def start(addr, timeout=0, count=0):
            # The native hook stops the engine when a run's budget is spent: that run ends (as a run
            # that faulted would) and the next one starts, where Speakeasy would end the emulation.
            while True:
                result = orig_start(addr, timeout=timeout, count=count)
                if rec.stopped != STOPPED_RUN_BUDGET:
                    return result
                emu.curr_run.error = {"type": "run_budget", "pc": hex(emu.get_pc())}
                rec.set_run_budget(0)
                run = emu.on_run_complete()
                if run is None:
                    return result
                addr = run.start_addr

        engine.start = start

    def _install_code_hook(self) -> None:
        # Speakeasy turns a per-instruction Python hook on after every API call and memory fault, and
        # "off" again at the next instruction; but off only skips the work, the Python call per
        # instruction stays (most of the run time of API-heavy programs).  Its hook object is replaced by
        # one whose on/off switch lives in the native recorder.  A side effect, for the better: with a
        # code hook always registered, unicorn keeps the program counter exact per instruction, which
        # self-modifying code (unpackers) needs to be emulated faithfully.
        emu = self.emu

        def on_code(address: int, size: int) -> int:
            try:
                emu._hook_code(emu, address, size, {})
                return int(emu.get_pc() != address)  # moved away: this instruction does not run
            except Exception as e:  # never raise into C
                self.handler_errors[f"code hook: {type(e).__name__}"] = 1
                return 0

        emu.tmp_code_hook = self.recorder.install_code_hook(on_code)
        # Speakeasy also hooks the first 16 bytes of every VirtualAlloc'd buffer with a Python code hook,
        # only to list "dynamic code" in its report.  All those hooks share one context (a mutable
        # default argument), so the first to fire switches off only the latest; the others call into
        # Python at every instruction run there, for the rest of the run (7,000 calls in a million
        # instructions of one packed sample).  The tracer reads no part of that report and subscribes
        # to no dynamic-code callback, and the hook changes nothing in the emulation: it is not set.
        emu._set_dyn_code_hook = lambda address, size, ctx=None: None

    def _patch_memory_faults(self) -> None:
        emu = self.emu
        orig_read, orig_write = emu._handle_invalid_read, emu._handle_invalid_write
        reserved = (EMU_RESERVED, EMU_RESERVED + EMU_RESERVE_SIZE)

        def lenient(address: int) -> bool:
            if len(self.zero_pages) >= self.settings.zero_pages or reserved[0] <= address <= reserved[1]:
                return False
            return emu.get_mod_from_addr(address) is None  # Speakeasy maps decoy modules itself

        def above_a_stack(base: int) -> bool:
            # Speakeasy reserves, untagged and never mapped, the space above each stack it allocates;
            # its allocator will not map a page there.  Functions read there when they look for more
            # arguments than the entry point was given (Speakeasy starts them near the stack's top).
            return any(r.tag is None and r.base <= base < r.base + r.size for r in emu.mem_reserves)

        def map_zero_page(base: int) -> bool:
            # Speakeasy's allocator treats base 0 as "anywhere", so the NULL page (the common case: a
            # pointer from a stubbed API) is mapped on the engine directly, as is a page above a stack.
            # Readable and writable, never executable: a jump into a zero page faults as a jump to
            # unmapped memory would, instead of running thousands of `add [eax], al` (00 00).
            try:
                if base == 0 or above_a_stack(base):
                    emu.emu_eng.mem_map(base, PAGE, perms=PERM_RW)
                elif emu.mem_map(PAGE, base=base, tag="runtrace.zero_page", perms=PERM_RW) != base:
                    return False
            except Exception:
                return False
            self.zero_pages.append(base)
            return True

        def access_violation(address: int, access: int) -> None:
            # To the program's handlers; when none takes it, the access goes on in the zero page.
            if not emu.dispatch_handlers:
                return
            if self.seh64 is not None:
                self.seh64.access_violation(address, access, go_on=True)
            else:
                emu.dispatch_seh(STATUS_ACCESS_VIOLATION, address)

        def loader_data(address: int) -> bool:
            # Speakeasy maps the PEB's loader data (PEB.Ldr) at its first read, but tests
            # `address > Ldr`: a read of its first field (Length) was an unmapped read.
            p = emu.get_current_process()
            if p is None or address != p.get_peb_ldr().address:
                return False
            emu.mem_map_reserve(address)
            emu.init_peb(emu.get_user_modules())
            return True

        def invalid_read(uc, address, size, value, ctx):
            if loader_data(address):
                return True
            # The page is mapped before any SEH dispatch: unicorn retries the access when the hook
            # returns, and an unmapped retry ends emulation even when a handler took the exception.
            if not lenient(address) or not map_zero_page(address & ~(PAGE - 1)):
                return orig_read(uc, address, size, value, ctx)
            access_violation(address, 0)
            return True

        def invalid_write(uc, address, size, value, ctx):
            # Speakeasy has already mapped the page (anywhere, for the NULL page) and queued it for
            # unmapping (tmp_maps).
            base = address & ~(PAGE - 1)
            queued = (base, emu.page_size) in emu.tmp_maps
            if not lenient(address) or not (queued or base == 0):
                return orig_write(uc, address, size, value, ctx)
            if queued:
                emu.tmp_maps.remove((base, emu.page_size))
            if base != 0:
                emu.emu_eng.mem_protect(base, PAGE, PERM_RW)
                self.zero_pages.append(base)
            elif not map_zero_page(0):
                return orig_write(uc, address, size, value, ctx)
            access_violation(address, 1)
            return True

        def null_call(address: int) -> bool:
            # A call to address 0 (or a small offset from it: `call [eax+8]` with eax 0) from the program:
            # return 0 to the caller, as from a stubbed API, rather than end the run.  Windows never maps
            # the first 64 KiB, so a call below it is always through a bad pointer.  Unicorn retries
            # the faulting fetch's page after the hook, so that page must be mapped (not executable).
            if address >= NULL_REGION or len(self.null_calls) >= self.settings.null_calls:
                return False
            ret = emu.get_ret_address()
            if reserved[0] <= ret <= reserved[1] or emu.get_address_map(ret) is None:
                return False
            page = address & ~(PAGE - 1)
            if emu.get_address_map(page) is None and page not in self.zero_pages and not map_zero_page(page):
                return False
            self.null_calls.append(ret)
            emu.do_call_return(0, ret, 0)
            return True

        orig_fetch, orig_prot_fetch = emu._handle_invalid_fetch, emu._handle_prot_fetch
        emu._handle_invalid_read, emu._handle_invalid_write = invalid_read, invalid_write

        def invalid_fetch(uc, address, *rest):
            if null_call(address):
                return True
            if self.seh64 is None and emu.dispatch_handlers and not reserved[0] <= address <= reserved[1]:
                # Speakeasy's handler sends the fault to the program's SEH handler, but unicorn fetches
                # from the address again when the hook returns and stops if that fails, whatever the
                # program counter is by then: a page must be there (not executable: nothing runs from
                # it), unmapped again at the next instruction, as amd64's dispatch does (seh64.py).
                page = address & ~(PAGE - 1)
                if emu.get_address_map(page) is None:
                    with contextlib.suppress(Exception):  # (a page Speakeasy reserved: the run ends)
                        emu.emu_eng.mem_map(page, PAGE, perms=PERM_RW)
                        emu.tmp_maps.append((page, PAGE))
            return orig_fetch(uc, address, *rest)

        emu._handle_invalid_fetch = invalid_fetch
        emu._handle_prot_fetch = lambda uc, a, *rest: null_call(a) or orig_prot_fetch(uc, a, *rest)

    def _own_call(self, dll: str, name: str, argc: int, handler) -> None:
        """An API of a DLL Speakeasy has no module for, with a handler of runtrace's (winapi.Host): its
        arguments popped as stdcall (thiscall) pops them, unless the handler moved execution on (to the
        program's code, which returns through `callbacks`)."""
        emu = self.emu
        ret, pc = emu.get_ret_address(), emu.get_pc()
        argv = emu.get_func_argv(se_arch.CALL_CONV_STDCALL, argc)
        try:
            value = handler(emu, argv)
        except Exception as e:
            key = f"{dll}.{name}: {type(e).__name__}"
            self.handler_errors[key] = self.handler_errors.get(key, 0) + 1
            value = 0
        self.api_calls.append((self.recorder.visit_count - 1, f"{dll}.{name}", ret, True, tuple(argv), value))
        emu.curr_run.num_apis += 1
        if emu.get_pc() == pc and emu.get_ret_address() == ret:
            emu.do_call_return(argc, ret, value, conv=se_arch.CALL_CONV_STDCALL)

    def _stub(self, dll: str, name: str) -> None:
        """An API without a handler: return the host's stand-in value (mostly 0) and carry on.

        An x86 stdcall stub pops the arguments its API declares: a C++ export's mangled name gives them
        (`msvcmangle`: a `__thiscall` or `__stdcall` one pops them), a plain export's size comes from
        the import libraries' table (`stdcallargs`); an API in neither pops none.
        """
        emu = self.emu
        api = f"{dll}.{name}"
        self.unsupported[api] = self.unsupported.get(api, 0) + 1
        conv = se_arch.CALL_CONV_STDCALL
        if dll.lower().startswith(_CDECL_DLL_PREFIXES):
            conv = se_arch.CALL_CONV_CDECL
        argc = 0
        if emu.get_ptr_size() == 4 and name.startswith("?"):
            popped = msvcmangle.popped_bytes(name)
            if popped:
                argc, conv = popped // 4, se_arch.CALL_CONV_STDCALL
        elif emu.get_ptr_size() == 4 and conv == se_arch.CALL_CONV_STDCALL:
            argc = (stdcallargs.popped_bytes(dll, name) or 0) // 4
        ret = emu.get_ret_address()
        value = self.host.stub_value(emu, dll, name)
        self.api_calls.append((self.recorder.visit_count - 1, api, ret, False, (), value))
        emu.do_call_return(argc, ret, value, conv=conv)

    def run(self) -> None:
        timeout = self.budget[1]
        watchdog = threading.Timer(timeout, self.recorder.request_stop, args=(STOPPED_TIMEOUT,))
        watchdog.daemon = True
        if timeout > 0:
            watchdog.start()
        # Speakeasy reads this module constant when it queues a DLL's exports (each tracer is its own
        # process, so setting it per emulation is safe).
        se_win32.MAX_EXPORTS_TO_EMULATE = self.settings.max_exports
        try:
            self.se.run_module(self.module, all_entrypoints=True)
        finally:
            watchdog.cancel()

    def stop_reason(self) -> tuple[StopReason, str]:
        stopped = self.recorder.stopped
        if stopped == STOPPED_INSTRUCTION_CAP:
            return StopReason.INSTRUCTION_CAP, f"{self.settings.max_instructions} instructions"
        if stopped == STOPPED_TIMEOUT:
            return StopReason.TIMEOUT, f"{self.settings.timeout_s:g} s"
        if stopped == STOPPED_OUT_OF_MEMORY:
            return StopReason.MEMORY_LIMIT, "recorder out of memory"
        runs = self.emu.runs
        last = runs[-1] if runs else None
        error = (last.error or {}) if last is not None else {}
        if not error:
            return StopReason.EXITED, ""
        if error.get("type") == "max_api_count":
            return StopReason.API_LIMIT, f"{error.get('count')} API calls in {last.type}"
        if error.get("type") == "run_budget":
            return StopReason.INSTRUCTION_CAP, f"{self.settings.export_budget} instructions in {last.type}"
        where = error.get("pc") or ""
        return StopReason.EMULATION_FAULT, f"{error.get('type', 'fault')} at {where} in {last.type}".strip()

    def run_errors(self) -> list[dict]:
        out = []
        for run in self.emu.runs:
            if run.error:
                error = str(run.error.get("type", ""))[:200]
                out.append(
                    {"type": "run_error", "run": run.type, "error": error, "pc": run.error.get("pc", "")}
                )
        return out


@dataclass
class _Part:
    """One process's share of a trace: its blocks and visits, and what points into them."""

    blocks: list[BasicBlock]
    visits: np.ndarray
    calls: list[ApiCall]
    entries: list[EntryPoint]
    events: list[dict]
    behaviour: dict
    reason: StopReason
    detail: str


def _trace_process(session: _Session) -> _Part:
    try:
        session.run()
        reason, detail = session.stop_reason()
        raw_visits = session.recorder.visits()
        session.api_calls = [
            (p, n, r, s, typed_args(a), typed_result(v)) for p, n, r, s, a, v in session.api_calls
        ]
        blocks, visits, group_of_raw = canonicalize(
            session.recorder.raw_blocks, raw_visits, session.bits, session.recorder.raw_code
        )
    finally:
        session.recorder.close()

    def canonical(raw: int) -> int:
        return int(group_of_raw[raw]) if 0 <= raw < len(group_of_raw) else len(visits)

    calls = [
        ApiCall(max(canonical(p), 0) if p >= 0 else 0, n, r, s, a, v)
        for p, n, r, s, a, v in session.api_calls
    ]
    entries = [EntryPoint(*_entry_kind(t), a, canonical(f)) for t, a, f in session.entries]
    events = session.run_errors() + [
        {"type": "unsupported_api", "name": api, "count": n} for api, n in sorted(session.unsupported.items())
    ]
    events += [
        {"type": "api_handler_error", "name": k, "count": n} for k, n in session.handler_errors.items()
    ]
    if session.data_exports:
        events.append({"type": "data_exports", "count": len(session.data_exports),
                       "names": session.data_exports[:16]})  # fmt: skip
    if session.null_calls:
        events.append({"type": "null_calls", "count": len(session.null_calls),
                       "returns_to": [hex(p) for p in session.null_calls[:16]]})  # fmt: skip
    if session.zero_pages:
        events.append({"type": "zero_pages", "count": len(session.zero_pages),
                       "pages": [hex(p) for p in session.zero_pages[:16]]})  # fmt: skip
    summary = behaviour.summarise(session.emu.runs, session.api_calls)
    return _Part(blocks, visits, calls, entries, events, summary, reason, detail)


def _started_process(session: _Session, part: _Part, settings: TracerSettings, started: float):
    """The session of the program `session`'s process started and the run wrote (`processes.py`), with
    the budget left; None when there is none to follow."""
    if part.reason != StopReason.EXITED:
        return None
    found = processes.next_process(session.api_calls, session.emu.fileman, session.process)
    if found is None:
        return None
    data, process = found
    sizes = np.fromiter((b.instruction_count for b in part.blocks), dtype=np.int64, count=len(part.blocks))
    executed = int(sizes[part.visits].sum()) if len(part.visits) else 0
    budget = (session.budget[0] - executed, settings.timeout_s - (time.perf_counter() - started))
    if budget[0] <= 0 or budget[1] <= 0 or inspect_pe(data).arch != session.info.arch:
        return None
    return _Session(data, settings, process, processes.files_left(session.emu.fileman), budget)


def emulate(data: bytes, sha256: str, name: str = "", settings: TracerSettings | None = None) -> Trace:
    """Trace one PE image, and the programs it writes and starts (`processes.py`). Raises
    UnsupportedInput or EmulationError with a one-line reason."""
    settings = settings or TracerSettings()
    started = time.perf_counter()
    session = _Session(data, settings)
    info = session.info
    parts: list[_Part] = []
    while session is not None:
        part = _trace_process(session)
        if parts:
            # The started program's own entry point is where its process begins.
            part.entries = [
                EntryPoint("process", session.process.program, e.address, e.first_visit)
                if e.kind == "entry"
                else e
                for e in part.entries
            ]
            part.events.insert(0, {"type": "started_process", "path": session.process.program,
                                   "command_line": session.process.command_line})  # fmt: skip
        parts.append(part)
        try:
            session = (
                _started_process(session, part, settings, started)
                if len(parts) < processes.MAX_PROCESSES
                else None
            )
        except Exception as e:  # the written program cannot be loaded: the trace ends with its parent
            parts[-1].events.append(
                {"type": "started_process_error", "error": f"{type(e).__name__}: {e}"[:200]}
            )
            session = None
    blocks, visits, calls, entries, events = _joined(parts)
    meta = TraceMeta(
        sha256=sha256,
        arch=info.arch,
        source="emulator",
        stop_reason=parts[-1].reason,
        stop_detail=parts[-1].detail,
        wall_time_s=round(time.perf_counter() - started, 4),
        tracer_version=TRACER_VERSION,
        settings=settings.key(),
        file_name=name,
        image_base=info.image_base,
        entry_points=entries,
        events=events,
        behaviour=behaviour.merged(p.behaviour for p in parts),
    )
    return Trace(meta=meta, blocks=blocks, visits=visits, api_calls=calls)


def _joined(parts: list[_Part]):
    """One block dictionary and one visit sequence for the processes of a run, one after another (a
    block the processes share, the same code at the same address, is one block)."""
    if len(parts) == 1:
        p = parts[0]
        return p.blocks, p.visits, p.calls, p.entries, p.events
    ids: dict[BasicBlock, int] = {}
    blocks: list[BasicBlock] = []
    visits, calls, entries, events = [], [], [], []
    offset = 0
    for p in parts:
        remap = np.empty(len(p.blocks), dtype=np.uint32)
        for i, block in enumerate(p.blocks):
            if block not in ids:
                ids[block] = len(blocks)
                blocks.append(block)
            remap[i] = ids[block]
        visits.append(remap[p.visits] if len(p.visits) else np.empty(0, dtype=np.uint32))
        calls += [dataclasses.replace(c, position=c.position + offset) for c in p.calls]
        entries += [dataclasses.replace(e, first_visit=e.first_visit + offset) for e in p.entries]
        events += [
            {**e, "first_visit": offset} if e.get("type") == "started_process" else e for e in p.events
        ]
        offset += len(p.visits)
    return blocks, np.concatenate(visits), calls, entries, events


MAX_STRING_ARG = 512  # characters of a string argument kept in the trace
_U64 = (1 << 64) - 1


def typed_args(argv) -> tuple[int | str, ...]:
    """The arguments as Speakeasy's handler left them: integers, and the strings it dereferenced
    (handlers replace a string pointer in `argv` by the string, for their report)."""
    return tuple(_typed(a) for a in argv)


def typed_result(value) -> int | None:
    return None if value is None or not isinstance(value, int) else int(value) & _U64


def _typed(value) -> int | str:
    if isinstance(value, int):  # bool included
        return int(value) & _U64
    if isinstance(value, str):
        # Handlers read some strings from a whole buffer: what follows the first NUL is not the string.
        return value.split("\x00", 1)[0][:MAX_STRING_ARG]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes: {bytes(value[:32]).hex()}>"
    return "" if value is None else str(value)[:MAX_STRING_ARG]


def _entry_kind(run_type: str) -> tuple[str, str]:
    run_type = str(run_type)
    if run_type == "module_entry":
        return "entry", "entry"
    if run_type.startswith("dll_entry"):
        return "DllMain", run_type.split(".", 1)[-1]
    if run_type.startswith("export."):
        return "export", run_type[len("export.") :]
    if run_type.startswith("python."):
        return "python", run_type[len("python.") :]
    if run_type.startswith("tls_callback"):
        return "tls", run_type
    return "thread" if "thread" in run_type else "callback", run_type
