"""The corpus sources: the config file that names them, and the candidate files each one yields.

A *candidate* is one file some source offers, with its label and provenance but not yet hashed or parsed;
`build.py` turns candidates into manifest rows.  Labels come from provenance alone: the archive's csv for
malware, the package for benign files.
"""

from __future__ import annotations

import csv
import re
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from runtrace.corpus.debsuite import deb_provenance
from runtrace.corpus.fetch import normalise_project
from runtrace.corpus.history_config import PypiHistorySources
from runtrace.corpus.reserved import ReservedError, refuse_reserved
from runtrace.corpus.store import repo_root

DEFAULT_SOURCES = Path(__file__).with_name("sources.toml")
LABELS = ("malicious", "benign")


class ConfigError(ValueError):
    """An unusable sources file; the message names the file and the problem."""


# The toolchains a cap can name (`matching.toolchain_of`).
TOOLCHAINS = Literal[
    "msvc", "msvc-2017+", "rust", "go", "mingw-gcc", "llvm-lld", "delphi", "dotnet", "unknown"
]  # fmt: skip

FamilyKind = Literal["threat-actor", "report-or-campaign", "malware-family", "crypter"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArchiveSource(_Strict):
    name: str
    zip: str
    csv: str
    password: str = ""
    # What the csv's `family` column means depends on which collection a row came from (its `source`
    # column): a threat actor, a report or campaign, a malware family.  Keyed by that column's value;
    # `family_kind_overrides` (keyed by the lower-case family) corrects single labels, e.g. a crypter.
    family_kinds: dict[str, FamilyKind] = {}
    family_kind_overrides: dict[str, FamilyKind] = {}


class DebianSource(_Strict):
    package: str
    architectures: list[str]
    pe_globs: list[str]
    group_by: Literal["package", "module"] = "package"
    suite: str = ""  # another Debian release (bullseye, trixie, sid); "" = the machine's apt sources


class PypiSources(_Strict):
    platforms: list[str] = ["win32", "win_amd64"]
    python: str = "3.11"
    pe_suffixes: list[str] = [".exe", ".dll", ".pyd", ".sys"]
    projects: list[str] = []
    extra_pythons: dict[str, list[str]] = {}


class BuildSettings(_Strict):
    max_per_group: int = Field(default=0, ge=0)
    # Programs (kind exe) per origin group, capped apart from the group's DLLs when set: programs are
    # what the benign side lacks, and a tool rebuilt for every release is not a flood of one module.
    # 0: programs count against `max_per_group` with everything else.
    max_exes_per_group: int = Field(default=0, ge=0)
    max_per_code_group: int = Field(default=0, ge=0)  # files of one code identity (see codeid.py)
    # Programs per origin group of each toolchain named here (`matching.toolchain_of`: the compiler, with
    # Visual C++ split at 2017 into "msvc" and "msvc-2017+"); toolchains not named are not capped.  A
    # composition choice: the benign side should not be mostly the toolchains the malware lacks.
    exes_per_group_by_toolchain: dict[TOOLCHAINS, NonNegativeInt] = {}
    dlls_per_group_by_toolchain: dict[TOOLCHAINS, NonNegativeInt] = {}  # the same for DLLs and drivers


class SourcesConfig(_Strict):
    archive: list[ArchiveSource] = []
    debian: list[DebianSource] = []
    pypi: PypiSources | None = None
    pypi_history: PypiHistorySources | None = None
    build: BuildSettings = BuildSettings()


def shared_dir() -> Path:
    """`shared/` beside the checkout - or beside a folder above it, for a git worktree kept in a
    subfolder next to the main checkout (e.g. work/wt/<branch> with work/shared)."""
    root = repo_root()
    if root is None:
        return Path("shared")
    for parent in root.parents:
        if (parent / "shared").is_dir():
            return parent / "shared"
    return root.parent / "shared"


def expand_path(text: str) -> Path:
    return Path(text.replace("{shared}", str(shared_dir()))).expanduser()


def load_sources(path: Path | None = None) -> SourcesConfig:
    path = path or DEFAULT_SOURCES
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    try:
        config = SourcesConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
    try:
        check_sources(config)
    except ReservedError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def check_sources(config: SourcesConfig) -> None:
    """Refuse a config that names a reserved package (see `reserved.py`), before anything is fetched."""
    if config.pypi is not None:
        for project in [*config.pypi.projects, *config.pypi.extra_pythons]:
            refuse_reserved("pypi", project)


@dataclass(slots=True)
class Candidate:
    """One file a source offers: provenance and a way to read its bytes, nothing computed yet."""

    label: str
    source: str  # "capa-testfiles", "debian", "pypi"
    package: str  # archive name, Debian package or PyPI project
    package_version: str
    origin_group: str
    member: str  # where the file sits inside its package (display and provenance)
    read: Callable[[], bytes]
    archive_path: str = ""  # set for samples kept inside an archive instead of the sample store
    archive_member: str = ""
    archive_password: str = ""
    expected_sha256: str = ""  # from the archive's csv: checked, and lets a rerun skip decryption
    note: str = ""
    first_seen: str = ""  # YYYY-MM-DD the file was first public (upload / package date), "" unknown
    licence: str = ""
    family: str = ""  # the collection's grouping label (actor, report, family), as the csv spells it
    family_kind: str = ""  # what that label is (FamilyKind)
    csv_date: str = ""  # the csv's date for the file (YYYY-MM, YYYY-MM-DD or a range), as written
    first_seen_source: str = ""  # the rule that dated `first_seen`, when the source knows it already
    # A file of an earlier build (`reuse.py`): its sha256 is `expected_sha256`, trusted, and the sample
    # store links this file instead of reading and copying it.
    reuse_path: str = ""

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something a source could not provide; reported, never fatal to the build."""

    where: str
    reason: str


# --- malware archives ---------------------------------------------------------------------------

_PMA = re.compile(r"Practical Malware Analysis Lab (\d+)-\d+", re.IGNORECASE)
_ARCH_SUFFIX = re.compile(r"([-_](x86|x64|32|64|amd64|i386))+$", re.IGNORECASE)
_HEXNAME = re.compile(r"^[0-9a-f]{32,64}$", re.IGNORECASE)


def archive_origin_group(archive: str, row: dict[str, str]) -> str:
    """Family where the csv or the file name tells it; otherwise the file is its own group."""
    family = (row.get("family") or row.get("group") or "").strip()
    if family:
        return f"{archive}/{family.lower()}"
    name = (row.get("original_name") or "").strip()
    lab = _PMA.search(name)
    if lab:
        # A lab's EXE and DLL are one program split in two: they must not straddle train and test.
        return f"{archive}/pma-lab-{int(lab.group(1)):02d}"
    stem = name.rstrip("_").rsplit(".", 1)[0]
    stem = _ARCH_SUFFIX.sub("", stem)
    if not stem or _HEXNAME.match(stem):
        return f"{archive}/sha256:{row['sha256'][:16]}"
    return f"{archive}/{stem.lower()}"


def family_kind(src: ArchiveSource, row: dict[str, str]) -> str:
    """What the row's family label is, from the collection it came from; "" without a label."""
    family = (row.get("family") or "").strip()
    if not family:
        return ""
    override = src.family_kind_overrides.get(family.lower())
    return override or src.family_kinds.get((row.get("source") or "").strip(), "")


def archive_candidates(src: ArchiveSource) -> Iterator[Candidate | Problem]:
    zip_path, csv_path = expand_path(src.zip), expand_path(src.csv)
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        yield Problem(str(csv_path), f"cannot read the csv ({e.strerror})")
        return
    if not rows or "sha256" not in rows[0] or "label" not in rows[0]:
        yield Problem(str(csv_path), "csv lacks the sha256 and label columns")
        return
    try:
        zf = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        yield Problem(str(zip_path), f"cannot open the zip ({e})")
        return
    members = {Path(n).stem.lower(): n for n in zf.namelist() if not n.endswith("/")}
    password = src.password.encode() or None

    def reader(member: str) -> Callable[[], bytes]:
        return lambda: zf.read(member, pwd=password)

    for row in rows:
        sha = (row.get("sha256") or "").strip().lower()
        label = (row.get("label") or "").strip().lower()
        name = row.get("original_name") or sha
        if label not in LABELS:
            yield Problem(f"{zip_path.name}:{name}", f"label {label or '(empty)'!r} is neither class")
            continue
        member = members.get(sha)
        if member is None:
            yield Problem(f"{zip_path.name}:{name}", f"no member named after sha256 {sha[:16]}...")
            continue
        yield Candidate(
            label=label,
            source=src.name,
            package=src.name,
            package_version="",
            origin_group=archive_origin_group(src.name, row),
            member=name,
            read=reader(member),
            archive_path=str(zip_path.resolve()),
            archive_member=member,
            archive_password=src.password,
            expected_sha256=sha,
            note=(row.get("note") or "").strip(),
            family=(row.get("family") or "").strip(),
            family_kind=family_kind(src, row),
            csv_date=(row.get("date") or "").strip(),
        )


# --- Debian packages ----------------------------------------------------------------------------


def debian_candidates(src: DebianSource, arch: str, unpacked: Path, version: str) -> Iterator[Candidate]:
    seen: set[Path] = set()
    first_seen, licence = deb_provenance(unpacked, src.package)
    for pattern in src.pe_globs:
        for path in sorted(unpacked.glob(pattern)):
            if not path.is_file() or path.is_symlink() or path in seen:
                continue
            seen.add(path)
            member = path.relative_to(unpacked).as_posix()
            group = f"debian/{src.package}"
            if src.group_by == "module":
                group += f"/{path.name.lower()}"
            yield Candidate(
                label="benign",
                source="debian",
                package=src.package,
                package_version=f"{version} ({arch})",
                origin_group=group,
                member=member,
                read=path.read_bytes,
                first_seen=first_seen,
                licence=licence,
            )


# --- PyPI wheels --------------------------------------------------------------------------------


def pypi_jobs(cfg: PypiSources) -> list[tuple[str, str, str]]:
    """(project, platform, python) triples to download, in config order."""
    jobs = []
    for project in cfg.projects:
        pythons = [cfg.python, *cfg.extra_pythons.get(project, [])]
        for python in dict.fromkeys(pythons):
            for platform in cfg.platforms:
                jobs.append((project, platform, python))
    return jobs


def wheel_version(wheel: Path) -> str:
    parts = wheel.name.split("-")
    return parts[1] if len(parts) > 2 else ""


def wheel_candidates(project: str, wheel: Path, suffixes: list[str]) -> Iterator[Candidate | Problem]:
    try:
        zf = zipfile.ZipFile(wheel)
        infos = zf.infolist()
    except (OSError, zipfile.BadZipFile) as e:
        yield Problem(str(wheel), f"not a readable wheel ({e})")
        return
    wanted = tuple(s.lower() for s in suffixes)

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        return lambda: zf.read(info)

    for info in infos:
        if info.is_dir() or not info.filename.lower().endswith(wanted):
            continue
        yield Candidate(
            label="benign",
            source="pypi",
            package=normalise_project(project),
            package_version=wheel_version(wheel),
            origin_group=f"pypi/{normalise_project(project)}",
            member=f"{wheel.name}/{info.filename}",
            read=reader(info),
        )
