"""Why each file of the coverage benchmark that runs fewer than 1,000 instructions stops short.

Reads the coverage benchmark's traces (run `python -m benchmarks.run coverage` first; nothing is traced
here) and gives each short file one cause, decided from its trace alone, first rule that applies:

1. **no code**: no entry point, no export, no TLS callback (nothing Windows would run);
2. **tracer error**: no trace (the tracer child hit the hard time limit or the memory cap);
3. the fault the trace ended on (`emulation_fault`): **unmapped read/write**; **unsupported
   instruction** (unicorn's invalid-instruction error, an unhandled interrupt); **genuinely ends**
   for Wine's unimplemented-function stub exception (0x80000100: the library's own code says it has
   nothing there); **unsupported API** for a fetch at or near 0 right after a stubbed call (a function
   pointer the stub should have provided); **unmapped fetch** otherwise;
4. **missing DLL**: among the last three API calls, one into a library that is not part of Windows (the
   program's runtime: MFC, Visual Basic, Python, Borland, ...), whether stubbed or answered by a
   runtrace stand-in, or a `LoadLibrary` of a DLL the emulator does not have;
5. **unsupported API**: among the last three calls, one the emulator had no handler for (Wine's
   debug-output functions excepted: a stub is what they are), or an API handler that failed;
6. **anti-emulation check**: the program called a debugger or sandbox check (`IsDebuggerPresent`,
   `CheckRemoteDebuggerPresent`, `NtQueryInformationProcess`, ...) or passed a sandbox's name to an API,
   then ended;
7. **genuinely ends**: it returned or exited by itself (printed its usage, found no argument it wanted,
   a DLL whose entry and exports return at once).

These are heuristics over what the trace records, not a debugger's verdict; the detail column says what
each rule saw.  `python -m benchmarks.short_traces` prints the tables; `--write` puts them into
docs/tracer.md between the markers `<!-- short-traces -->` and `<!-- /short-traces -->`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from benchmarks.coverage_bench import (
    CACHE,
    MANIFEST,
    SHARED,
    THRESHOLD,
    _benign,
    _malicious,
    has_code,
    kind_of,
)
from runtrace.trace.emulate.batch import trace_path
from runtrace.trace.formats.native import load_trace

TRACES = CACHE / "bench" / "coverage-traces"
ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- short-traces -->", "<!-- /short-traces -->"
CAUSES = ("unsupported API", "unmapped read/write", "unsupported instruction", "unmapped fetch",
          "missing DLL", "anti-emulation check", "genuinely ends", "no code", "tracer error")  # fmt: skip

# Libraries a program brings (or expects beside it) rather than Windows: their code is not in the
# emulator, so a program whose life is inside them (MFC's AfxWinMain, VB6's ThunRTMain) stops there.
_RUNTIME = re.compile(
    r"^(mfc\d+[a-z]*|msvbvm\d+|python\d+|pythoncom\d+|pywintypes\d+|cc32\d+mt|borlndmm|libgc.*|xlcall32"
    r"|vcl\d+|rtl\d+|qt\d*core.*|libstdc\+\+.*|libgcc.*|atl\d+)$",
    re.IGNORECASE,
)
_CHECKS = {"IsDebuggerPresent", "CheckRemoteDebuggerPresent", "NtQueryInformationProcess",
           "ZwQueryInformationProcess", "NtSetInformationThread", "ZwSetInformationThread",
           "OutputDebugStringA", "OutputDebugStringW", "FindWindowA", "FindWindowW",
           "NtQuerySystemInformation", "GetCursorPos"}  # fmt: skip
_SANDBOX = re.compile(r"sbiedll|vmware|vbox|virtualbox|qemu|wine_get_version|ollydbg|x64dbg|wireshark|procmon"
                      r"|sandboxie|cuckoo|dbghelp", re.IGNORECASE)  # fmt: skip
_WINE_DEBUG = re.compile(r"^__wine_dbg_")


def _windows_dlls() -> set[str]:
    """Libraries the emulator has: Speakeasy's handler modules and its configured system DLLs."""
    import importlib.resources

    import speakeasy.winenv.api.usermode as usermode

    names = {p.stem.lower() for p in Path(usermode.__file__).parent.glob("*.py")}
    config = json.loads(importlib.resources.files("speakeasy").joinpath("configs/default.json").read_text())
    names |= {m["name"].lower() for m in config["modules"]["user_modules"]}
    return names


def _module(api: str) -> tuple[str, str]:
    module, _, name = api.partition(".")
    return module.lower().removesuffix(".dll"), name


