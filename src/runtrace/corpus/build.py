"""`runtrace corpus build`: sources -> deduplicated, content-addressed samples + the Parquet manifest.

Malware stays inside its encrypted archive (the manifest keeps zip path + member); benign files are copied
into the sample store under their sha256.  Nothing is executed.  Every file that cannot be used is
reported with a reason and skipped; the build itself only stops for a problem with its own output.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from runtrace.corpus import manifest as mf
from runtrace.corpus import pypi_history
from runtrace.corpus.codeid import apply_code_cap, code_group_origins, code_identity, cv_groups, round_robin
from runtrace.corpus.dates import (
    CSV_DATE,
    DEBIAN_CHANGELOG,
    PYPI_UPLOAD,
    archive_date,
    assign_first_seen,
    parse_csv_date,
)
from runtrace.corpus.debsuite import fetch_deb_suite
from runtrace.corpus.fetch import FetchError, fetch_deb, fetch_wheels
from runtrace.corpus.matching import toolchain_of
from runtrace.corpus.pemeta import NotPeError, read_pe_meta
from runtrace.corpus.reserved import refuse_reserved
from runtrace.corpus.reuse import earlier_rows, reuse_candidates
from runtrace.corpus.sources import (
    Candidate,
    Problem,
    SourcesConfig,
    archive_candidates,
    debian_candidates,
    pypi_jobs,
    wheel_candidates,
)
from runtrace.corpus.store import MANIFEST_NAME, SKIPPED_NAME, SampleStore, refuse_inside_repo, sha256_of

PE_COLUMNS = [f.name for f in mf.PE_FIELDS]


# Partners agree exactly on these (the linker's major version is its toolchain generation: VC6, VS2008,
# VS2010, VS2015+ (14), GNU ld (2)) ...
MATCH_EXACT = ("arch", "kind", "linker_major")
# ... and are near on these.
MATCH_NEAR = ("linker_minor", "size", "section_count", "import_count")
MATCH_MAX_PER_GROUP = 10  # keeps the matched benign side from leaning on a few big projects
# Largest distance (in pooled standard deviations, over the four features) at which two files count as
# look-alikes.  Without a caliper every malicious file gets a partner, however unlike it.
MATCH_CALIPER = 0.5


@dataclass
class BuildOptions:
    corpus_dir: Path
    downloads_dir: Path
    sources: SourcesConfig
    max_per_group: int = 0
    max_exes_per_group: int = 0  # 0: programs share `max_per_group` with the rest
    max_per_code_group: int = 0
    match_caliper: float = MATCH_CALIPER
    download_workers: int = 4
    use_archives: bool = True
    use_debian: bool = True
    use_pypi: bool = True
    use_pypi_history: bool = True
    # Programs per origin group, per toolchain (`matching.toolchain_of`); toolchains not named are not capped.
    exes_per_group_by_toolchain: dict[str, int] = field(default_factory=dict)
    dlls_per_group_by_toolchain: dict[str, int] = field(default_factory=dict)  # the same for the rest
    # An earlier build whose files (before its caps) are taken again as they are (`reuse.py`).
    reuse_build: Path | None = None


@dataclass
class BuildResult:
    rows: list[dict]
    problems: list[Problem]
    capped: Counter = field(default_factory=Counter)  # origin group -> rows dropped by the cap
    code_capped: Counter = field(default_factory=Counter)  # code identity -> rows dropped by its cap
    toolchain_capped: Counter = field(default_factory=Counter)  # (kind, toolchain) -> files dropped
    manifest_path: Path | None = None
    skipped_path: Path | None = None
    undated: list[Problem] = field(default_factory=list)  # rows a dating rule should have dated, and why


class Progress:
    """The build's hooks into a progress display; the CLI passes rich bars, tests pass nothing."""

    def stage(self, name: str, total: int | None) -> Callable[[int], None]:
        return lambda n=1: None

    def message(self, text: str) -> None:
        pass


# --- gathering candidates -----------------------------------------------------------------------


def _debian(opts: BuildOptions, progress: Progress) -> Iterator[Candidate | Problem]:
    jobs = [(src, arch) for src in opts.sources.debian for arch in src.architectures]
    advance = progress.stage("debian packages", len(jobs))
    for src, arch in jobs:
        try:
            if src.suite:
                unpacked, version = fetch_deb_suite(src.package, arch, src.suite, opts.downloads_dir)
            else:
                unpacked, version = fetch_deb(src.package, arch, opts.downloads_dir)
        except FetchError as e:
            yield Problem(f"debian {src.package}:{arch}{f' ({src.suite})' if src.suite else ''}", str(e))
        else:
            yield from debian_candidates(src, arch, unpacked, version)
        advance(1)


