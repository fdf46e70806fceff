"""Distinct code, not distinct files: a code identity per PE file, and the CV groups built from it.

Installers share stubs and wheels share runtimes.  Two files with different bytes can hold the same
program: a `bdist_wininst` installer is the same distutils stub whatever package is zipped after it, a
runtime DLL is re-signed or re-stamped, a launcher is copied into many packages.  Counting such files as
independent inflates the corpus and, worse, lets one program sit in both a training and a test fold.

`code_identity` hashes the executable sections of a PE file with every base-relocation target zeroed,
so the hash ignores everything outside the code (headers, timestamps, resources, signatures, overlays)
and where the image was meant to load.  Files with equal identities form one *code group*.
`cv_groups` then gives each file the group cross-validation must keep whole: origin groups joined by the
code they share, except that code shared by many origins (a stub, a launcher, a runtime DLL) is a group
of its own rather than a bridge that would chain half the corpus into one group.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter, defaultdict

import numpy as np

IMAGE_SCN_CNT_CODE = 0x00000020
IMAGE_SCN_MEM_EXECUTE = 0x20000000
RELOC_HIGHLOW = 3  # 32-bit absolute address
RELOC_DIR64 = 10  # 64-bit absolute address
# A code group spread over more origin groups than this is shared infrastructure, not one project's code.
SHARED_CODE_MIN_ORIGINS = 3


def _u16(data: bytes, off: int) -> int:
    return struct.unpack_from("<H", data, off)[0]


def _u32(data: bytes, off: int) -> int:
    return struct.unpack_from("<I", data, off)[0]


def _sections(data: bytes, e_lfanew: int) -> tuple[list[tuple[int, int, int, int, int]], int, int]:
    """(virtual address, virtual size, raw offset, raw size, characteristics) per section; the reloc
    directory's RVA and size."""
    n_sections = _u16(data, e_lfanew + 6)
    opt_size = _u16(data, e_lfanew + 20)
    opt = e_lfanew + 24
    magic = _u16(data, opt)
    dirs = opt + (96 if magic == 0x10B else 112)
    n_dirs = _u32(data, dirs - 4)
    reloc_rva, reloc_size = (_u32(data, dirs + 5 * 8), _u32(data, dirs + 5 * 8 + 4)) if n_dirs > 5 else (0, 0)
    table = opt + opt_size
    out = []
    for i in range(n_sections):
        s = table + 40 * i
        vsize, va, raw_size, raw_off = struct.unpack_from("<IIII", data, s + 8)
        out.append((va, vsize, raw_off, raw_size, _u32(data, s + 36)))
    return out, reloc_rva, reloc_size


def _rva_to_offset(sections, rva: int) -> int | None:
    for va, vsize, raw_off, raw_size, _ in sections:
        if va <= rva < va + max(vsize, raw_size):
            return raw_off + (rva - va)
    return None


