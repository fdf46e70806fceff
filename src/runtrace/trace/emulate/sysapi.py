"""Windows APIs Speakeasy lacks or answers wrongly, found where the coverage benchmark's programs stopped.

Each is what the program needs to go on, with Speakeasy's own objects behind it (processes, modules,
emulated files and registry), not a full reimplementation (docs/tracer.md, revision 16):

- psapi's process and module enumeration (`EnumProcesses`, `EnumProcessModules`, `GetModuleBaseName`,
  `GetModuleFileNameEx`, `GetProcessImageFileName`, and their kernel32 `K32` names): psapi had no
  handler at all, and Speakeasy's kernel32 `EnumProcesses` reports a count where a byte size belongs;
- `MoveFileEx`, `SetEndOfFile`, `RegCreateKeyEx`, `RegSetValueEx`, `LdrGetDllHandleEx`,
  `GetUserPreferredUILanguages`, `GetCursorPos` (Speakeasy's fails: "no mouse" is a sandbox sign),
  `WaitForSingleObject` on the program's own process (Speakeasy's said it had exited);
- stdcall APIs whose stub (no arguments popped) left the caller's stack off: `CopyFile2`, event
  tracing (`EventRegister` and the rest), fltlib's `FilterLoad`/`FilterUnload`, `CreateDC`;
- `RtlImageDirectoryEntryToData` (Speakeasy's raises "Unimplemented"), `RtlImageNtHeader` and dbghelp's
  `ImageDirectoryEntryToData[Ex]`/`ImageNtHeader`: a program walking a module's exports by hand;
- `InitOnceExecuteOnce`, which calls the program's initialisation function (a stub never did: the
  pointer it should have set stayed NULL and was called), and its two-step form;
- fibers (`ConvertThreadToFiber`, `CreateFiber[Ex]`, `SwitchToFiber`): a shellcode runner's usual way
  to start its payload;
- `SHGetKnownFolderPath` (`knownfolders.py`; the stub's S_OK wrote no path);
- `CommandLineToArgvW` split by Windows' rules (`cmdline.py`; Speakeasy's used POSIX `shlex`);
- KUSER_SHARED_DATA at 0x7FFE0000, the page every user-mode process can read (Windows version,
  processor count, memory size, debugger flag, time): Speakeasy maps only its kernel-mode alias, so a
  version check read an unmapped page.
"""

from __future__ import annotations

import datetime
import ntpath
import struct
from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import cmdline, filedata, knownfolders, repeatable

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_SUCCESS, ERROR_FILE_NOT_FOUND = 0, 2
S_OK, HRESULT_FILE_NOT_FOUND = 0, 0x80070002
STATUS_SUCCESS, STATUS_DLL_NOT_FOUND = 0, 0xC0000135
MOVEFILE_DELAY_UNTIL_REBOOT = 0x4
KUSER_SHARED_DATA = 0x7FFE0000
NT_BUILD = 19045  # the Windows 10 build the emulated system reports (22H2)
WAIT_OBJECT_0, WAIT_TIMEOUT, INFINITE = 0, 0x102, 0xFFFFFFFF
_EPOCH_1601 = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)
_FIBER_STACK = 0x10000
_MAX_PROCESSES = 64


