"""The files of an earlier build as a source: rebuilding with new sources without fetching the old ones.

A build keeps every usable file it read, before its caps, in `parsed.parquet` beside its manifest, and
the benign ones in its sample store.  `runtrace corpus build --reuse-build DIR` offers those files again,
each with the provenance, labels and dates it was read with: the new build links the samples into its
own store (no copy, no download) and reuses their PE metadata, then applies the caps afresh over old and
new files together.  With a sources file that lists only what was added since, the result is what a
build of every source would give, without fetching again what the earlier one fetched.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from runtrace.corpus import manifest as mf
from runtrace.corpus.sources import Candidate, Problem
from runtrace.corpus.store import SampleStore

PARSED_NAME = "parsed.parquet"  # as `build.PARSED_NAME` (build imports this module)


def earlier_rows(corpus_dir: Path) -> list[dict]:
    """Every usable file of the build in `corpus_dir` before its caps, paths made absolute."""
    return mf.read_manifest_rows(corpus_dir / PARSED_NAME)


def reuse_candidates(rows: list[dict], corpus_dir: Path) -> Iterator[Candidate | Problem]:
    """One candidate per file and per origin group it was found in (its `also_in` too).  A benign file
    is looked up in `corpus_dir`'s store by its sha256, not by the path the row names: an older build
    wrote absolute paths, which a moved corpus no longer has."""
    store = SampleStore(corpus_dir)
    for row in rows:
        first_seen = row.get("first_seen")
        base = Candidate(
            label=row["label"],
            source=row["source"],
            package=row["package"],
            package_version=row.get("package_version") or "",
            origin_group=row["origin_group"],
            member=row["member"],
            read=lambda: b"",  # set below
            note=row.get("note") or "",
            first_seen=first_seen.isoformat() if first_seen else "",
            first_seen_source=row.get("first_seen_source") or "",
            licence=row.get("licence") or "",
            family=row.get("family") or "",
            family_kind=row.get("family_kind") or "",
            expected_sha256=row["sha256"],
        )
        if row.get("storage") == "zip":
            # Malware stays in its archive: the candidate names the member as the archive source does.
            base.archive_path, base.archive_member = row["path"], row.get("archive_member") or ""
            base.archive_password = row.get("archive_password") or ""
            member, password = base.archive_member, base.archive_password
            base.read = lambda p=row["path"], m=member, pw=password: _read_member(p, m, pw)
        elif store.path_for(row["sha256"]).is_file():
            base.reuse_path = str(store.path_for(row["sha256"]))
            base.read = lambda p=base.reuse_path: Path(p).read_bytes()
        else:
            yield Problem(f"{row['package']}:{row['member']}", "the earlier build's sample is gone")
            continue
        yield base
        for other in row.get("also_in") or []:
            yield _copy(base, other)


def _copy(c: Candidate, origin_group: str) -> Candidate:
    return replace(c, origin_group=origin_group)


def _read_member(path: str, member: str, password: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(member, pwd=password.encode() or None)
