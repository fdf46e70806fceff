"""When each corpus file was first known to exist (`first_seen`), for the temporal protocol.

One rule per kind of evidence, tried in this order; the manifest's `first_seen_source` names the rule
that dated a row, and a row no rule can date keeps a null date (the temporal protocol leaves it out):

- ``csv-date`` (malware): the archive csv's date - a threat report's publication or the collection's
  date for the file.  Written as YYYY-MM-DD, YYYY-MM or a range `A/B`; the date taken is the *last*
  day it can mean (the end of the month, the end of the range): the file was certainly known by then.
  Erring late keeps a sample out of a training set it may not have belonged to (never the reverse).
- ``pe-timestamp`` (malware without a csv date): the PE header's link time, when it is plausible: not
  before 1995-01-01 (Windows 95; earlier values are forged or defaults, like Delphi's fixed 1992-06-19),
  not after the archive itself was assembled (the zip's newest member date: nothing is collected before
  it is built), and not a reproducible build's content hash (a REPRO debug entry).  A link time can
  be forged within that window too, and it is when the file was built, which can be well before it was
  first seen: this is the weaker rule, and docs/corpus.md says how many files rest on it.
- ``pypi-upload`` (benign wheels): the upload time PyPI's JSON API gives for the very wheel file (the
  project's document lists every release's files with their upload times).
- ``debian-changelog`` (benign Debian files): the date of the newest entry of the package's Debian
  changelog (`usr/share/doc/<package>/changelog.Debian.gz`), i.e. when that package version was
  uploaded - the files in it were built for that upload.
"""

from __future__ import annotations

import calendar
import datetime as dt
import gzip
import json
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

CSV_DATE = "csv-date"
PE_TIMESTAMP = "pe-timestamp"
PYPI_UPLOAD = "pypi-upload"
DEBIAN_CHANGELOG = "debian-changelog"
RULES = (CSV_DATE, PE_TIMESTAMP, PYPI_UPLOAD, DEBIAN_CHANGELOG)

EARLIEST_PLAUSIBLE = dt.date(1995, 1, 1)
PYPI_JSON = "https://pypi.org/pypi/{project}/json"
RELEASE_DATES_NAME = "release-dates.json"


# --- malware ------------------------------------------------------------------------------------


def _last_day(text: str) -> dt.date:
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 3:
        return dt.date(*parts)
    if len(parts) == 2:
        return dt.date(parts[0], parts[1], calendar.monthrange(parts[0], parts[1])[1])
    if len(parts) == 1:
        return dt.date(parts[0], 12, 31)
    raise ValueError(text)


def parse_csv_date(text: str) -> dt.date | None:
    """The last day a csv date can mean ("2020-11" -> 2020-11-30, "2018-08/2019-02" -> 2019-02-28);
    None for an empty or unreadable value."""
    text = (text or "").strip()
    if not text:
        return None
    end = text.rsplit("/", 1)[-1].strip()
    if not re.fullmatch(r"\d{4}(-\d{1,2}){0,2}", end):
        return None
    try:
        return _last_day(end)
    except ValueError:
        return None


def plausible_pe_date(timestamp: int | None, repro: bool | None, latest: dt.date | None) -> dt.date | None:
    """The PE link time as a date when the rule above accepts it, else None."""
    if not timestamp or repro:
        return None
    day = dt.datetime.fromtimestamp(int(timestamp), dt.UTC).date()
    if day < EARLIEST_PLAUSIBLE or (latest is not None and day > latest):
        return None
    return day


