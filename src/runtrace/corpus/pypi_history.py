"""Benign Windows programs from PyPI's history: installers, eggs, wheels and sdists uploaded 2005-2018.

The malware in the corpus was mostly built with Visual C++ 6 to 2015.  PyPI kept every file projects
uploaded in those years, with its upload time: `bdist_wininst` installers (an MSVC-built EXE stub with a
zip of the package appended), win32 / win-amd64 eggs and wheels, and sdists that carry prebuilt Windows
programs (PyInstaller's bootloaders, setuptools' launchers).  This module lists a project's files through
the registry's JSON API, picks a capped, spread-out selection, downloads each file once into the cache
(checked against the registry's sha256) and yields the PE files inside as corpus candidates, each with
its project, release, upload date and licence.

Reserved projects (see `is_reserved`) are refused before anything is asked of the registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runtrace.corpus.fetch import FetchError, normalise_project
from runtrace.corpus.history_config import HistoryProject, PypiHistorySources
from runtrace.corpus.sources import Candidate, Problem

JSON_URL = "https://pypi.org/pypi/{project}/json"
FILES_URL = "https://files.pythonhosted.org/packages/"
USER_AGENT = "runtrace-corpus (+https://pypi.org/project/runtrace/; one request at a time)"
# PE suffixes looked for inside archives; the installer EXE itself is always a candidate.
PE_SUFFIXES = (".exe", ".dll", ".pyd", ".ocx", ".cpl", ".scr")
PROGRAM_SUFFIXES = (".exe",)  # what a `programs_only` project yields
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".zip")
# Python 2's distutils wrote installers for these platforms only; anything else (arm, ia64) is left out.
_WHEEL_PLATFORM = re.compile(r"-(win32|win_amd64)\.whl$")
_ANY_WHEEL = re.compile(r"-none-any\.whl$")
_EGG_PLATFORM = re.compile(r"-(win32|win-amd64)\.egg$")
_WININST_PLATFORM = re.compile(r"\.(win32|win-amd64)(-py\d\.\d+)?\.exe$")


def is_reserved(project: str) -> bool:
    """PyPI projects kept for an independent check of runtrace: sha256 of the PEP 503 name starts 0/1."""
    return hashlib.sha256(normalise_project(project).encode()).hexdigest()[0] in "01"


@dataclass(frozen=True, slots=True)
class ReleaseFile:
    project: str
    version: str
    filename: str
    url: str
    sha256: str
    size: int
    upload_date: str  # YYYY-MM-DD
    packagetype: str
    python_version: str
    licence: str

    @property
    def year(self) -> int:
        return int(self.upload_date[:4])

    @property
    def platform(self) -> str:
        name = self.filename.lower()
        return "amd64" if ("amd64" in name or "win_amd64" in name) else "win32"


# --- the registry --------------------------------------------------------------------------------


def _http_get(url: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.read()


# A registry JSON document is small: a minute without an answer means the request is stuck.
JSON_TIMEOUT_S = 60.0


def project_json(project: str, downloads_dir: Path, timeout_s: float = JSON_TIMEOUT_S) -> dict:
    """The registry's JSON for one project, cached: a rerun asks nothing of the network."""
    if is_reserved(project):
        raise FetchError(f"{project}: reserved project (independent check), never fetched")
    path = downloads_dir / "pypi-json" / f"{normalise_project(project)}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    try:
        raw = _http_get(JSON_URL.format(project=normalise_project(project)), timeout_s)
    except urllib.error.HTTPError as e:
        raise FetchError(f"pypi json {project}: HTTP {e.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise FetchError(f"pypi json {project}: {getattr(e, 'reason', e)}") from None
    data = json.loads(raw)
    # Only what selection needs: the full answer repeats the long description per release.
    slim = {"info": {k: data["info"].get(k) for k in ("name", "license", "classifiers")}}
    slim["releases"] = data.get("releases", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(slim), encoding="utf-8")
    tmp.replace(path)
    return slim


def licence_of(info: dict) -> str:
    text = (info.get("license") or "").strip()
    if text and len(text) <= 80 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in info.get("classifiers") or [] if c.startswith("License ::")]
    return "; ".join(classifiers) or (text.splitlines()[0][:80] if text else "")


def _absolute(url: str) -> str:
    # Some files from the registry's first years are listed with a relative path ("../../packages/...").
    if url.startswith(("https://", "http://")):
        return url
    return FILES_URL + url.rsplit("packages/", 1)[-1]