def _pypi(opts: BuildOptions, progress: Progress) -> Iterator[Candidate | Problem]:
    cfg = opts.sources.pypi
    if cfg is None:
        return
    jobs = pypi_jobs(cfg)
    advance = progress.stage("pypi wheels", len(jobs))

    def one(job: tuple[str, str, str]) -> tuple[tuple[str, str, str], list[Path] | FetchError]:
        try:
            return job, fetch_wheels(*job, opts.downloads_dir)
        except FetchError as e:
            return job, e

    # Downloads wait on the network, not the CPU, so a few threads shorten the build a lot.
    seen_wheels: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, opts.download_workers)) as pool:
        results = []
        for job, result in pool.map(one, jobs):
            advance(1)
            results.append((job, result))
    for (project, platform, python), result in results:
        if isinstance(result, FetchError):
            yield Problem(f"pypi {project} {platform} py{python}", str(result))
            continue
        for wheel in result:
            # A pure-Python wheel is the same file for every platform: read it once.
            if wheel.name in seen_wheels:
                continue
            seen_wheels.add(wheel.name)
            yield from wheel_candidates(project, wheel, cfg.pe_suffixes)


def _pypi_history(opts: BuildOptions, progress: Progress) -> Iterator[Candidate | Problem]:
    cfg = opts.sources.pypi_history
    if cfg is None:
        return
    advance = progress.stage("pypi history: projects", len(cfg.projects))
    jobs = []
    for item in pypi_history.plan(cfg, opts.downloads_dir):
        advance(1)
        if isinstance(item, Problem):
            yield item
        else:
            jobs.append(item)
    advance = progress.stage("pypi history: files", sum(len(j.files) for j in jobs))
    for job in jobs:
        yield from pypi_history.history_candidates(job, opts.downloads_dir, advance, cfg.max_members)


def _sources(opts: BuildOptions, progress: Progress) -> Iterator[Candidate | Problem]:
    if opts.reuse_build is not None:
        yield from reuse_candidates(earlier_rows(opts.reuse_build), opts.reuse_build)
    if opts.use_archives:
        for src in opts.sources.archive:
            yield from archive_candidates(src)
    if opts.use_debian:
        yield from _debian(opts, progress)
    if opts.use_pypi:
        yield from _pypi(opts, progress)
    if opts.use_pypi_history:
        yield from _pypi_history(opts, progress)


def gather(opts: BuildOptions, progress: Progress) -> Iterator[Candidate | Problem]:
    """Every candidate of every source, each checked against the reserved-software rule."""
    for item in _sources(opts, progress):
        if isinstance(item, Candidate):
            # Whatever the source type, a reserved package stops the build (reserved.py says why).
            refuse_reserved(item.source, item.package, _where(item))
        yield item


# --- turning candidates into rows ---------------------------------------------------------------


# Every usable file of the last build before the caps, so a rebuild reuses the metadata of files the caps
# left out too (re-parsing them is most of a rebuild's time).
PARSED_NAME = "parsed.parquet"