def classify(trace, windows: set[str]) -> tuple[str, str]:
    """(cause, detail) for one short trace."""
    m, calls = trace.meta, trace.api_calls
    last = calls[-3:]
    detail = m.stop_detail
    if m.stop_reason.value == "emulation_fault":
        if detail.startswith(("invalid_read", "invalid_write")):
            return "unmapped read/write", detail
        if "INSN_INVALID" in detail or detail.startswith("unhandled_interrupt"):
            return "unsupported instruction", detail
        if detail.startswith("unhandled_exception 0x80000100"):
            return "genuinely ends", "Wine's unimplemented-function stub: " + detail
        stubbed = [c for c in last if not c.supported]
        fetch = re.search(r"at (0x[0-9a-f]+)", detail)
        if stubbed and fetch and int(fetch.group(1), 16) < 0x10000:
            runtime = _RUNTIME.match(_module(stubbed[-1].name)[0])
            return "missing DLL" if runtime else "unsupported API", f"{detail} after {stubbed[-1].name}"
        if not detail.startswith("unhandled_exception"):
            return "unmapped fetch", detail
    for c in reversed(last):
        module, name = _module(c.name)
        if _RUNTIME.match(module):
            return "missing DLL", c.name
        if name.startswith("LoadLibrary") and c.args and isinstance(c.args[0], str):
            wanted = c.args[0].lower().rsplit("\\", 1)[-1].removesuffix(".dll")
            if wanted not in windows and not wanted.startswith("api-ms-"):
                return "missing DLL", f"{c.name}({c.args[0]})"
    for c in reversed(last):
        if not c.supported and not _WINE_DEBUG.match(_module(c.name)[1]):
            return "unsupported API", c.name
    failed = [e for e in m.events if e.get("type") == "api_handler_error"]
    if failed:
        return "unsupported API", "handler failed: " + str(failed[0].get("name") or failed[0])[:60]
    for c in calls:
        if _module(c.name)[1] in _CHECKS or any(isinstance(a, str) and _SANDBOX.search(a) for a in c.args):
            return "anti-emulation check", c.signature()[:80]
    if m.stop_reason.value == "emulation_fault":
        return "genuinely ends", detail
    return "genuinely ends", f"{m.stop_reason.value} after {last[-1].name}" if last else m.stop_reason.value


def rows(traces: Path = TRACES) -> list[dict]:
    windows = _windows_dlls()
    classes = [("malicious", _malicious())]
    if MANIFEST.exists():
        classes.append(("benign", _benign()))
    out = []
    for label, samples in classes:
        for s in samples:
            path = trace_path(traces, s.sha256)
            data = s.read()
            base = {
                "class": label,
                "file": f"{s.sha256[:10]} {Path(s.name).name[:36]}",
                "kind": kind_of(data),
            }
            if not has_code(data):
                out.append({**base, "arch": "", "instructions": 0, "cause": "no code", "detail": ""})
                continue
            if not path.exists():
                error = path.with_name(f"{s.sha256}.error.json")
                why = json.loads(error.read_text()).get("error", "")[:80] if error.exists() else "not traced"
                out.append({**base, "arch": "", "instructions": 0, "cause": "tracer error", "detail": why})
                continue
            trace = load_trace(path)
            if trace.instruction_count >= THRESHOLD:
                continue
            cause, detail = classify(trace, windows)
            out.append({**base, "arch": trace.meta.arch.value, "instructions": trace.instruction_count,
                        "cause": cause, "detail": detail.replace("|", "/")})  # fmt: skip
    return out


def markdown(found: list[dict]) -> str:
    count = Counter((r["class"], r["cause"]) for r in found)
    lines = ["| cause | malicious | benign |", "|---|---|---|"]
    lines += [f"| {c} | {count[('malicious', c)]} | {count[('benign', c)]} |" for c in CAUSES if
              count[("malicious", c)] or count[("benign", c)]]  # fmt: skip
    total = Counter(r["class"] for r in found)
    lines += [f"| all short files | {total['malicious']} | {total['benign']} |", ""]
    cols = ["class", "file", "kind", "arch", "instructions", "cause", "detail"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = {c: i for i, c in enumerate(CAUSES)}
    for r in sorted(found, key=lambda r: (r["class"] != "malicious", order[r["cause"]], r["file"])):
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the tables in docs/tracer.md")
    parser.add_argument("--traces", type=Path, default=TRACES, help="the coverage benchmark's trace folder")
    args = parser.parse_args(argv)
    if not (SHARED / "capa-testfiles.zip").exists():
        sys.exit("../shared/samples not present")
    text = markdown(rows(args.traces))
    if not args.write:
        print(text)
        return
    doc = ROOT / "docs" / "tracer.md"
    old = doc.read_text()
    if START not in old or END not in old:
        sys.exit(f"{doc}: markers {START} and {END} not found")
    head, rest = old.split(START, 1)
    doc.write_text(head + START + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
