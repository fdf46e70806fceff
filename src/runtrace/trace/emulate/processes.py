"""Programs the emulated program starts: an executable the run itself wrote is run next.

Malware commonly installs itself: it copies its own file into a system folder (or writes another
executable it carries), starts the copy and exits; the copy, finding itself installed, runs the payload.
Speakeasy records the start (`CreateProcess`, `WinExec`, `ShellExecute`) and runs nothing, so the trace
ended at the installer's exit (tracer revision 21: 37 of the era corpus's short malware runs copied
their own file and started a process).

After a process exits, the first program it started whose image is an executable the run wrote (its
own file included: some programs start themselves again with other arguments) runs in a fresh emulator,
from that path and with that command line, with the files the run left; its trace continues the
parent's, under the same instruction cap and time limit.  A program that is not the run's own (a
system tool, `cmd.exe`) is not followed: its code would be Speakeasy's stand-in, not the program's.
At most `MAX_PROCESSES` processes run, and a start that repeats the process that made it is skipped.
"""

from __future__ import annotations

import ntpath
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from speakeasy.const import PROC_CREATE
from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate import filedata, startup

MAX_PROCESSES = 3  # the traced program and two it starts
STDCALL = se_arch.CALL_CONV_STDCALL
SEE_MASK_NOCLOSEPROCESS = 0x40
SHELL_EXECUTE_OK = 33  # ShellExecute's "instance" above 32: success
_SYSTEM_FOLDER = "C:\\Windows\\system32"


@dataclass(frozen=True)
class Start:
    """A program start as the run asked for it: the image's name, if given apart, and the command line."""

    application: str
    command_line: str
    directory: str = ""


def starts(api_calls: Iterable[tuple]) -> Iterator[Start]:
    """The program starts among the emulator's (position, name, return, supported, args, result)
    records, in order, read from the arguments the handlers left as strings."""
    for _position, name, _ret, _supported, args, _result in api_calls:
        api = name.split(".", 1)[-1]
        text = [a if isinstance(a, str) else "" for a in args]
        if api in ("CreateProcessA", "CreateProcessW") and len(text) >= 2:
            yield Start(text[0], text[1])
        elif api.startswith(("CreateProcessInternal", "CreateProcessAsUser")) and len(text) >= 3:
            yield Start(text[1], text[2])
        elif api == "WinExec" and text:
            yield Start("", text[0])
        elif (
            api in ("ShellExecuteA", "ShellExecuteW", "ShellExecuteExA", "ShellExecuteExW") and len(text) >= 5
        ):
            verb, file, parameters, directory = text[1:5]
            if verb.lower() in ("", "open", "runas"):
                yield Start(file, f'"{file}" {parameters}'.strip() if file else "", directory)


def image_candidates(start: Start, directories: Iterable[str]) -> list[str]:
    """The paths Windows would try for the started image, in its order: the application name, else the
    command line's first word (quoted, or each run of words up to a space for an unquoted path with
    spaces), each as given and with `.exe` added; a relative name in `directories`."""
    if start.application:
        names = [start.application]
    else:
        line = start.command_line.strip()
        if line.startswith('"'):
            names = [line[1:].split('"', 1)[0]]
        else:
            words = line.split(" ")
            names = [" ".join(words[: i + 1]) for i in range(len(words)) if words[i]]
    out = []
    for name in names:
        name = name.strip().strip('"')
        if not name:
            continue
        rooted = ntpath.isabs(name) or (len(name) > 1 and name[1] == ":")
        bases = [name] if rooted else [ntpath.join(d, name) for d in (start.directory, *directories) if d]
        for base in bases:
            out.append(base)
            if not ntpath.splitext(base)[1]:
                out.append(base + ".exe")
    return out


def next_process(
    api_calls: Iterable[tuple], fileman, current: startup.Process
) -> tuple[bytes, startup.Process] | None:
    """The program to run after `current` exits: the first it started whose image is an executable of
    the run's file system, with the process it becomes; None when there is none."""
    written = {filedata.path_key(f.get_path()): f for f in _written(fileman)}
    folders = (ntpath.dirname(current.program), _SYSTEM_FOLDER)
    for start in starts(api_calls):
        for path in image_candidates(start, folders):
            f = written.get(filedata.path_key(path))
            if f is None:
                continue
            data = f.data.getvalue()
            if data[:2] != b"MZ":
                break
            program = filedata.clean_path(f.get_path())
            process = startup.Process(program, start.command_line or f'"{program}"')
            if process != current:
                return data, process
            break
    return None


def files_left(fileman) -> list[tuple[str, bytes]]:
    """The files a run wrote or was given (path, contents): what the next process finds on disk."""
    return [(f.get_path(), f.data.getvalue()) for f in _written(fileman)]


def _written(fileman) -> list:
    """The emulated files with contents of their own (the image, what the run wrote), not the stand-ins
    Speakeasy's configuration serves for a path."""
    return [f for f in fileman.files if not f.config and f.data is not None]


class ShellExecuteEx:
    """`ShellExecuteEx[A|W]`, which Speakeasy lacks (the stub's 0 is a failure): it reads the verb, file,
    parameters and folder from SHELLEXECUTEINFO, records the start and reports success."""

    def __init__(self, se, ptr_size: int) -> None:
        self.se = se
        self.ptr = ptr_size

    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        return [
            (("shell32",), "ShellExecuteExA", 1, STDCALL, lambda a: self.execute(a, False)),
            (("shell32",), "ShellExecuteExW", 1, STDCALL, lambda a: self.execute(a, True)),
        ]

    def execute(self, argv: list, wide: bool) -> int:
        emu, ptr = self.se.emu, self.ptr
        info = argv[0]
        if not info:
            return 0
        # cbSize, fMask, hwnd, then pointer fields: lpVerb, lpFile, lpParameters, lpDirectory; nShow;
        # hInstApp, lpIDList, lpClass, hkeyClass, dwHotKey, hIcon, hProcess.
        first = 12 if ptr == 4 else 16
        mask = struct.unpack("<I", emu.mem_read(info + 4, 4))[0]
        pointers = struct.unpack(f"<4{'I' if ptr == 4 else 'Q'}", emu.mem_read(info + first, 4 * ptr))
        verb, file, parameters, directory = (
            emu.read_mem_string(p, 2 if wide else 1) if p else "" for p in pointers
        )
        argv[:] = [0, verb, file, parameters, directory]  # as ShellExecute's, for the trace and `starts`
        instance_at = first + 4 * ptr + (4 if ptr == 4 else 8)  # after nShow (padded on amd64)
        emu.mem_write(info + instance_at, SHELL_EXECUTE_OK.to_bytes(ptr, "little"))
        path = ntpath.join(directory, file) if directory and file else file
        if not path:
            return 0
        process = emu.create_process(path=f'"{path}"', cmdline=f'"{path}" {parameters}'.strip())
        if mask & SEE_MASK_NOCLOSEPROCESS:
            handle = emu.om.get_handle(process)
            emu.mem_write(info + instance_at + 6 * ptr, handle.to_bytes(ptr, "little"))
        emu.api.load_api_handler("shell32").log_process_event(process, PROC_CREATE)
        return 1