def _is_windows_binary(f: dict, entry: HistoryProject) -> bool:
    name = f["filename"].lower()
    kind = f.get("packagetype", "")
    if kind == "bdist_wininst":
        return name.endswith(".exe")
    if kind == "bdist_egg":
        return bool(_EGG_PLATFORM.search(name))
    if kind == "bdist_wheel":
        return bool(_WHEEL_PLATFORM.search(name) or (entry.any_wheels and _ANY_WHEEL.search(name)))
    if kind == "sdist":
        return entry.sdists and name.endswith(SDIST_SUFFIXES)
    return False  # bdist_msi: an MSI database, which no reachable tool here unpacks


def years(entry: HistoryProject, cfg: PypiHistorySources) -> tuple[int, int]:
    """The upload years read for one project: its own where it sets them, else the section's."""
    return entry.first_year or cfg.first_year, entry.last_year or cfg.last_year


def windows_files(meta: dict, entry: HistoryProject, cfg: PypiHistorySources) -> list[ReleaseFile]:
    """Every Windows binary (and, if asked, sdist) the project uploaded within the years, oldest first."""
    licence = licence_of(meta.get("info") or {})
    first, last = years(entry, cfg)
    out = []
    for version, files in (meta.get("releases") or {}).items():
        for f in files:
            uploaded = (f.get("upload_time") or "")[:10]
            if not uploaded or not (first <= int(uploaded[:4]) <= last):
                continue
            if f.get("yanked") or not _is_windows_binary(f, entry):
                continue
            out.append(
                ReleaseFile(
                    project=normalise_project(entry.name),
                    version=version,
                    filename=f["filename"],
                    url=_absolute(f["url"]),
                    sha256=(f.get("digests") or {}).get("sha256", ""),
                    size=int(f.get("size") or 0),
                    upload_date=uploaded,
                    packagetype=f.get("packagetype", ""),
                    python_version=f.get("python_version") or "",
                    licence=licence,
                )
            )
    return sorted(out, key=lambda r: (r.upload_date, r.filename))


def one_per_release(files: list[ReleaseFile]) -> list[ReleaseFile]:
    """The first file (oldest upload, then name) of each release, platform and package type."""
    chosen: dict[tuple[str, str, str], ReleaseFile] = {}
    for f in sorted(files, key=lambda r: (r.upload_date, r.filename)):
        chosen.setdefault((f.version, f.platform, f.packagetype), f)
    return sorted(chosen.values(), key=lambda r: (r.upload_date, r.filename))


def select_files(files: list[ReleaseFile], cap: int, max_bytes: int) -> list[ReleaseFile]:
    """At most `cap` files, spread over releases, platforms and Python versions.

    Files are bucketed by (package type, platform, Python version); buckets are visited in turn and each
    gives its releases spread from oldest to newest (first, last, middle, ...), so a small cap still
    covers the project's years and toolchains rather than its latest releases.
    """
    small = [f for f in files if f.size <= max_bytes]
    buckets: dict[tuple, list[ReleaseFile]] = defaultdict(list)
    for f in small:
        buckets[(f.packagetype, f.platform, f.python_version)].append(f)
    queues = [_spread(b) for _, b in sorted(buckets.items())]
    chosen: list[ReleaseFile] = []
    while len(chosen) < cap and any(queues):
        for q in queues:
            if q and len(chosen) < cap:
                chosen.append(q.pop(0))
    return sorted(chosen, key=lambda r: (r.upload_date, r.filename))


def _spread(items: list) -> list:
    """Items reordered so any prefix spans the whole list: ends first, then repeated halving."""
    if len(items) <= 2:
        return list(items)
    order, seen = [], set()
    step = len(items) - 1
    while step >= 1 and len(order) < len(items):
        for i in range(0, len(items), step):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return [items[i] for i in order]


def download(f: ReleaseFile, downloads_dir: Path, timeout_s: float = 600) -> Path:
    """The file in the cache, downloaded once and checked against the registry's sha256."""
    folder = downloads_dir / "pypi-history" / f.project
    path = folder / f.filename
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (f.filename + ".partial")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(f.url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout_s) as response, tmp.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"download {f.filename}: {getattr(e, 'reason', e)}") from None
    if f.sha256 and digest.hexdigest() != f.sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"download {f.filename}: sha256 differs from the registry's")
    tmp.replace(path)
    return path


# --- files inside what was downloaded -----------------------------------------------------------


def _candidate(f: ReleaseFile, group: str, member: str, read: Callable[[], bytes], note: str) -> Candidate:
    return Candidate(
        label="benign",
        source="pypi-history",
        package=f.project,
        package_version=f.version,
        origin_group=group,
        member=f"{f.filename}/{member}" if member else f.filename,
        read=read,
        note=note,
        first_seen=f.upload_date,
        licence=f.licence,
    )