def archive_date(zip_path: str | Path) -> dt.date | None:
    """When an archive was assembled: its newest member's date (None when it cannot be read)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            stamps = [info.date_time for info in zf.infolist()]
    except (OSError, zipfile.BadZipFile):
        return None
    return max((dt.date(*s[:3]) for s in stamps), default=None)


# --- benign: PyPI -------------------------------------------------------------------------------


def _fetch_json(url: str, timeout_s: float = 30) -> dict:
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "runtrace"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - a fixed https URL
        return json.load(response)


class PypiReleaseDates:
    """Upload times of wheel files from PyPI's JSON API, cached on disk so a rerun needs no network.

    One request per project; the cache maps project -> {file name: ISO date} over all its releases.
    """

    def __init__(self, cache_path: Path, fetch: Callable[[str], dict] | None = None) -> None:
        self.path = cache_path
        self.fetch = fetch
        try:
            self.cache: dict = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            self.cache = {}
        self.dirty = False

    def _files(self, project: str) -> dict[str, str]:
        files = self.cache.get(project)
        if files is None:
            url = PYPI_JSON.format(project=project)
            try:
                doc = (self.fetch or _fetch_json)(url)
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise LookupError(f"{url}: {getattr(e, 'reason', e)}") from None
            files = {
                u["filename"]: (u.get("upload_time_iso_8601") or u.get("upload_time") or "")[:10]
                for release in (doc.get("releases") or {}).values()
                for u in release
                if u.get("filename")
            }
            self.cache[project] = files
            self.dirty = True
        return files

    def upload_date(self, project: str, file_name: str) -> dt.date:
        """The wheel's upload date; raises `LookupError` (one line) when PyPI does not say."""
        day = self._files(project).get(file_name)
        if not day:
            raise LookupError(f"PyPI lists no upload of {file_name} ({project})")
        return dt.date.fromisoformat(day)

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".partial")
            tmp.write_text(json.dumps(self.cache, indent=1, sort_keys=True) + "\n")
            tmp.replace(self.path)
            self.dirty = False


# --- benign: Debian -----------------------------------------------------------------------------

_TRAILER = re.compile(r"^ -- .*?<[^>]*>\s+(.+)$")


def changelog_date(unpacked: Path, package: str) -> dt.date | None:
    """Date of the newest entry of an unpacked package's Debian changelog (None when there is none)."""
    doc = unpacked / "usr" / "share" / "doc" / package
    for name in ("changelog.Debian.gz", "changelog.gz"):
        path = doc / name
        if not path.is_file():
            continue
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                for line in f:
                    m = _TRAILER.match(line.rstrip("\n"))
                    if m:
                        return parsedate_to_datetime(m.group(1)).astimezone(dt.UTC).date()
        except (OSError, ValueError, TypeError):
            return None
    return None


# --- the whole manifest -------------------------------------------------------------------------


def _debian_unpacked(downloads_dir: Path, row: dict) -> Path:
    # fetch_deb unpacks `package:arch` under debian/<package>_<arch>/extracted; the row's version
    # reads "<version> (<arch>)".
    arch = (row.get("package_version") or "").rpartition("(")[2].rstrip(")").strip()
    return downloads_dir / "debian" / f"{row['package']}_{arch}" / "extracted"


def assign_first_seen(
    rows: list[dict],
    downloads_dir: Path,
    archive_dates: dict[str, dt.date | None],
    pypi: PypiReleaseDates | None = None,
) -> list[tuple[str, str]]:
    """Fill `first_seen` and `first_seen_source` of every row; returns (where, why) for rows left undated
    that a rule should have dated (a failed PyPI lookup, a package without a changelog).

    `archive_dates`: archive path -> the date it was assembled (the PE-timestamp rule's upper bound).
    Rows already dated (by the csv, or by their source while it was fetched) keep their date.
    """
    pypi = pypi or PypiReleaseDates(downloads_dir / "pypi" / RELEASE_DATES_NAME)
    debian_cache: dict[Path, dt.date | None] = {}
    problems: list[tuple[str, str]] = []
    for row in rows:
        if row.get("first_seen_source") and row.get("first_seen"):
            continue
        row["first_seen"], row["first_seen_source"] = None, None
        if row.get("storage") == "zip":
            latest = archive_dates.get(row["path"])
            day = plausible_pe_date(row.get("timestamp"), row.get("repro_build"), latest)
            if day is not None:
                row["first_seen"], row["first_seen_source"] = day, PE_TIMESTAMP
        elif row.get("source") == "pypi":
            wheel = (row.get("member") or "").split("/", 1)[0]
            try:
                day = pypi.upload_date(row["package"], wheel)
            except LookupError as e:
                problems.append((f"{row['package']}:{row.get('member')}", f"no upload date: {e}"))
                continue
            row["first_seen"], row["first_seen_source"] = day, PYPI_UPLOAD
        elif row.get("source") == "debian":
            unpacked = _debian_unpacked(downloads_dir, row)
            if unpacked not in debian_cache:
                debian_cache[unpacked] = changelog_date(unpacked, row["package"])
            day = debian_cache[unpacked]
            if day is None:
                where = f"debian {row['package']}:{row.get('member')}"
                problems.append((where, f"no changelog date in {unpacked}"))
                continue
            row["first_seen"], row["first_seen_source"] = day, DEBIAN_CHANGELOG
    pypi.save()
    return problems
