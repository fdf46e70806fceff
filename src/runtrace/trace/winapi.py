"""Windows APIs Speakeasy lacks but ordinary programs call early (C-runtime start-up, console, UI).

Without them most programs built against the universal C runtime stop within a few instructions, before
their own code runs.  Each handler does what a program needs to go on (plausible pointers and success
values), not a full reimplementation; anything not listed here is stubbed by the emulator backend.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

CDECL = se_arch.CALL_CONV_CDECL
STDCALL = se_arch.CALL_CONV_STDCALL

# Module patterns (fnmatch, lower case) a C-runtime function may be imported from.
_CRT = ("ucrtbase", "ucrtbased", "msvcrt", "msvcr*", "api-ms-win-crt-*")


class _Scratch:
    """Small allocations shared by the handlers of one emulation (strings, pointer arrays)."""

    def __init__(self, se, bits: int) -> None:
        self.se = se
        self.ptr = bits // 8
        self._cache: dict[str, int] = {}

    def alloc(self, data: bytes, key: str) -> int:
        addr = self._cache.get(key)
        if addr is None:
            addr = self.se.mem_alloc(max(len(data), 16), tag=f"runtrace.{key}")
            self.se.mem_write(addr, data)
            self._cache[key] = addr
        return addr

    def pointer_to(self, value: int, key: str) -> int:
        return self.alloc(value.to_bytes(self.ptr, "little"), key)

    def command_line(self, wide: bool) -> int:
        text = "program.exe"
        if wide:
            return self.alloc((text + "\0").encode("utf-16-le"), "cmdline_w")
        return self.alloc((text + "\0").encode(), "cmdline_a")

    def env_block(self, wide: bool) -> int:
        # An empty environment: an array holding a single NULL.
        return self.alloc(b"\0" * self.ptr * 2, "env_w" if wide else "env_a")


def _handlers(s: _Scratch) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
    """(modules, name, argc, calling convention, handler(argv) -> return value)."""
    zero = lambda argv: 0  # noqa: E731  (success for the CRT's int-returning set-up functions)
    one = lambda argv: 1  # noqa: E731
    crt = [
        ("_configure_wide_argv", 1, zero),
        ("_configure_narrow_argv", 1, zero),
        ("_initialize_wide_environment", 0, zero),
        ("_initialize_narrow_environment", 0, zero),
        ("_get_narrow_winmain_command_line", 0, lambda a: s.command_line(False)),
        ("_get_wide_winmain_command_line", 0, lambda a: s.command_line(True)),
        ("__p___initenv", 0, lambda a: s.pointer_to(s.env_block(False), "p_initenv")),
        ("__p__environ", 0, lambda a: s.pointer_to(s.env_block(False), "p_environ")),
        ("__p__wenviron", 0, lambda a: s.pointer_to(s.env_block(True), "p_wenviron")),
        ("__iob_func", 0, lambda a: s.alloc(b"\0" * 3 * 48, "iob")),
        ("__p___winitenv", 0, lambda a: s.pointer_to(s.env_block(True), "p_winitenv")),
        ("_get_initial_wide_environment", 0, lambda a: s.env_block(True)),
        ("__p__acmdln", 0, lambda a: s.pointer_to(s.command_line(False), "p_acmdln")),
        ("__p__wcmdln", 0, lambda a: s.pointer_to(s.command_line(True), "p_wcmdln")),
        ("_set_new_mode", 1, zero),
        ("_setusermatherr", 1, zero),
        ("__setusermatherr", 1, zero),
        ("_set_app_type", 1, zero),
        ("__set_app_type", 1, zero),
        ("_set_fmode", 1, zero),
        ("_configthreadlocale", 1, zero),
        ("_crt_atexit", 1, zero),
        ("atexit", 1, zero),
        ("_register_onexit_function", 2, zero),
        ("_initialize_onexit_table", 1, zero),
        ("_execute_onexit_table", 1, zero),
        ("_register_thread_local_exe_atexit_callback", 1, zero),
        ("_seh_filter_dll", 2, zero),
        ("_seh_filter_exe", 2, zero),
        ("_initialize_narrow_environment", 0, zero),
        ("__acrt_iob_func", 1, lambda a: s.alloc(b"\0" * 64, f"iob{a[0] & 3}")),
        ("__stdio_common_vfprintf", 5, zero),
        ("__stdio_common_vfwprintf", 5, zero),
        ("__stdio_common_vsprintf_s", 7, zero),
        ("__stdio_common_vswprintf", 7, zero),
        ("_errno", 0, lambda a: s.alloc(b"\0" * 8, "errno")),
        ("__doserrno", 0, lambda a: s.alloc(b"\0" * 8, "doserrno")),
        ("_callnewh", 1, zero),
        ("setlocale", 2, lambda a: s.alloc(b"C\0", "locale")),
        ("_lock_file", 1, zero),
        ("_unlock_file", 1, zero),
        ("fflush", 1, zero),
        ("fwrite", 4, lambda a: a[2]),
        ("fputs", 2, zero),
        ("fputc", 2, lambda a: a[0] & 0xFF),
        ("_isatty", 1, zero),
        ("_fileno", 1, lambda a: 1),
        ("_setmode", 2, zero),
        ("signal", 2, zero),
        ("_set_abort_behavior", 2, zero),
        ("_invalid_parameter_noinfo", 0, zero),
        ("_invalid_parameter_noinfo_noreturn", 0, zero),
        ("__std_type_info_destroy_list", 1, zero),
        ("_free_base", 1, zero),
        ("getenv", 1, zero),
        ("_wgetenv", 1, zero),
        ("terminate", 0, zero),
    ]
    out = [(_CRT, name, argc, CDECL, fn) for name, argc, fn in crt]
    out += [
        (("comctl32",), "InitCommonControls", 0, STDCALL, zero),
        (("comctl32",), "InitCommonControlsEx", 1, STDCALL, one),
        (("kernel32",), "SetConsoleCtrlHandler", 2, STDCALL, one),
        (("kernel32",), "GetConsoleMode", 2, STDCALL, one),
        (("kernel32",), "SetConsoleMode", 2, STDCALL, one),
        (("kernel32",), "GetConsoleOutputCP", 0, STDCALL, lambda a: 437),
        (("kernel32",), "GetConsoleCP", 0, STDCALL, lambda a: 437),
        (("kernel32",), "SetConsoleTitleW", 1, STDCALL, one),
        (("kernel32",), "SetConsoleTitleA", 1, STDCALL, one),
        (("kernel32",), "FlsGetValue", 1, STDCALL, zero),
        (("user32",), "SetProcessDPIAware", 0, STDCALL, one),
        (("user32",), "InitCommonControls", 0, STDCALL, zero),
        # MFC's AfxWinInit (exported by ordinal): without it every MFC application gives up at once.
        (("mfc42", "mfc42u"), "ordinal_1576", 4, STDCALL, one),
    ]
    return out


def install(se, bits: int) -> None:
    """Register the handlers on a Speakeasy instance (before run_module)."""
    scratch = _Scratch(se, bits)
    api = se.emu.api
    for modules, name, argc, conv, fn in _handlers(scratch):
        # Speakeasy's own handler wins where it has one (for the CRT it files them under msvcrt).
        if api.get_export_func_handler("msvcrt" if modules is _CRT else modules[0], name)[1]:
            continue
        for module in modules:
            se.add_api_hook(_adapt(fn), module=module, api_name=name, argc=argc, call_conv=conv)


def _adapt(fn: Callable[[list], int]):
    def hook(emu, api_name, func, argv):
        return fn(argv)

    return hook