def _zip_members(path: Path, suffixes: tuple[str, ...]) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    zf = zipfile.ZipFile(path)  # also opens a zip appended to an installer stub
    wanted = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(suffixes)]
    return zf, wanted


def file_candidates(
    f: ReleaseFile, path: Path, group: str, suffixes: tuple[str, ...] = PE_SUFFIXES
) -> Iterator[Candidate | Problem]:
    """The PE files a downloaded file holds: an installer and its payload, or an archive's members
    whose names end with one of `suffixes`."""
    name = f.filename.lower()
    if f.packagetype == "bdist_wininst":
        # The installer itself is a program (the distutils stub, with the package zipped after it).
        yield _candidate(f, group, "", path.read_bytes, "bdist_wininst installer (stub + payload zip)")
    try:
        if name.endswith((".exe", ".whl", ".egg", ".zip")):
            zf, infos = _zip_members(path, suffixes)
            for info in infos:
                yield _candidate(f, group, info.filename, (lambda i=info: zf.read(i)), "")
        elif name.endswith((".tar.gz", ".tgz", ".tar.bz2")):
            yield from _tar_candidates(f, path, group, suffixes)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        yield Problem(f"pypi-history {f.filename}", f"unreadable archive ({type(e).__name__}: {e})")


def _tar_candidates(f: ReleaseFile, path: Path, group: str, suffixes: tuple[str, ...]) -> Iterator[Candidate]:
    # Members are read now (a tar has no random access); only PE-named members are kept in memory.
    with tarfile.open(path) as tf:
        for info in tf:
            if info.isfile() and info.name.lower().endswith(suffixes) and info.size < (64 << 20):
                handle = tf.extractfile(info)
                if handle is None:
                    continue
                data = handle.read()
                yield _candidate(f, group, info.name, (lambda d=data: d), "")


# --- the source as a whole ----------------------------------------------------------------------


@dataclass
class HistoryJob:
    entry: HistoryProject
    files: list[ReleaseFile]


def plan(
    cfg: PypiHistorySources, downloads_dir: Path, pause_s: float = 0.2
) -> Iterator[HistoryJob | Problem]:
    """Ask the registry (or the cache) for each project's files and choose which to download."""
    for entry in cfg.entries():
        if is_reserved(entry.name):
            yield Problem(f"pypi-history {entry.name}", "reserved project (independent check): left out")
            continue
        cached = (downloads_dir / "pypi-json" / f"{normalise_project(entry.name)}.json").is_file()
        try:
            meta = project_json(entry.name, downloads_dir)
        except FetchError as e:
            yield Problem(f"pypi-history {entry.name}", str(e))
            continue
        if not cached:
            time.sleep(pause_s)  # one request at a time, gently
        files = windows_files(meta, entry, cfg)
        if entry.one_per_release:
            files = one_per_release(files)
        if not files:
            first, last = years(entry, cfg)
            yield Problem(f"pypi-history {entry.name}", f"no Windows files {first}-{last}")
            continue
        cap = entry.max_files or cfg.max_files
        yield HistoryJob(entry, select_files(files, cap, (entry.max_file_mb or cfg.max_file_mb) << 20))


def history_candidates(
    job: HistoryJob,
    downloads_dir: Path,
    advance: Callable[[int], None] = lambda n=1: None,
    max_members: int = 150,
) -> Iterator[Candidate | Problem]:
    """The PE files of a project's selected downloads: at most `max_members`, taken from each download
    in turn and programs (EXEs) first within each, so the cap keeps every release and toolchain."""
    group = job.entry.group or f"pypi/{normalise_project(job.entry.name)}"
    suffixes = PROGRAM_SUFFIXES if job.entry.programs_only else PE_SUFFIXES
    queues: list[list[Candidate]] = []
    for f in job.files:
        try:
            path = download(f, downloads_dir)
        except FetchError as e:
            yield Problem(f"pypi-history {f.filename}", str(e))
            advance(1)
            continue
        found: list[Candidate] = []
        for item in file_candidates(f, path, group, suffixes):
            if isinstance(item, Problem):
                yield item
            else:
                found.append(item)
        queues.append(sorted(found, key=lambda c: not c.file_name.lower().endswith(".exe")))
        advance(1)
    taken = 0
    while taken < max_members and any(queues):
        for q in queues:
            if q and taken < max_members:
                yield q.pop(0)
                taken += 1
