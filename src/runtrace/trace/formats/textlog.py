"""Text run traces: x64dbg trace logs, OllyDbg run-trace logs, lines matched by a user's regex.

None of these hold instruction bytes, so the resulting blocks carry normalised disassembly
(`BasicBlock.texts`, capstone Intel syntax, see asmsyntax.py) and lengths inferred from the addresses:
an instruction that is not a control transfer and whose thread's next instruction lies 1-15 bytes
after it is that many bytes long.  Two more cases are decided from the text: a branch or call with an
immediate target whose thread continued right after it (a conditional jump not taken, a call traced
over) has the distance as length, and an (address, instruction) whose length was seen anywhere in the
log gets it everywhere.  A length still unknown is 0, and the block ends after that instruction.

A log is read in one pass into compact arrays (address, interned text, thread per line) and the
blocks are built afterwards, since a length depends on the thread's next instruction.

The writer produces x64dbg-style lines (`{p:cip} {i:cip}`) and keeps in comment lines, which
x64dbg-style readers skip and this reader understands, what such lines cannot hold: the sample's sha256
(`; sha256 <hex>`, at the top), thread switches (`; thread <hex id>`) and each API call after the
instruction that made it (`; api KERNEL32.LoadLibraryA("ws2_32.dll") = 0x10000000 -> returns to
00401780`, the line `runtrace show` prints).
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from runtrace.trace.asmsyntax import mnemonic_of, normalise_syntax, parse_number
from runtrace.trace.blocks import BlockBuilder
from runtrace.trace.disasm import is_control_transfer
from runtrace.trace.errors import TraceReadError, at_line
from runtrace.trace.formats.registry import TraceFormat, register
from runtrace.trace.model import ApiCall, Arch, StopReason, Trace, TraceMeta

__all__ = [
    "normalise_syntax",
    "read_custom_log",
    "read_ollydbg_log",
    "read_text_log",
    "read_x64dbg_log",
    "sniff_text_format",
    "write_text_log",
]

MAX_LINE = 1 << 16  # longer "lines" are not instructions (and must not be read whole: binary input)
_SNIFF_LINES = 200

# x64dbg: `{p:cip} {i:cip}`, e.g. "00401000 push ebp", "0x00DF1011      mov ebp, esp",
# "kernel32.7C801D7B push ebp".  Without 0x, at least 4 digits, so "add eax, 1" is no address.
_X64DBG_LINE = re.compile(
    r"\s*(?:[A-Za-z_][\w\-]*(?:\.[\w\-]+)*\.)?"
    r"(?:0[xX](?P<hex>[0-9A-Fa-f]{1,16})|(?P<bare>[0-9A-Fa-f]{4,16}))"
    r"\s+(?P<instruction>[A-Za-z][^;]*?)\s*(?:;.*)?"
)
_THREAD_MARK = re.compile(r"\s*;\s*thread\s+(?:0x)?([0-9A-Fa-f]{1,8})\s*", re.IGNORECASE)
_SHA256_MARK = re.compile(r"\s*;\s*sha256\s+([0-9A-Fa-f]{64})\s*")
_API_MARK = re.compile(
    r"\s*;\s*api\s+(?P<call>.+?)\s+->\s+returns to\s+(?:0x)?(?P<ret>[0-9A-Fa-f]{1,16})"
    r"(?P<stub>\s+\(stubbed\))?\s*"
)
_API_NAME = re.compile(r"[^\s(=]+")
_API_INT = re.compile(r"\s*(-?(?:0x[0-9A-Fa-f]+|\d+))\s*")
_OLLY_ADDRESS = re.compile(r"(?:[A-Za-z_][\w\-]*(?:\.[\w\-]+)*\.)?(?:0[xX])?([0-9A-Fa-f]{8}|[0-9A-Fa-f]{16})")
_OLLY_THREAD = re.compile(r"[0-9A-Fa-f]{1,8}")
_OLLY_MODULE = re.compile(r"[A-Za-z_][\w.\-]*")
_OLLY_COLUMNS = {"address", "thread", "module", "back"}
_REGISTER_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*=\S*")
_WIDE_REGISTERS = re.compile(r"\b(?:r[a-d]x|r[sb]p|r[sd]i|rip|r(?:[89]|1[0-5])[dwb]?)\b")


@dataclass
class _Lines:
    """What a pass over a log collected: one entry per instruction line."""

    addresses: array = field(default_factory=lambda: array("Q"))
    text_ids: array = field(default_factory=lambda: array("I"))
    tids: array = field(default_factory=lambda: array("I"))
    texts: dict[str, int] = field(default_factory=dict)  # raw instruction text -> id (interned)
    wide: bool = False  # an address written with more than 8 digits: a 64-bit trace
    lines_read: int = 0
    problem: tuple[int, str] | None = None  # (line, what) that stopped an allow_truncated read
    sha256: str = ""  # from a `; sha256` comment (logs runtrace wrote)
    # API calls from `; api` comments: (instruction lines before it, the call with position 0)
    calls: list[tuple[int, ApiCall]] = field(default_factory=list)

    def add(self, address: int, text: str, tid: int) -> None:
        text_id = self.texts.get(text)
        if text_id is None:
            text_id = self.texts[text] = len(self.texts)
        self.addresses.append(address)
        self.text_ids.append(text_id)
        self.tids.append(tid)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115  (closed below)
    except OSError as e:
        raise TraceReadError(f"{path}: cannot open ({e.strerror or e})") from None
    with fh:
        number = 0
        while True:
            line = fh.readline(MAX_LINE)
            if not line:
                return
            number += 1
            yield number, line


# ---------------------------------------------------------------------------------------------------
# x64dbg trace log


def _collect_x64dbg(path: Path) -> _Lines:
    out = _Lines()
    tid = 0
    for number, line in _lines(path):
        out.lines_read = number
        m = _X64DBG_LINE.fullmatch(line.rstrip("\r\n"))
        if m is None:
            _comment(out, line.rstrip("\r\n"), path, number)
            mark = _THREAD_MARK.fullmatch(line.rstrip("\r\n"))
            if mark:
                tid = int(mark.group(1), 16)
            continue
        digits = m.group("hex") or m.group("bare")
        out.wide = out.wide or len(digits) > 8
        out.add(int(digits, 16), m.group("instruction"), tid)
    return out


def _comment(out: _Lines, line: str, path: Path, number: int) -> None:
    """The sha256 and API calls runtrace keeps in comment lines; other comments are skipped."""
    if not out.sha256 and (sha := _SHA256_MARK.fullmatch(line)):
        out.sha256 = sha.group(1).lower()
    elif api := _API_MARK.fullmatch(line):
        name, args, result = parse_signature(api.group("call"), path, number)
        call = ApiCall(0, name, int(api.group("ret"), 16), api.group("stub") is None, args, result)
        out.calls.append((len(out.addresses), call))


def parse_signature(text: str, path: Path | str = "", number: int = 0) -> tuple[str, tuple, int | None]:
    """`NAME(arg, "string", ...) = 0xRESULT` (as `ApiCall.signature` writes it) -> name, args, result."""
    name = _API_NAME.match(text)
    if name is None:
        raise at_line(path, number, f"unreadable API call {text[:80]!r}")
    rest, args = text[name.end() :], []
    if rest.startswith("("):
        rest = rest[1:]
        decoder = json.JSONDecoder()
        while not rest.startswith(")"):
            rest = rest.lstrip()
            if rest.startswith('"'):
                value, end = decoder.raw_decode(rest)
            else:
                number_match = _API_INT.match(rest)
                if number_match is None:
                    raise at_line(path, number, f"unreadable argument in API call {text[:80]!r}")
                value, end = int(number_match.group(1), 0), number_match.end()
            args.append(value)
            rest = rest[end:].lstrip()
            if rest.startswith(","):
                rest = rest[1:]
            elif not rest.startswith(")"):
                raise at_line(path, number, f"unreadable argument list in API call {text[:80]!r}")
        rest = rest[1:]
    rest = rest.strip()
    result = int(rest[1:].strip(), 16) if rest.startswith("=") else None
    return name.group(0), tuple(args), result


# ---------------------------------------------------------------------------------------------------
# OllyDbg run-trace log


def _olly_header(line: str) -> list[str] | None:
    """Column kinds before the command, from a header line such as `Address Thread Command ...`."""
    words = [w.strip(".:").lower() for w in line.split()]
    if "address" not in words or "command" not in words:
        return None
    before = words[: words.index("command")]
    return [w if w in _OLLY_COLUMNS else "back" for w in before]


def _olly_line(line: str, layout: list[str]) -> tuple[int, int, str, int] | None:
    """(address, thread id, command, address digits) from one data line, or None."""
    code = line.split(";", 1)[0]
    tokens = code.split()
    i, address, digits, tid = 0, None, 0, 0
    for column in layout:
        if i >= len(tokens):
            return None
        token = tokens[i]
        if column == "address":
            m = _OLLY_ADDRESS.fullmatch(token)
            if m is None:
                return None
            address, digits = int(m.group(1), 16), len(m.group(1))
            i += 1
        elif column == "thread":
            if token.lower() == "main":
                i += 1  # the main thread's id is not in the log: it is thread 0 here
            elif _OLLY_THREAD.fullmatch(token):
                tid = int(token, 16)
                i += 1
        elif not _OLLY_ADDRESS.fullmatch(token) and _OLLY_MODULE.fullmatch(token):
            i += 1  # module (or another column); blank for code outside modules
    if address is None:
        return None
    end = len(tokens)
    while end > i and _REGISTER_TOKEN.fullmatch(tokens[end - 1].rstrip(",")):
        end -= 1  # modified registers, e.g. EAX=00000001
    command = " ".join(tokens[i:end])
    if not command or not command[0].isalpha():
        return None
    return address, tid, command, digits


def _layout_from_main(tokens: list[str]) -> list[str] | None:
    """Column kinds before the command, from a line whose thread column says `Main`."""
    lowered = [t.lower() for t in tokens[:3]]
    if "main" not in lowered:
        return None
    at = lowered.index("main")
    kinds = ["address" if _OLLY_ADDRESS.fullmatch(t) else "module" for t in tokens[:at]] + ["thread"]
    if "address" not in kinds:
        kinds += ["module", "address"]  # `Main  module  00401000 ...` (the module column may be blank)
    return kinds


def _olly_layout(path: Path) -> list[str]:
    """The column order, from a header line or else the first line of the main thread; OllyDbg 1.x's
    `address thread command` if the first lines show neither."""
    for number, line in _lines(path):
        if number > _SNIFF_LINES:
            break
        layout = _olly_header(line) or _layout_from_main(line.split(";", 1)[0].split())
        if layout is not None:
            return layout
    return ["address", "thread"]


def _collect_ollydbg(path: Path) -> _Lines:
    out = _Lines()
    layout = _olly_layout(path)
    for number, line in _lines(path):
        out.lines_read = number
        header = _olly_header(line)
        if header is not None:
            layout = header
            continue
        parsed = _olly_line(line, layout)
        if parsed is not None:
            address, tid, command, digits = parsed
            out.wide = out.wide or digits > 8
            out.add(address, command, tid)
    return out


# ---------------------------------------------------------------------------------------------------
# Lines matched by a user's regular expression


def compile_line_pattern(pattern: str, path: str | Path = "") -> re.Pattern:
    where = f"{path}: " if path else ""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise TraceReadError(
            f"{where}line pattern {pattern!r} is not a valid regular expression ({e})"
        ) from None
    missing = {"address", "instruction"} - set(regex.groupindex)
    if missing:
        names = ", ".join(sorted(missing))
        raise TraceReadError(f"{where}line pattern {pattern!r} has no named group(s) {names}")
    return regex


def _collect_custom(path: Path, allow_truncated: bool, regex: re.Pattern) -> _Lines:
    out = _Lines()
    thread_ids: dict[str, int] = {}
    has_thread = "thread" in regex.groupindex
    for number, line in _lines(path):
        out.lines_read = number
        m = regex.search(line.rstrip("\r\n"))
        if m is None:
            continue
        raw_address = (m.group("address") or "").strip()
        digits = raw_address[2:] if raw_address.lower().startswith("0x") else raw_address
        digits = digits.rsplit(".", 1)[-1]  # module.00401000
        if not re.fullmatch(r"[0-9A-Fa-f]{1,16}", digits):
            problem = f"address {raw_address!r} is not a hexadecimal number of at most 16 digits"
            if allow_truncated:
                out.problem = (number, problem)
                break
            raise at_line(path, number, problem)
        instruction = (m.group("instruction") or "").strip()
        if not instruction:
            continue
        tid = 0
        if has_thread and m.group("thread"):
            tid = _thread_id(m.group("thread").strip(), thread_ids)
        out.wide = out.wide or len(digits) > 8
        out.add(int(digits, 16), instruction, tid)
    return out


def _thread_id(token: str, names: dict[str, int]) -> int:
    """Hex thread ids as debuggers print them; `Main` is 0; any other name gets a small number."""
    if token.lower() == "main":
        return 0
    value = parse_number(token.lower())
    if value is not None and 0 <= value < 1 << 32:
        return value
    return names.setdefault(token, len(names) + 1)


# ---------------------------------------------------------------------------------------------------
# From lines to a Trace


def _arch(lines: _Lines, normalised: list[str], x86_only: bool) -> Arch:
    """64-bit if an address says so (x64dbg writes 16 digits there), else if a 64-bit register appears."""
    if lines.wide or max(lines.addresses) >= 1 << 32:
        return Arch.AMD64
    if x86_only:
        return Arch.X86
    return Arch.AMD64 if any(_WIDE_REGISTERS.search(t) for t in normalised) else Arch.X86


def _infer_lengths(lines: _Lines, transfer: list[bool], target: list[int | None]) -> list[int]:
    addresses, text_ids, tids = lines.addresses, lines.text_ids, lines.tids
    n = len(addresses)
    following = [-1] * n  # index of the same thread's next instruction
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        following[i] = last.get(tids[i], -1)
        last[tids[i]] = i
    lengths = [0] * n
    known: dict[tuple[int, int], int] = {}
    for i in range(n):
        j = following[i]
        if j < 0:
            continue
        delta = addresses[j] - addresses[i]
        if not 0 < delta <= 15:
            continue
        t = text_ids[i]
        if not transfer[t] or (target[t] is not None and target[t] != addresses[j]):
            lengths[i] = delta
            known.setdefault((addresses[i], t), delta)
    for i in range(n):
        if lengths[i] == 0:
            lengths[i] = known.get((addresses[i], text_ids[i]), 0)
    return lengths


def _to_trace(lines: _Lines, path: Path, source: str, x86_only: bool, settings: dict) -> Trace:
    if not lines.addresses:
        raise at_line(
            path,
            max(lines.lines_read, 1),
            f"no instruction lines found in {lines.lines_read} lines ({source} log expected, "
            "e.g. '00401000 push ebp')",
        )
    raw = list(lines.texts)
    bits = 64 if lines.wide or max(lines.addresses) >= 1 << 32 else 32
    normalised = [normalise_syntax(t, bits) for t in raw]
    arch = _arch(lines, normalised, x86_only)
    if arch.bits != bits:
        normalised = [normalise_syntax(t, arch.bits) for t in raw]
    mnemonics = [mnemonic_of(t) for t in normalised]  # prefixes included, as capstone reports them
    transfer = [is_control_transfer(m) for m in mnemonics]
    target = [_branch_target(t) if tr else None for t, tr in zip(normalised, transfer, strict=True)]
    lengths = _infer_lengths(lines, transfer, target)

    builder = BlockBuilder(arch.bits)
    add = builder.add_text
    pending = iter(lines.calls)
    after, call = next(pending, (None, None))
    calls = []
    for count, (address, text_id, length, tid) in enumerate(
        zip(lines.addresses, lines.text_ids, lengths, lines.tids, strict=True), 1
    ):
        add(address, normalised[text_id], length, tid, mnemonics[text_id])
        while after == count:  # the calls made by this instruction: after its block's visit
            calls.append(replace(call, position=builder.current_visit))
            after, call = next(pending, (None, None))
    blocks, visits, threads = builder.finish()
    meta = TraceMeta(
        sha256=lines.sha256,
        arch=arch,
        source=source,
        stop_reason=StopReason.IMPORTED,
        settings={"trace_file": str(path), **settings},
    )
    if lines.problem is not None:
        meta.stop_detail = f"truncated: {path}: line {lines.problem[0]}: {lines.problem[1]}"
        meta.events.append({"kind": "truncated", "line": lines.problem[0], "problem": lines.problem[1]})
    return Trace(meta=meta, blocks=blocks, visits=visits, threads=threads, api_calls=calls)


def _branch_target(text: str) -> int | None:
    """The immediate target of `jne 0x401020` / `call 0x401000`, else None."""
    operand = text[len(mnemonic_of(text)) :].strip()
    return parse_number(operand) if operand and " " not in operand else None


def read_x64dbg_log(path: str | Path, allow_truncated: bool = False) -> Trace:
    """x64dbg trace log.  allow_truncated is accepted for a uniform signature only: a line that is not
    an instruction is skipped, so nothing in these logs can break mid-way (the same for OllyDbg)."""
    path = Path(path)
    return _to_trace(_collect_x64dbg(path), path, "x64dbg-text", False, {})


def read_ollydbg_log(path: str | Path, allow_truncated: bool = False) -> Trace:
    """OllyDbg 1.x/2.x run-trace log; OllyDbg debugs 32-bit code, so the trace is x86 unless an address
    says otherwise."""
    path = Path(path)
    return _to_trace(_collect_ollydbg(path), path, "ollydbg", True, {})


def read_custom_log(path: str | Path, line_pattern: str, allow_truncated: bool = False) -> Trace:
    """Lines matched (re.search) by line_pattern with named groups address, instruction and optionally
    thread; other lines are skipped."""
    path = Path(path)
    regex = compile_line_pattern(line_pattern, path)
    lines = _collect_custom(path, allow_truncated, regex)
    return _to_trace(lines, path, "text", False, {"line_pattern": line_pattern})


def read_text_log(
    path: str | Path, fmt: str | None = None, allow_truncated: bool = False, line_pattern: str | None = None
) -> Trace:
    """Any text trace: a custom pattern if given, else fmt ("x64dbg-text" / "ollydbg"), else sniffed."""
    path = Path(path)
    if line_pattern:
        return read_custom_log(path, line_pattern, allow_truncated)
    fmt = fmt or sniff_text_format(path) or "x64dbg-text"
    if fmt == "ollydbg":
        return read_ollydbg_log(path, allow_truncated)
    return read_x64dbg_log(path, allow_truncated)


# ---------------------------------------------------------------------------------------------------
# Telling x64dbg and OllyDbg logs apart


def sniff_text_format(path: str | Path) -> str | None:
    """ "ollydbg", "x64dbg-text", or None when the first lines look like neither."""
    olly = x64 = 0
    for number, line in _lines(Path(path)):
        if number > _SNIFF_LINES:
            break
        if _olly_header(line) is not None:
            return "ollydbg"
        tokens = line.split(";", 1)[0].split()
        if _layout_from_main(tokens) and any(_OLLY_ADDRESS.fullmatch(t) for t in tokens[:3]):
            olly += 3  # OllyDbg names the main thread `Main`
        elif len(tokens) >= 3 and _OLLY_ADDRESS.fullmatch(tokens[0]):
            if _OLLY_THREAD.fullmatch(tokens[1]) and tokens[2][:1].isupper() and "  " in line:
                olly += 1  # a thread column, then an upper-case command, in padded columns
            if any(_REGISTER_TOKEN.fullmatch(t.rstrip(",")) for t in tokens[3:]):
                olly += 1
        if _X64DBG_LINE.fullmatch(line.rstrip("\r\n")):
            x64 += 1
    if olly and olly * 2 >= x64:
        return "ollydbg"
    return "x64dbg-text" if x64 else None


# ---------------------------------------------------------------------------------------------------
# Writing


def write_text_log(trace: Trace, path: str | Path) -> Path:
    """x64dbg-style `{p:cip} {i:cip}` lines (address zero-padded to the pointer width, upper case), with
    the sha256, thread switches and API calls in comment lines (module docstring)."""
    path = Path(path)
    width = 16 if trace.arch is Arch.AMD64 else 8
    threads = trace.threads.tolist() if trace.threads is not None else None
    calls = trace.api_calls_by_position()
    rendered: dict[int, str] = {}  # block id -> its lines
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as out:
        out.write(f"; runtrace run trace ({trace.arch.value})\n")
        if trace.meta.sha256:
            out.write(f"; sha256 {trace.meta.sha256}\n")
        tid = None
        for i, block_id in enumerate(trace.visits.tolist()):
            if threads is not None and threads[i] != tid:
                tid = threads[i]
                out.write(f"; thread {tid:x}\n")
            text = rendered.get(block_id)
            if text is None:
                text = rendered[block_id] = "".join(
                    f"{insn.address:0{width}X} {insn.text}\n" for insn in trace.block_instructions(block_id)
                )
            out.write(text)
            for call in calls.get(i, ()):
                out.write(api_comment(call, width) + "\n")
    tmp.replace(path)
    return path


def api_comment(call: ApiCall, width: int) -> str:
    """The comment line of one API call, as the text format writes it and `runtrace show` prints it."""
    stub = "  (stubbed)" if not call.supported else ""
    return f"{'':{width}}  ; api {call.signature()} -> returns to {call.return_address:0{width}X}{stub}"


# "x64dbg-text" and "ollydbg" are found by sniffing the first lines; "text" reads any text log (sniffing
# which) and is what a `.txt` / `.log` file that sniffs as neither is read as, and written as.
register(
    TraceFormat(
        "x64dbg-text",
        read=read_x64dbg_log,
        probe=lambda path, head: sniff_text_format(path) == "x64dbg-text",
        read_pattern=read_custom_log,
    )
)
register(
    TraceFormat(
        "ollydbg",
        read=read_ollydbg_log,
        probe=lambda path, head: sniff_text_format(path) == "ollydbg",
        read_pattern=read_custom_log,
    )
)
register(
    TraceFormat(
        "text",
        read=lambda path, allow_truncated: read_text_log(path, allow_truncated=allow_truncated),
        write=write_text_log,
        hint_suffixes=(".txt", ".log"),
        read_pattern=read_custom_log,
        keeps_api_calls=True,
    )
)
