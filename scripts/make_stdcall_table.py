"""Build the table of x86 stdcall argument sizes the tracer pops for APIs it has no handler for
(`src/runtrace/data/stdcall/arguments.tsv.gz`, read by `runtrace.trace.emulate.stdcallargs`), and the
list of the system DLLs those import libraries name (`libraries.txt`, read by
`runtrace.trace.emulate.systemdlls`: a program may load any of them).

The sizes are facts of each API's signature, spelled in the decorated names of MinGW-w64's i386 import
libraries (`_SetFileAttributesA@8`: two 4-byte arguments).  Debian packages those libraries as
`mingw-w64-i686-dev`; this reads the symbol table of every import library in the package (the GNU
`ar` index), nothing else of it, and writes one line per API: `name<TAB>bytes` where every library that
declares the name agrees, `dll!name<TAB>bytes` per DLL where they differ.

    apt-get download mingw-w64-i686-dev
    python scripts/make_stdcall_table.py mingw-w64-i686-dev_*.deb
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import struct
import subprocess
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "runtrace" / "data" / "stdcall" / "arguments.tsv.gz"
LIBRARIES = "libraries.txt"  # beside the table
LIBS = re.compile(r"^\./usr/i686-w64-mingw32/lib/lib(?P<dll>[\w.+-]+)\.a$")
STDCALL = re.compile(r"^_(?P<name>[A-Za-z_][A-Za-z0-9_]*)@(?P<bytes>\d+)$")


def ar_index(data: bytes) -> list[str]:
    """The symbol names of a GNU `ar` archive's index (its first member, named "/"); [] without one."""
    if not data.startswith(b"!<arch>\n") or data[8:24].strip() != b"/":
        return []
    size = int(data[56:66])
    index = data[68 : 68 + size]
    count = struct.unpack(">I", index[:4])[0]
    return [s.decode("latin-1") for s in index[4 + 4 * count :].split(b"\0")[:count]]


def import_libraries(deb: Path):
    """(DLL name, symbol names) of each import library in the package: archives whose index holds
    dlltool's `_head_` symbol (the static helper libraries have none)."""
    command = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    try:
        data = subprocess.run(command, check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        said = e.stderr.decode(errors="replace").strip()
        raise SystemExit(f"error: {deb}: not a Debian package dpkg-deb can read ({said})") from None
    except OSError as e:  # no dpkg-deb
        raise SystemExit(f"error: cannot run dpkg-deb: {e}") from None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            match = LIBS.match(member.name)
            if not match or not member.isfile():
                continue
            archive = tar.extractfile(member).read()
            symbols = ar_index(archive)
            if any("_head_" in s for s in symbols):
                yield match["dll"].lower(), symbols


def table(libraries) -> dict[str, int]:
    sizes: dict[str, dict[str, int]] = defaultdict(dict)
    for dll, symbols in libraries:
        for symbol in symbols:
            match = STDCALL.match(symbol)
            if match and not match["name"].startswith("_imp_"):
                sizes[match["name"]][dll] = int(match["bytes"])
    out: dict[str, int] = {}
    for name, by_dll in sizes.items():
        if len(set(by_dll.values())) == 1:
            out[name] = next(iter(by_dll.values()))
        else:
            out.update({f"{dll}!{name}": size for dll, size in by_dll.items()})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deb", type=Path, help="mingw-w64-i686-dev_*.deb")
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    libraries = list(import_libraries(args.deb))
    rows = table(libraries)
    if not rows:
        raise SystemExit(f"error: {args.deb}: no i386 import library with stdcall names in it")
    text = "".join(f"{key}\t{size}\n" for key, size in sorted(rows.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same package gives the same bytes
    args.out.write_bytes(gzip.compress(text.encode("ascii"), mtime=0))
    names = sorted({dll for dll, _ in libraries})
    (args.out.parent / LIBRARIES).write_text("".join(f"{name}\n" for name in names), encoding="ascii")
    digest = hashlib.sha256(args.deb.read_bytes()).hexdigest()
    print(f"{args.out}: {len(rows)} entries from {args.deb.name} (sha256 {digest})", file=sys.stderr)
    print(f"{args.out.parent / LIBRARIES}: {len(names)} DLL names", file=sys.stderr)


if __name__ == "__main__":
    main()
