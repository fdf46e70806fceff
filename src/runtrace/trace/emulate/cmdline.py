"""`CommandLineToArgvW` split as Windows splits a command line.

Speakeasy's handler splits with `shlex` (POSIX shell rules), where a backslash escapes the next
character: every path lost its separators, and a program given the document argument opened
`C:UsersuserDocumentsnotes.txt`, which does not exist.  Windows' rules (shell32, and the C runtime's
for every argument after the first):

- the first argument, the program name, runs to the next space or tab, or, if it starts with a quote,
  to the next quote; backslashes there are plain characters;
- after it, arguments are separated by spaces and tabs outside quotes; a quote starts or ends a quoted
  part (not itself part of the argument), and `""` inside a quoted part is one literal quote;
- backslashes are literal unless they precede a quote: 2n backslashes then a quote give n backslashes
  and the quote acts as above; 2n+1 backslashes then a quote give n backslashes and a literal quote;
- an empty command line gives one argument, the program's own path.
"""

from __future__ import annotations

import struct

from runtrace.trace.emulate.startup import PROGRAM

_BLANKS = " \t"


def split(text: str, program: str = PROGRAM) -> list[str]:
    """The arguments `CommandLineToArgvW` finds in `text`."""
    if not text:
        return [program]
    # The program name.
    if text[0] == '"':
        end = text.find('"', 1)
        end = len(text) if end < 0 else end
        args, i = [text[1:end]], end + 1
    else:
        end = next((j for j, c in enumerate(text) if c in _BLANKS), len(text))
        args, i = [text[:end]], end
    n = len(text)
    while True:
        while i < n and text[i] in _BLANKS:
            i += 1
        if i >= n:
            return args
        arg, quoted = [], False
        while i < n and (quoted or text[i] not in _BLANKS):
            c = text[i]
            if c == "\\":
                run = i
                while run < n and text[run] == "\\":
                    run += 1
                count = run - i
                if run < n and text[run] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:  # an escaped quote
                        arg.append('"')
                        run += 1
                else:
                    arg.append("\\" * count)
                i = run
            elif c == '"':
                if quoted and i + 1 < n and text[i + 1] == '"':  # "" inside quotes: a literal quote
                    arg.append('"')
                    i += 2
                else:
                    quoted = not quoted
                    i += 1
            else:
                arg.append(c)
                i += 1
        args.append("".join(arg))


def argv_block(base: int, args: list[str], ptr_size: int) -> bytes:
    """The pointer array (NULL-terminated) then the UTF-16 strings, as one block at `base`."""
    strings = [(a + "\0").encode("utf-16-le") for a in args]
    address = base + ptr_size * (len(args) + 1)
    pointers = []
    for s in strings:
        pointers.append(address)
        address += len(s)
    word = "Q" if ptr_size == 8 else "I"
    return struct.pack(f"<{len(args) + 1}{word}", *pointers, 0) + b"".join(strings)


class CommandLineToArgv:
    def __init__(self, se, ptr_size: int) -> None:
        self.se, self.ptr = se, ptr_size

    def __call__(self, argv: list) -> int:
        """CommandLineToArgvW(lpCmdLine, pNumArgs): the block (freed by the program with LocalFree)."""
        command_line, p_count = argv[0], argv[1]
        text = self.se.emu.read_mem_string(command_line, 2) if command_line else ""
        args = split(text)
        size = len(argv_block(0, args, self.ptr))
        block = self.se.mem_alloc(size, tag="api.CommandLineToArgvW")
        self.se.mem_write(block, argv_block(block, args, self.ptr))
        if p_count:
            self.se.mem_write(p_count, struct.pack("<i", len(args)))
        return block