class SystemApis:
    def __init__(self, se, ptr: int, callbacks) -> None:
        self.se, self.ptr, self.callbacks = se, ptr, callbacks
        self._cursor = 0
        self._event_handles = 0
        self._init_once: dict[int, int] = {}  # INIT_ONCE address -> the context it completed with
        self._fibers: dict[int, dict] = {}  # fiber address -> {"start", "param", "context" or None}
        self._current_fiber = 0

    @property
    def emu(self):
        return self.se.emu

    # -- registration ----------------------------------------------------------------------------------

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that return to their caller: (modules, name, argc, convention, fn(argv))."""
        k32 = ("kernel32", "kernelbase")
        folders = knownfolders.KnownFolders(self.se, self.ptr)
        out = [(("shell32",), "SHGetKnownFolderPath", 4, STDCALL, folders.get_path)]
        for prefix, modules in (("", ("psapi",)), ("K32", k32)):
            out += [
                (modules, prefix + "EnumProcesses", 3, STDCALL, self.enum_processes),
                (modules, prefix + "EnumProcessModules", 4, STDCALL, self.enum_process_modules),
                (modules, prefix + "EnumProcessModulesEx", 5, STDCALL, self.enum_process_modules),
                (
                    modules,
                    prefix + "GetModuleBaseNameA",
                    4,
                    STDCALL,
                    lambda a: self.module_name(a, False, True),
                ),
                (
                    modules,
                    prefix + "GetModuleBaseNameW",
                    4,
                    STDCALL,
                    lambda a: self.module_name(a, True, True),
                ),
                (
                    modules,
                    prefix + "GetModuleFileNameExA",
                    4,
                    STDCALL,
                    lambda a: self.module_name(a, False, False),
                ),
                (
                    modules,
                    prefix + "GetModuleFileNameExW",
                    4,
                    STDCALL,
                    lambda a: self.module_name(a, True, False),
                ),
                (
                    modules,
                    prefix + "GetProcessImageFileNameA",
                    3,
                    STDCALL,
                    lambda a: self.image_file(a, False),
                ),
                (
                    modules,
                    prefix + "GetProcessImageFileNameW",
                    3,
                    STDCALL,
                    lambda a: self.image_file(a, True),
                ),
            ]
        out += [
            (k32, "MoveFileExA", 3, STDCALL, lambda a: self.move_file(a, False)),
            (k32, "MoveFileExW", 3, STDCALL, lambda a: self.move_file(a, True)),
            (k32, "MoveFileA", 2, STDCALL, lambda a: self.move_file(a + [0], False)),
            (k32, "MoveFileW", 2, STDCALL, lambda a: self.move_file(a + [0], True)),
            (k32, "SetEndOfFile", 1, STDCALL, lambda a: 1),
            (k32, "GetUserPreferredUILanguages", 4, STDCALL, self.preferred_languages),
            (k32, "InitOnceBeginInitialize", 4, STDCALL, self.init_once_begin),
            (k32, "InitOnceComplete", 3, STDCALL, self.init_once_complete),
            (k32, "ConvertThreadToFiber", 1, STDCALL, self.convert_thread_to_fiber),
            (k32, "ConvertThreadToFiberEx", 2, STDCALL, self.convert_thread_to_fiber),
            (k32, "CreateFiber", 3, STDCALL, lambda a: self.create_fiber(a[1], a[2])),
            (k32, "CreateFiberEx", 5, STDCALL, lambda a: self.create_fiber(a[3], a[4])),
            (k32, "DeleteFiber", 1, STDCALL, lambda a: 0),
            (k32, "ConvertFiberToThread", 0, STDCALL, lambda a: 1),
            (("advapi32",), "RegCreateKeyExA", 9, STDCALL, lambda a: self.reg_create_key(a, False)),
            (("advapi32",), "RegCreateKeyExW", 9, STDCALL, lambda a: self.reg_create_key(a, True)),
            (("advapi32",), "RegSetValueExA", 6, STDCALL, lambda a: self.reg_set_value(a, False)),
            (("advapi32",), "RegSetValueExW", 6, STDCALL, lambda a: self.reg_set_value(a, True)),
            (("ntdll",), "LdrGetDllHandleEx", 5, STDCALL, self.ldr_get_dll_handle_ex),
            (("ntdll",), "RtlGetNtVersionNumbers", 3, STDCALL, self.nt_version_numbers),
            (k32, "CopyFile2", 3, STDCALL, self.copy_file2),
            (("fltlib",), "FilterUnload", 1, STDCALL, lambda a: S_OK),
            (("fltlib",), "FilterLoad", 1, STDCALL, lambda a: S_OK),
            (("gdi32",), "CreateDCA", 4, STDCALL, lambda a: self.device_context()),
            (("gdi32",), "CreateDCW", 4, STDCALL, lambda a: self.device_context()),
        ]
        # Event tracing: a REGHANDLE (and a keyword mask) is 64 bits, two stack slots on x86.
        handle = 2 if self.ptr == 4 else 1
        out += [
            (("advapi32",), "EventRegister", 4, STDCALL, self.event_register),
            (("advapi32",), "EventUnregister", handle, STDCALL, lambda a: ERROR_SUCCESS),
            (("advapi32",), "EventWrite", handle + 3, STDCALL, lambda a: ERROR_SUCCESS),
            (("advapi32",), "EventWriteTransfer", handle + 5, STDCALL, lambda a: ERROR_SUCCESS),
            (("advapi32",), "EventEnabled", handle + 1, STDCALL, lambda a: 0),
            (
                ("advapi32",),
                "EventProviderEnabled",
                2 * handle + 1,
                STDCALL,
                lambda a: 0,
            ),  # and a 64-bit keyword
            (("advapi32",), "EventSetInformation", handle + 3, STDCALL, lambda a: ERROR_SUCCESS),
        ]
        return out

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's own (which answer wrongly)."""
        directory = lambda a: self.image_directory_entry(a)  # noqa: E731
        k32 = ("kernel32", "kernelbase")
        return [
            (("ntdll",), "RtlImageDirectoryEntryToData", 4, STDCALL, directory),  # Speakeasy's raises
            (("dbghelp", "imagehlp"), "ImageDirectoryEntryToData", 4, STDCALL, directory),
            (("dbghelp", "imagehlp"), "ImageDirectoryEntryToDataEx", 5, STDCALL, directory),
            (("ntdll",), "RtlImageNtHeader", 1, STDCALL, self.image_nt_header),
            (("dbghelp", "imagehlp"), "ImageNtHeader", 1, STDCALL, self.image_nt_header),
            (("psapi", "kernel32", "kernelbase"), "EnumProcesses", 3, STDCALL, self.enum_processes),
            (("user32",), "GetCursorPos", 1, STDCALL, self.cursor_position),
            (k32, "WaitForSingleObject", 2, STDCALL, self.wait),
            (k32, "WaitForSingleObjectEx", 3, STDCALL, self.wait),
            (("shell32",), "CommandLineToArgvW", 2, STDCALL, cmdline.CommandLineToArgv(self.se, self.ptr)),
        ]

    def redirecting(self) -> list[tuple[str, str, int, Callable]]:
        """Handlers that call the program's code or move it elsewhere, filed as Speakeasy's own so that
        it leaves the return to them: (module, name, argc, fn(emu, argv))."""
        return [
            ("kernel32", "InitOnceExecuteOnce", 4, self.init_once_execute),
            ("kernel32", "SwitchToFiber", 1, self.switch_to_fiber),
        ]

    def nt_version_numbers(self, argv: list) -> int:
        """ntdll.RtlGetNtVersionNumbers(&major, &minor, &build): the Windows 10 of KUSER_SHARED_DATA, the
        build with the "free build" marks in its top bits, as Windows writes it.  (Stubbed, it popped
        none of its three arguments and left them unwritten.)"""
        for address, value in zip(argv[:3], (10, 0, 0xF0000000 | NT_BUILD), strict=True):
            self._write_u32(address, value)
        return 0

    # -- helpers ---------------------------------------------------------------------------------------

    def _write_ptr(self, address: int, value: int) -> None:
        if address:
            self.emu.mem_write(address, value.to_bytes(self.ptr, "little"))

    def _write_u32(self, address: int, value: int) -> None:
        if address:
            self.emu.mem_write(address, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def _string(self, address: int, wide: bool) -> str:
        return self.emu.read_mem_string(address, 2 if wide else 1) if address else ""

    def _copy_out(self, text: str, buffer: int, size: int, wide: bool) -> int:
        """Copy a string into a buffer of `size` characters, cut to fit; the characters copied."""
        if not buffer or not size:
            return 0
        text = text[: size - 1]
        data = text.encode("utf-16-le" if wide else "latin-1", "replace") + (b"\0\0" if wide else b"\0")
        self.emu.mem_write(buffer, data)
        return len(text)

    def _process(self, handle: int):
        emu = self.emu
        if handle in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF) or handle == 0:
            return emu.get_current_process()
        try:
            return emu.get_object_from_handle(handle)
        except Exception:
            return None

    @staticmethod
    def _process_path(process) -> str:
        path = getattr(process, "path", "") or ""
        if not path:
            try:
                path = process.get_process_path() or ""
            except Exception:
                path = ""
        return path or "C:\\Windows\\system32\\" + (getattr(process, "image", "") or "process.exe")

    # -- psapi -----------------------------------------------------------------------------------------

    def enum_processes(self, argv: list) -> int:
        pids_out, size, needed = argv[:3]
        pids = [p.get_pid() for p in self.emu.get_processes()[:_MAX_PROCESSES]]
        n = min(len(pids), size // 4)
        if pids_out and n:
            self.emu.mem_write(pids_out, struct.pack(f"<{n}I", *pids[:n]))
        self._write_u32(needed, 4 * n)
        return 1

    def enum_process_modules(self, argv: list) -> int:
        process, modules_out, size, needed = argv[:4]
        proc = self._process(process)
        if proc is None:
            return 0
        if proc is self.emu.get_current_process():
            bases = [m.get_base() for m in self.emu.get_user_modules()]
        else:
            bases = [getattr(proc, "base", 0) or 0x400000]
        n = min(len(bases), size // self.ptr)
        for i in range(n):
            self._write_ptr(modules_out + i * self.ptr, bases[i])
        self._write_u32(needed, len(bases) * self.ptr)
        return 1

    def module_name(self, argv: list, wide: bool, base_name: bool) -> int:
        process, module, buffer, size = argv[:4]
        proc = self._process(process)
        if proc is None:
            return 0
        path = self._process_path(proc)
        if proc is self.emu.get_current_process() and module:
            for m in self.emu.get_user_modules():
                if m.get_base() == module:
                    path = m.get_emu_path() or path
                    break
        argv[2] = path
        return self._copy_out(ntpath.basename(path) if base_name else path, buffer, size, wide)

    def image_file(self, argv: list, wide: bool) -> int:
        process, buffer, size = argv[:3]
        proc = self._process(process)
        if proc is None:
            return 0
        path = self._process_path(proc)
        device = "\\Device\\HarddiskVolume2" + path[2:] if path[1:2] == ":" else path
        return self._copy_out(device, buffer, size, wide)

    # -- files, registry, loader ---------------------------------------------------------------------

    def move_file(self, argv: list, wide: bool, move: bool = True) -> int:
        source, target, flags = argv[:3]
        emu = self.emu
        src = self._string(source, wide)
        dst = self._string(target, wide)
        argv[0], argv[1] = src, dst
        if not src:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        if not dst:  # no target: a deletion scheduled for the next boot
            ok = filedata.file_bytes(emu.fileman, src) is not None
        else:
            ok = filedata.copy_contents(emu, src, dst)
        if not ok:
            emu.set_last_error(ERROR_FILE_NOT_FOUND)
            return 0
        at_reboot = flags & MOVEFILE_DELAY_UNTIL_REBOOT
        if move and dst and not at_reboot and filedata.path_key(src) != filedata.path_key(dst):
            filedata.remove_file(emu.fileman, src)  # (before revision 22 it stayed at its old name too)
        return 1

    def copy_file2(self, argv: list) -> int:
        """CopyFile2(existing, new, parameters): an HRESULT."""
        names = [argv[0], argv[1], 0]
        copied = self.move_file(names, wide=True, move=False)
        argv[0], argv[1] = names[:2]
        return S_OK if copied else HRESULT_FILE_NOT_FOUND

    def event_register(self, argv: list) -> int:
        """EventRegister(provider, callback, context, REGHANDLE *): a handle the program keeps."""
        self._event_handles += 1
        if argv[3]:
            self.emu.mem_write(argv[3], (0x7E000000 + self._event_handles).to_bytes(8, "little"))
        return ERROR_SUCCESS

    def device_context(self) -> int:
        try:
            return self.emu.sessman.get_device_context() or 0
        except AttributeError:
            return 0

    def reg_create_key(self, argv: list, wide: bool) -> int:
        root, subkey, _r, _c, _o, _s, _sa, result, disposition = (list(argv) + [0] * 9)[:9]
        emu = self.emu
        key = emu.reg_get_key(root)
        base = key.get_path() if key is not None else ""
        name = self._string(subkey, wide)
        path = base + ("\\" + name.lstrip("\\") if name else "")
        argv[1] = path
        existed = emu.reg_open_key(path, create=False)
        handle = existed or emu.reg_open_key(path, create=True)
        self._write_ptr(result, handle)
        self._write_u32(disposition, 2 if existed else 1)  # REG_OPENED_EXISTING_KEY / REG_CREATED_NEW_KEY
        return ERROR_SUCCESS

    def reg_set_value(self, argv: list, wide: bool) -> int:
        hkey, name, _reserved, value_type, data, size = argv[:6]
        key = self.emu.reg_get_key(hkey)
        value_name = self._string(name, wide)
        argv[1] = value_name
        raw = bytes(self.emu.mem_read(data, min(size, 1 << 20))) if data and size else b""
        if value_type in (1, 2, 7):  # REG_SZ, REG_EXPAND_SZ, REG_MULTI_SZ: Speakeasy keeps text
            value = raw.decode("utf-16-le" if wide else "latin-1", "replace").rstrip("\0")
            argv[4] = value
        elif value_type in (4, 11):  # REG_DWORD, REG_QWORD
            value = int.from_bytes(raw[: 4 if value_type == 4 else 8], "little")
        elif value_type == 3:  # REG_BINARY: Speakeasy stores it encoded from text
            value = raw.decode("latin-1")
        else:
            value = raw
        if key is not None:
            existing = key.get_value(value_name)
            if existing is not None:
                key.values.remove(existing)
            key.create_value(value_name or "default", value_type, value)
        return ERROR_SUCCESS

    def ldr_get_dll_handle_ex(self, argv: list) -> int:
        _flags, _path, _characteristics, name, handle_out = argv[:5]
        try:
            length, _max, buffer = struct.unpack(
                "<HH4xQ" if self.ptr == 8 else "<HHI",
                bytes(self.emu.mem_read(name, 16 if self.ptr == 8 else 8)),
            )
            dll = bytes(self.emu.mem_read(buffer, length)).decode("utf-16-le", "replace")
        except Exception:
            return STATUS_DLL_NOT_FOUND
        argv[3] = dll
        wanted = ntpath.splitext(ntpath.basename(dll))[0].lower()
        for m in self.emu.get_user_modules():
            if ntpath.splitext(ntpath.basename(m.get_emu_path()))[0].lower() == wanted:
                self._write_ptr(handle_out, m.get_base())
                return STATUS_SUCCESS
        return STATUS_DLL_NOT_FOUND

    def _map_decoy(self, address: int) -> None:
        """Speakeasy maps a decoy system DLL's image only when the program first reads it (its handler for
        an invalid read); a handler reading it must do the same."""
        module = self.emu.get_mod_from_addr(address)
        if module is not None and module.is_decoy() and not module.is_mapped:
            self.emu.map_decoy(module)

    def image_nt_header(self, argv: list) -> int:
        """RtlImageNtHeader(base): the address of the image's IMAGE_NT_HEADERS, or NULL."""
        base = argv[0]
        self._map_decoy(base)
        head = bytes(self.emu.mem_read(base, 0x40))
        if head[:2] != b"MZ":
            return 0
        nt = base + int.from_bytes(head[0x3C:0x40], "little")
        return nt if bytes(self.emu.mem_read(nt, 4)) == b"PE\0\0" else 0

    def image_directory_entry(self, argv: list) -> int:
        """RtlImageDirectoryEntryToData(base, mapped_as_image, entry, ULONG *size) (and dbghelp's, whose
        Ex form has a fifth, section-header output): where a data directory's data is, read from the
        headers in emulated memory; for a file not mapped as an image, the RVA becomes a file offset
        through the section table."""
        base, as_image, entry, size_out = argv[:4]
        nt = self.image_nt_header([base])
        if not nt or entry >= 16:
            return 0
        sections, optional_size = struct.unpack("<HxxxxxxxxxxxxH", bytes(self.emu.mem_read(nt + 6, 16)))
        optional = nt + 0x18
        magic = int.from_bytes(bytes(self.emu.mem_read(optional, 2)), "little")
        directories = optional + (0x70 if magic == 0x20B else 0x60)
        count = int.from_bytes(bytes(self.emu.mem_read(directories - 4, 4)), "little")
        if entry >= count:
            return 0
        rva, size = struct.unpack("<II", bytes(self.emu.mem_read(directories + 8 * entry, 8)))
        if not rva:
            return 0
        self._write_u32(size_out, size)
        if as_image & 0xFF:
            return base + rva
        table = bytes(self.emu.mem_read(optional + optional_size, 40 * min(sections, 96)))
        for i in range(min(sections, 96)):
            vsize, vaddr, raw_size, raw = struct.unpack_from("<IIII", table, 40 * i + 8)
            if vaddr <= rva < vaddr + max(vsize, raw_size):
                return base + raw + (rva - vaddr)
        return 0

    def preferred_languages(self, argv: list) -> int:
        _flags, count, buffer, size = argv[:4]
        text = "en-US\0\0"
        self._write_u32(count, 1)
        if buffer and size and self.emu.mem_read(size, 4):
            available = int.from_bytes(bytes(self.emu.mem_read(size, 4)), "little")
            if available >= len(text):
                self.emu.mem_write(buffer, text.encode("utf-16-le"))
        self._write_u32(size, len(text))
        return 1

    def wait(self, argv: list) -> int:
        """WaitForSingleObject[Ex](handle, milliseconds, ...): the program's own process never ends while
        it runs, so a finite wait on it times out (a check some programs make: Speakeasy answered
        "signalled", i.e. "this process has exited"); other waits are answered as Speakeasy does
        (signalled, except a 1 ms wait)."""
        handle, timeout = argv[:2]
        if self._process(handle) is self.emu.get_current_process() and handle and timeout != INFINITE:
            return WAIT_TIMEOUT
        return WAIT_TIMEOUT if timeout == 1 else WAIT_OBJECT_0

    def cursor_position(self, argv: list) -> int:
        """GetCursorPos: a pointer that moves a little between calls, as a user's does."""
        (point,) = argv[:1]
        self._cursor += 1
        if point:
            self.emu.mem_write(
                point, struct.pack("<ii", 400 + 7 * self._cursor, 300 + 3 * (self._cursor % 11))
            )
        return 1

    # -- one-time initialisation -------------------------------------------------------------------------

    def init_once_begin(self, argv: list) -> int:
        init_once, _flags, pending, context = argv[:4]
        done = init_once in self._init_once
        self._write_u32(pending, 0 if done else 1)
        if done:
            self._write_ptr(context, self._init_once[init_once])
        return 1

    def init_once_complete(self, argv: list) -> int:
        init_once, _flags, context = argv[:3]
        self._init_once[init_once] = context
        return 1

    def init_once_execute(self, emu, argv: list) -> int:
        """InitOnceExecuteOnce(init_once, function, parameter, context): the function runs the first
        time (with those three arguments) and the API returns its answer."""
        init_once, function, parameter, context = argv[:4]
        if init_once in self._init_once or not function:
            self._write_ptr(context, self._init_once.get(init_once, 0))
            return 1
        self._init_once[init_once] = 0
        if self.callbacks.call(emu, function, (init_once, parameter, context), argv):
            return 1  # the function's own answer, when it returns
        return 0

    # -- fibers ----------------------------------------------------------------------------------------

    def convert_thread_to_fiber(self, argv: list) -> int:
        fiber = self._new_fiber(0, argv[0] if argv else 0, started=True)
        self._current_fiber = fiber
        self._set_teb_fiber(fiber)
        return fiber

    def create_fiber(self, start: int, parameter: int) -> int:
        return self._new_fiber(start, parameter, started=False)

    def _new_fiber(self, start: int, parameter: int, started: bool) -> int:
        # The fiber's first field is its data (GetFiberData reads it through the TEB's fiber pointer).
        fiber = self.emu.mem_map(0x100, tag="runtrace.fiber")
        self.emu.mem_write(fiber, parameter.to_bytes(self.ptr, "little") + bytes(0x100 - self.ptr))
        self._fibers[fiber] = {"start": start, "param": parameter, "context": None, "started": started}
        return fiber

    def _set_teb_fiber(self, fiber: int) -> None:
        try:
            teb = self.emu.get_current_thread().get_teb()
            self.emu.mem_write(
                teb.address + (0x20 if self.ptr == 8 else 0x10), fiber.to_bytes(self.ptr, "little")
            )
        except Exception:  # no thread (a run without one): GetCurrentFiber reads 0
            pass

    _SAVED64 = (se_arch.AMD64_REG_RBX, se_arch.AMD64_REG_RBP, se_arch.AMD64_REG_RSI,
                se_arch.AMD64_REG_RDI, se_arch.AMD64_REG_R12, se_arch.AMD64_REG_R13,
                se_arch.AMD64_REG_R14, se_arch.AMD64_REG_R15)  # fmt: skip
    _SAVED32 = (se_arch.X86_REG_EBX, se_arch.X86_REG_EBP, se_arch.X86_REG_ESI, se_arch.X86_REG_EDI)

    def switch_to_fiber(self, emu, argv: list) -> int:
        """SwitchToFiber(fiber): the running fiber's registers are kept (it goes on after this call when
        switched back to); the target goes on where it left off, or starts at its routine, with its own
        stack and its parameter.  A routine that returns ends the run, as the thread would end."""
        (target,) = argv[:1]
        record = self._fibers.get(target)
        if record is None or target == self._current_fiber:
            return 0
        saved = self._SAVED64 if self.ptr == 8 else self._SAVED32
        sp_reg = se_arch.AMD64_REG_RSP if self.ptr == 8 else se_arch.X86_REG_ESP
        sp = emu.reg_read(sp_reg)
        ret = emu.get_ret_address()
        current = self._fibers.get(self._current_fiber)
        if current is not None:  # this one resumes at the return address, its argument popped (stdcall)
            current["context"] = (
                {r: emu.reg_read(r) for r in saved},
                sp + self.ptr * (2 if self.ptr == 4 else 1),
                ret,
            )
            current["started"] = True
        self._current_fiber = target
        self._set_teb_fiber(target)
        if record["started"] and record["context"] is not None:
            registers, stack, pc = record["context"]
            for reg, value in registers.items():
                emu.reg_write(reg, value)
            emu.reg_write(sp_reg, stack)
            emu.set_pc(pc)
            return 0
        record["started"] = True
        stack = emu.mem_map(_FIBER_STACK, tag="runtrace.fiber_stack") + _FIBER_STACK - 0x100
        if self.ptr == 8:
            top = (stack & ~0xF) - 8  # rsp is 8 mod 16 at a function's entry
            emu.mem_write(top, emu.return_hook.to_bytes(8, "little"))
            emu.reg_write(se_arch.AMD64_REG_RCX, record["param"])
        else:
            top = stack - 8
            emu.mem_write(top, emu.return_hook.to_bytes(4, "little") + record["param"].to_bytes(4, "little"))
        emu.reg_write(sp_reg, top)
        emu.set_pc(record["start"])
        return 0


def map_user_shared_data(emu, bits: int) -> None:
    """KUSER_SHARED_DATA, read-only at 0x7FFE0000, with what programs read from it: Windows 10 (build
    19045), a workstation, 4 processors, 8 GiB, no kernel debugger, and the clock of `repeatable`."""
    try:
        if emu.get_address_map(KUSER_SHARED_DATA) is not None:
            return
        emu.mem_map(0x1000, base=KUSER_SHARED_DATA, tag="runtrace.KUSER_SHARED_DATA")
    except Exception:  # the address is taken: leave it
        return
    page = bytearray(0x1000)
    # 100 ns intervals since 1601, at the emulated clock's start
    filetime = int((repeatable.START - _EPOCH_1601).total_seconds()) * 10_000_000
    uptime = 2 * 3600 * 10_000_000  # two hours, in 100 ns units
    struct.pack_into("<I", page, 0x004, 0x0FA00000)  # TickCountMultiplier
    struct.pack_into("<IiI", page, 0x008, uptime & 0xFFFFFFFF, uptime >> 32, uptime >> 32)  # InterruptTime
    struct.pack_into("<IiI", page, 0x014, filetime & 0xFFFFFFFF, filetime >> 32, filetime >> 32)  # SystemTime
    struct.pack_into("<HH", page, 0x02C, 0x8664 if bits == 64 else 0x014C, 0x8664 if bits == 64 else 0x014C)
    root = "C:\\Windows".encode("utf-16-le")
    page[0x030 : 0x030 + len(root)] = root  # NtSystemRoot
    struct.pack_into("<IIBBH", page, 0x260, NT_BUILD, 1, 1, 0, 9 if bits == 64 else 0)  # build, workstation
    struct.pack_into("<II", page, 0x26C, 10, 0)  # NtMajorVersion, NtMinorVersion
    for feature in (1, 6, 7, 10, 12, 13, 17, 20, 23):  # ProcessorFeatures: MMX, SSE, SSE2, NX, ... present
        page[0x274 + feature] = 1
    struct.pack_into("<I", page, 0x2E8, (8 << 30) >> 12)  # NumberOfPhysicalPages
    ticks = uptime // 10_000
    struct.pack_into("<IiI", page, 0x320, ticks & 0xFFFFFFFF, ticks >> 32, ticks >> 32)  # TickCount
    struct.pack_into("<II", page, 0x3C0, 4, 1)  # ActiveProcessorCount, ActiveGroupCount
    emu.mem_write(KUSER_SHARED_DATA, bytes(page))