def _previous_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier build: their trace columns are kept, and their PE metadata is reused (not
    recomputed) when it was computed by the same manifest version."""
    parsed = path.with_name(PARSED_NAME)
    earlier = _read_previous(parsed) if parsed.is_file() else {}
    return earlier | _read_previous(path)


def _read_previous(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        table = mf.read_manifest(path)
    except mf.ManifestError:
        return {}
    version = (table.schema.metadata or {}).get(b"runtrace.manifest_version", b"")
    same_version = version == str(mf.MANIFEST_VERSION).encode()
    rows = {}
    for row in table.to_pylist():
        if not same_version:
            row = {name: row.get(name) for name in ("sha256", *mf.TRACE_COLUMNS)}
        rows[row["sha256"]] = row
    return rows


def _where(c: Candidate) -> str:
    return f"{c.package}:{c.member}"


class _Assembler:
    def __init__(self, opts: BuildOptions, previous: dict[str, dict]) -> None:
        self.store = SampleStore(opts.corpus_dir)
        self.previous = previous
        self.rows: dict[str, dict] = {}
        self.conflicts: dict[str, set[str]] = defaultdict(set)
        self.problems: list[Problem] = []

    def add(self, c: Candidate) -> None:
        reused = self._reuse_archived(c)
        if reused is not None:
            sha, data = reused, None
        elif c.reuse_path:  # a sample of an earlier build, named by its sha256: linked, not read
            sha, data = c.expected_sha256, None
        else:
            try:
                data = c.read()
            except Exception as e:  # noqa: BLE001 - zip, OS and password errors all mean "unreadable"
                self.problems.append(Problem(_where(c), f"cannot read ({type(e).__name__}: {e})"))
                return
            sha = sha256_of(data)
            if c.expected_sha256 and sha != c.expected_sha256:
                self.problems.append(Problem(_where(c), f"sha256 {sha[:16]}... differs from the csv"))
                return
        existing = self.rows.get(sha)
        if existing is not None:
            self._duplicate(existing, c, sha)
            return
        meta = self._meta(sha, data, c)
        if meta is None:
            return
        row = {
            "sha256": sha,
            "label": c.label,
            "source": c.source,
            "package": c.package,
            "package_version": c.package_version,
            "origin_group": c.origin_group,
            "member": c.member,
            "file_name": c.file_name,
            "also_in": [],
            "note": c.note,
            "licence": c.licence or None,
            "family": c.family or None,
            "family_kind": c.family_kind or None,
            **meta,
        }
        csv_date = parse_csv_date(c.csv_date)
        if c.first_seen and c.first_seen_source:  # dated already, by the rule it names
            row["first_seen"] = date.fromisoformat(c.first_seen)
            row["first_seen_source"] = c.first_seen_source
        elif csv_date is not None:
            row["first_seen"], row["first_seen_source"] = csv_date, CSV_DATE
        elif c.first_seen:  # the source knew the date (a PyPI file's upload, a Debian package's changelog)
            rule = PYPI_UPLOAD if c.source.startswith("pypi") else DEBIAN_CHANGELOG
            row["first_seen"], row["first_seen_source"] = date.fromisoformat(c.first_seen), rule
        if c.archive_path:
            row |= {"storage": "zip", "path": c.archive_path, "archive_member": c.archive_member}
            row["archive_password"] = c.archive_password
        elif data is None:
            row |= {"storage": "store", "path": str(self.store.link(sha, Path(c.reuse_path)))}
        else:
            row |= {"storage": "store", "path": str(self.store.put(sha, data))}
        prev = self.previous.get(sha)
        if prev is not None:
            row |= {name: prev.get(name) for name in mf.TRACE_COLUMNS}
        self.rows[sha] = row

    def _reuse_archived(self, c: Candidate) -> str | None:
        # Decrypting ZipCrypto members in Python is slow (about 1 MB/s); a rerun trusts the earlier,
        # verified hash of the same member instead of decrypting it again.
        if not c.expected_sha256:
            return None
        prev = self.previous.get(c.expected_sha256)
        if prev and prev.get("archive_member") == c.archive_member and prev.get("path") == c.archive_path:
            return c.expected_sha256
        return None

    def _meta(self, sha: str, data: bytes | None, c: Candidate) -> dict | None:
        prev = self.previous.get(sha)
        if prev is not None and prev.get("arch") and prev.get("code_id"):
            return {name: prev.get(name) for name in (*PE_COLUMNS, "code_id")}
        if data is None:
            data = c.read()
        try:
            meta = read_pe_meta(data, c.file_name)
        except NotPeError as e:
            self.problems.append(Problem(_where(c), str(e)))
            return None
        return meta.as_dict() | {"linker_version": meta.linker_version, "code_id": code_identity(data)}

    def _duplicate(self, existing: dict, c: Candidate, sha: str) -> None:
        if existing["label"] != c.label:
            self.conflicts[sha] |= {existing["label"], c.label}
            self.problems.append(
                Problem(_where(c), f"same file labelled {existing['label']} in {existing['origin_group']}")
            )
        elif c.origin_group != existing["origin_group"] and c.origin_group not in existing["also_in"]:
            existing["also_in"].append(c.origin_group)

    def finish(self) -> list[dict]:
        # A file with two labels says nothing reliable about either class: drop it.
        for sha in self.conflicts:
            row = self.rows.pop(sha, None)
            if row is not None:
                self.problems.append(Problem(row["member"], "dropped: labelled both benign and malicious"))
        return list(self.rows.values())


# --- rebalancing --------------------------------------------------------------------------------


def _stable_order(rows: Iterable[dict]) -> list[dict]:
    # sha256 order is effectively random but identical on every rerun.
    return sorted(rows, key=lambda r: r["sha256"])


def _round_robin(buckets: dict[object, list[dict]]) -> list[dict]:
    """Interleave buckets so any prefix of the result spreads over all of them."""
    queues = [list(_stable_order(b)) for _, b in sorted(buckets.items(), key=lambda kv: str(kv[0]))]
    out: list[dict] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def apply_group_cap(rows: list[dict], cap: int, exe_cap: int = 0) -> tuple[list[dict], Counter]:
    """Keep at most `cap` benign rows per origin group, spread over the group's arch x kind mix; with
    `exe_cap`, a group's programs are capped apart, at `exe_cap` (spread over arch), and `cap` holds
    for the rest of it.

    Malware is never capped: every sample of the archives stays in the corpus (a family of hundreds,
    like APT1, is weighed down by the evaluation's by-family protocol, not dropped here)."""
    if cap <= 0 and exe_cap <= 0:
        return rows, Counter()
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    kept: list[dict] = []
    for row in rows:
        if row["label"] != "benign":
            kept.append(row)
        elif exe_cap > 0:
            by_group[(row["origin_group"], row["kind"] == "exe")].append(row)
        else:
            by_group[(row["origin_group"], False)].append(row)
    dropped: Counter = Counter()
    for (group, programs), members in by_group.items():
        limit = exe_cap if programs else cap
        if limit <= 0 or len(members) <= limit:
            kept.extend(members)
            continue
        strata: dict[tuple, list[dict]] = defaultdict(list)
        for row in members:
            strata[(row["arch"], row["kind"])].append(row)
        chosen = _round_robin(strata)[:limit]
        kept.extend(chosen)
        dropped[group] += len(members) - len(chosen)
    return kept, dropped


def apply_toolchain_cap(
    rows: list[dict], caps: dict[str, int], dll_caps: dict[str, int] | None = None
) -> tuple[list[dict], Counter]:
    """Keep at most `caps[toolchain]` benign programs of that toolchain (`matching.toolchain_of`) per
    origin group, and at most `dll_caps[toolchain]` of its other files (DLLs, drivers); malware and
    toolchains without a cap are left alone.  Within a group the files are spread over arch, the arch to
    start with drawn from the group's name (so a cap of one keeps i386 in about half the groups).

    Corpus design, not de-duplication: Rust, Go and Visual C++ 2017+ programs, which the malware has
    few or none of, would otherwise be most of the benign programs, and Wine's MinGW-built DLLs most of
    the rest (docs/corpus.md gives the numbers).  Returns the files dropped per (kind, toolchain)."""
    dll_caps = dll_caps or {}
    if not caps and not dll_caps:
        return rows, Counter()
    kept: list[dict] = []
    by_group: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        toolchain = toolchain_of(row)
        kind = "exe" if row["kind"] == "exe" else "dll"
        if row["label"] == "benign" and toolchain in (caps if kind == "exe" else dll_caps):
            by_group[(row["origin_group"], kind, toolchain)].append(row)
        else:
            kept.append(row)
    dropped: Counter = Counter()
    for (group, kind, toolchain), members in sorted(by_group.items()):
        limit = (caps if kind == "exe" else dll_caps)[toolchain]
        if len(members) <= limit:
            kept.extend(members)
            continue
        by_arch: dict[str, list[dict]] = defaultdict(list)
        for row in _stable_order(members):
            by_arch[row["arch"]].append(row)
        order = sorted(by_arch, key=lambda arch: hashlib.sha256(f"{group}/{arch}".encode()).hexdigest())
        chosen = round_robin([by_arch[arch] for arch in order], limit)
        kept.extend(chosen)
        dropped[(kind, toolchain)] += len(members) - len(chosen)
    return kept, dropped


def _match_vector(row: dict) -> list[float]:
    # Sizes and import counts span orders of magnitude: compare them on a log scale.
    return [
        float(row.get("linker_minor") or 0),
        float(np.log2(max(1, row.get("size") or 1))),
        float(row.get("section_count") or 0),
        float(np.log1p(row.get("import_count") or 0)),
    ]


def mark_matched_subset(
    rows: list[dict], caliper: float = MATCH_CALIPER, max_per_group: int = MATCH_MAX_PER_GROUP
) -> None:
    """Flag 1:1 pairs of a malicious and a benign file that look alike from the outside.

    Partners share arch, kind and major linker version exactly and lie within `caliper` on the minor
    linker version, log size, section count and log import count (scaled to unit variance, Euclidean
    distance); pairs are taken greedily, globally closest
    first, each file at most once.  Within the pairs, packaging metadata says little about the label by
    construction; the price is coverage: malware with no benign look-alike (e.g. Visual C++ 6 builds,
    which no benign source here has) is left out, and the audit reports how much was.
    """
    for row in rows:
        row["matched"], row["match_id"] = False, None
    if not rows:
        return
    vectors = np.array([_match_vector(r) for r in rows])
    scale = vectors.std(axis=0)
    scale[scale == 0] = 1.0
    vectors = vectors / scale
    strata: dict[tuple, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for i, row in enumerate(rows):
        key = tuple(row.get(name) for name in MATCH_EXACT)
        strata[key][0 if row["label"] == "malicious" else 1].append(i)
    used_per_group: Counter = Counter()
    for key in sorted(strata, key=str):
        mal, ben = strata[key]
        if not mal or not ben:
            continue
        dist = np.linalg.norm(vectors[mal][:, None, :] - vectors[ben][None, :, :], axis=2)
        close = np.argwhere(dist <= caliper)
        # Closest first; ties broken by sha256 so reruns pick the same partners.
        order = sorted(close.tolist(), key=lambda ab: (dist[ab[0], ab[1]], rows[mal[ab[0]]]["sha256"],
                                                       rows[ben[ab[1]]]["sha256"]))  # fmt: skip
        mal_done: set[int] = set()
        ben_done: set[int] = set()
        for a, b in order:
            if a in mal_done or b in ben_done:
                continue
            group = rows[ben[b]]["origin_group"]
            if used_per_group[group] >= max_per_group:
                continue
            mal_done.add(a)
            ben_done.add(b)
            used_per_group[group] += 1
            pair = rows[mal[a]]["sha256"]
            for i in (mal[a], ben[b]):
                rows[i]["matched"], rows[i]["match_id"] = True, pair


# --- the build ----------------------------------------------------------------------------------


def build_corpus(opts: BuildOptions, progress: Progress | None = None) -> BuildResult:
    progress = progress or Progress()
    refuse_inside_repo(opts.corpus_dir, "corpus dir")
    refuse_inside_repo(opts.downloads_dir, "downloads dir")
    opts.corpus_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = opts.corpus_dir / MANIFEST_NAME
    previous = _previous_rows(manifest_path)
    if opts.reuse_build is not None:
        # The earlier build's PE metadata, so its files are not parsed again, and where its malware sat,
        # so archive members are not decrypted again (its traces are its own).
        earlier = _read_previous(opts.reuse_build / PARSED_NAME)
        keep = ("sha256", *PE_COLUMNS, "code_id", "path", "archive_member")
        previous = {sha: {k: row.get(k) for k in keep} for sha, row in earlier.items()} | previous
    assembler = _Assembler(opts, previous)
    advance = progress.stage("reading files", None)
    for item in gather(opts, progress):
        if isinstance(item, Problem):
            assembler.problems.append(item)
        else:
            assembler.add(item)
        advance(1)
    rows = assembler.finish()
    mf.write_manifest(rows, opts.corpus_dir / PARSED_NAME)
    spread = code_group_origins(rows)  # before the caps: who shared each code, even if capped away
    rows, code_capped = apply_code_cap(rows, opts.max_per_code_group)
    rows, toolchain_capped = apply_toolchain_cap(
        rows, opts.exes_per_group_by_toolchain, opts.dlls_per_group_by_toolchain
    )
    rows, capped = apply_group_cap(rows, opts.max_per_group, opts.max_exes_per_group)
    for row, group in zip(rows, cv_groups(rows, spread=spread), strict=True):
        row["cv_group"] = group
    archives = {row["path"] for row in rows if row.get("storage") == "zip"}
    undated = assign_first_seen(rows, opts.downloads_dir, {a: archive_date(a) for a in archives})
    mark_matched_subset(rows, opts.match_caliper)
    rows.sort(key=lambda r: (r["label"], r["origin_group"], r["sha256"]))
    mf.write_manifest(rows, manifest_path)
    skipped_path = opts.corpus_dir / SKIPPED_NAME
    with skipped_path.open("w", encoding="utf-8") as f:
        for p in assembler.problems:
            f.write(json.dumps({"where": p.where, "reason": p.reason}) + "\n")
    return BuildResult(
        rows,
        assembler.problems,
        capped,
        code_capped,
        manifest_path=manifest_path,
        skipped_path=skipped_path,
        undated=[Problem(w, r) for w, r in undated],
        toolchain_capped=toolchain_capped,
    )