def _reloc_targets(data: bytes, sections, reloc_rva: int, reloc_size: int) -> tuple[np.ndarray, np.ndarray]:
    """RVAs of 4-byte and of 8-byte relocation targets."""
    off = _rva_to_offset(sections, reloc_rva) if reloc_rva and reloc_size else None
    if off is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    end = min(len(data), off + reloc_size)
    four, eight = [], []
    while off + 8 <= end:
        page, block = struct.unpack_from("<II", data, off)
        if block < 8 or off + block > end:
            break
        entries = np.frombuffer(data, dtype="<u2", count=(block - 8) // 2, offset=off + 8).astype(np.int64)
        kinds, offsets = entries >> 12, (entries & 0xFFF) + page
        four.append(offsets[kinds == RELOC_HIGHLOW])
        eight.append(offsets[kinds == RELOC_DIR64])
        off += block
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(four), cat(eight)


def code_identity(data: bytes) -> str:
    """`code:<sha256[:32]>` of the relocation-neutral executable sections, or `file:<sha256[:32]>` for
    an image with no executable section (resource-only DLLs) or headers this reader cannot follow."""
    try:
        e_lfanew = _u32(data, 0x3C)
        machine = _u16(data, e_lfanew + 4)
        sections, reloc_rva, reloc_size = _sections(data, e_lfanew)
        four, eight = _reloc_targets(data, sections, reloc_rva, reloc_size)
    except (struct.error, ValueError, IndexError):
        sections = []
    digest = hashlib.sha256()
    found = False
    for va, vsize, raw_off, raw_size, flags in sections:
        if not flags & (IMAGE_SCN_CNT_CODE | IMAGE_SCN_MEM_EXECUTE):
            continue
        length = min(raw_size, vsize) if vsize else raw_size
        body = np.frombuffer(data, dtype=np.uint8, count=max(0, min(length, len(data) - raw_off)),
                             offset=min(raw_off, len(data))).copy()  # fmt: skip
        for targets, width in ((four, 4), (eight, 8)):
            local = targets[(targets >= va) & (targets < va + len(body))] - va
            for k in range(width):
                body[np.clip(local + k, 0, max(0, len(body) - 1))] = 0
        digest.update(struct.pack("<HI", machine, len(body)))
        digest.update(body.tobytes())
        found = True
    if not found:
        return "file:" + hashlib.sha256(data).hexdigest()[:32]
    return "code:" + digest.hexdigest()[:32]


# --- groups ---------------------------------------------------------------------------------------


def _origins(row: dict) -> list[str]:
    return [row["origin_group"], *(row.get("also_in") or [])]


def code_group_origins(rows: list[dict]) -> dict[str, set[str]]:
    spread: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        spread[row.get("code_id") or row["sha256"]].update(_origins(row))
    return spread


def cv_groups(
    rows: list[dict],
    shared_min_origins: int = SHARED_CODE_MIN_ORIGINS,
    spread: dict[str, set[str]] | None = None,
) -> list[str]:
    """The cross-validation group of each row: no fold may split it.

    Origin groups that share code are joined (union-find); code shared by more than
    `shared_min_origins` origin groups is instead its own group (`code:...`), so that one installer stub
    does not chain every project that used it into a single group.  `spread` (code -> origin groups) is
    best taken before any cap: a stub capped to three files was still shared by all its projects."""
    full = code_group_origins(rows)
    for code, origins in (spread or {}).items():
        full[code] = full.get(code, set()) | origins
    spread = full
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def shared(code: str) -> bool:
        return len(spread[code]) > shared_min_origins

    present = {row.get("code_id") or row["sha256"] for row in rows}
    for code, origins in spread.items():
        if shared(code) or code not in present:
            continue
        first, *rest = sorted(origins)
        for other in rest:
            parent[find(other)] = find(first)
    out = []
    for row in rows:
        code = row.get("code_id") or row["sha256"]
        out.append(code if shared(code) else find(row["origin_group"]))
    return out


def apply_code_cap(rows: list[dict], cap: int) -> tuple[list[dict], Counter]:
    """Keep at most `cap` benign files of one code identity, taken across its origin groups in turn
    (sha256 order within each), so a stub shared by a thousand installers counts as a few files, not a
    thousand.  Malware is never capped (as in `build.apply_group_cap`): builds of one kit that share
    their code are a family's variants, every one of which the corpus keeps."""
    if cap <= 0:
        return rows, Counter()
    by_code: dict[str, list[dict]] = defaultdict(list)
    kept: list[dict] = []
    for row in rows:
        if row["label"] == "benign":
            by_code[row.get("code_id") or row["sha256"]].append(row)
        else:
            kept.append(row)
    dropped: Counter = Counter()
    for code, members in by_code.items():
        if len(members) <= cap:
            kept.extend(members)
            continue
        by_origin: dict[str, list[dict]] = defaultdict(list)
        for row in sorted(members, key=lambda r: r["sha256"]):
            by_origin[row["origin_group"]].append(row)
        chosen = round_robin([by_origin[k] for k in sorted(by_origin)], cap)
        kept.extend(chosen)
        dropped[code] = len(members) - cap
    return kept, dropped


def round_robin(queues: list[list[dict]], limit: int) -> list[dict]:
    """Up to `limit` rows taken one from each queue in turn (emptying the queues): a capped group keeps
    a spread over its queues (origins, architectures) rather than the first queue whole."""
    chosen: list[dict] = []
    while len(chosen) < limit and any(queues):
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(q.pop(0))
    return chosen
