"""Families and first-seen dates in the corpus: csv dates, plausible PE timestamps, PyPI uploads, Debian
changelogs (no network: PyPI's JSON API is replaced by a local function)."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import urllib.error
from pathlib import Path

import pytest

from runtrace.corpus import dates
from runtrace.corpus.build import apply_group_cap, build_corpus
from runtrace.corpus.manifest import read_manifest
from runtrace.corpus.sources import ArchiveSource, archive_candidates, load_sources
from test_corpus_build import LAUNCHER, PYD, WINE_DLL, WINE_EXE, sources  # noqa: F401 - fixture
from test_corpus_pemeta import make_pe
from test_corpus_sources import sha, write_archive


def test_csv_dates_take_the_last_day_they_can_mean():
    assert dates.parse_csv_date("2020-11-03") == dt.date(2020, 11, 3)
    assert dates.parse_csv_date("2020-02") == dt.date(2020, 2, 29)
    assert dates.parse_csv_date("2018-08/2019-02") == dt.date(2019, 2, 28)
    assert dates.parse_csv_date("") is None and dates.parse_csv_date("soon") is None
    assert dates.parse_csv_date("2020-13") is None


def test_pe_timestamps_are_dates_only_when_plausible():
    def ts(*ymd):
        return int(dt.datetime(*ymd, tzinfo=dt.UTC).timestamp())

    latest = dt.date(2024, 12, 31)
    assert dates.plausible_pe_date(ts(2011, 8, 9), False, latest) == dt.date(2011, 8, 9)
    assert dates.plausible_pe_date(0x2A425E19, False, latest) is None  # Delphi's fixed 1992-06-19
    assert dates.plausible_pe_date(0, False, latest) is None
    assert dates.plausible_pe_date(ts(2055, 1, 1), False, latest) is None  # after the archive was made
    assert dates.plausible_pe_date(ts(2011, 8, 9), True, latest) is None  # a reproducible build's hash


def test_debian_changelog_gives_the_newest_entrys_date(tmp_path):
    doc = tmp_path / "usr" / "share" / "doc" / "pkg"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.gz", "wt") as f:  # a native package's changelog name
        f.write(
            "pkg (2) unstable; urgency=low\n\n  * x\n\n"
            " -- Someone <s@x.org>  Tue, 01 Mar 2022 23:30:00 -0500\n"
        )
    assert dates.changelog_date(tmp_path, "pkg") == dt.date(2022, 3, 2)  # in UTC
    assert dates.changelog_date(tmp_path, "other") is None


def test_pypi_upload_dates_are_cached_for_a_rerun_without_network(tmp_path):
    calls = []

    def api(url):
        calls.append(url)
        wheel = {"filename": "demo-1.0-cp311-cp311-win32.whl", "upload_time_iso_8601": "2022-01-02T03:04:05Z"}
        return {"releases": {"1.0": [wheel], "0.9": []}}

    cache = tmp_path / "dates.json"
    first = dates.PypiReleaseDates(cache, api)
    assert first.upload_date("demo", "demo-1.0-cp311-cp311-win32.whl") == dt.date(2022, 1, 2)
    with pytest.raises(LookupError, match="no upload of other.whl"):
        first.upload_date("demo", "other.whl")
    first.save()
    assert calls == ["https://pypi.org/pypi/demo/json"]

    def offline(url):
        raise urllib.error.URLError("offline")

    again = dates.PypiReleaseDates(cache, offline)
    assert again.upload_date("demo", "demo-1.0-cp311-cp311-win32.whl") == dt.date(2022, 1, 2)
    with pytest.raises(LookupError, match="offline"):
        again.upload_date("other", "other-2.0-cp311-cp311-win32.whl")


def _family_archive(tmp: Path, rows: list[dict]) -> ArchiveSource:
    """A github-malware lookalike: the csv has source, family and date columns."""
    zpath, cpath = write_archive(tmp, {sha(r["data"]): (r["data"], r["name"], "malicious") for r in rows})
    with cpath.open() as f:
        written = list(csv.DictReader(f))
    fields = [*written[0].keys(), "family", "date"]
    by_sha = {sha(r["data"]): r for r in rows}
    with cpath.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in written:
            extra = by_sha[row["sha256"]]
            w.writerow(row | {"source": extra["source"], "family": extra["family"], "date": extra["date"]})
    return ArchiveSource(
        name="gh",
        zip=str(zpath),
        csv=str(cpath),
        family_kinds={
            "Actors/repo": "threat-actor",
            "Feed/repo": "report-or-campaign",
            "Arch/repo": "malware-family",
        },
        family_kind_overrides={"cypherit": "crypter"},
    )


def test_family_kind_follows_the_collection_and_its_overrides(tmp_path):
    rows = [
        {
            "data": make_pe("i386", extra=b"a"),
            "name": "a",
            "source": "Actors/repo",
            "family": "APT1",
            "date": "",
        },
        {
            "data": make_pe("i386", extra=b"b"),
            "name": "b",
            "source": "Feed/repo",
            "family": "CRAT",
            "date": "2020-11",
        },
        {
            "data": make_pe("i386", extra=b"c"),
            "name": "c",
            "source": "Arch/repo",
            "family": "cypherit",
            "date": "2019-01-05",
        },
        {
            "data": make_pe("i386", extra=b"d"),
            "name": "d",
            "source": "Arch/repo",
            "family": "azorult",
            "date": "",
        },
    ]
    cands = {c.member: c for c in archive_candidates(_family_archive(tmp_path, rows))}
    assert [(cands[n].family, cands[n].family_kind) for n in "abcd"] == [
        ("APT1", "threat-actor"),
        ("CRAT", "report-or-campaign"),
        ("cypherit", "crypter"),
        ("azorult", "malware-family"),
    ]
    assert cands["a"].origin_group == "gh/apt1" and cands["b"].csv_date == "2020-11"


def test_the_shipped_config_says_what_each_collections_family_is():
    gh = next(a for a in load_sources().archive if a.name == "github-malware")
    assert set(gh.family_kinds.values()) == {"threat-actor", "report-or-campaign", "malware-family"}
    assert gh.family_kind_overrides == {"cypherit": "crypter"}


def test_build_dates_both_classes_and_keeps_every_family_member(sources, tmp_path):  # noqa: F811
    opts, _ = sources
    old = int(dt.datetime(2010, 5, 6, tzinfo=dt.UTC).timestamp())
    family = [make_pe("i386", extra=f"apt{i}".encode(), timestamp=old) for i in range(5)]
    rows = [
        {"data": d, "name": f"m{i}", "source": "Actors/repo", "family": "APT1", "date": ""}
        for i, d in enumerate(family)
    ]
    dated = make_pe("amd64", extra=b"feed")
    rows.append({"data": dated, "name": "feed", "source": "Feed/repo", "family": "CRAT", "date": "2020-11"})
    (tmp_path / "gh").mkdir()
    opts.sources.archive.append(_family_archive(tmp_path / "gh", rows))
    opts.max_per_group = 2  # caps benign groups only
    result = build_corpus(opts)
    manifest = {r["sha256"]: r for r in read_manifest(result.manifest_path).to_pylist()}
    apt1 = [r for r in manifest.values() if r["family"] == "APT1"]
    assert len(apt1) == 5  # malware is never capped
    assert {(r["family_kind"], r["first_seen"], r["first_seen_source"]) for r in apt1} == {
        ("threat-actor", dt.date(2010, 5, 6), "pe-timestamp")
    }
    feed = manifest[sha(dated)]
    assert (feed["family"], feed["first_seen"], feed["first_seen_source"]) == (
        "CRAT",
        dt.date(2020, 11, 30),
        "csv-date",
    )
    assert manifest[sha(WINE_EXE)]["first_seen"] == dt.date(2023, 2, 18)
    assert manifest[sha(WINE_DLL)]["first_seen_source"] == "debian-changelog"
    assert (manifest[sha(PYD)]["first_seen"], manifest[sha(PYD)]["first_seen_source"]) == (
        dt.date(2021, 3, 4),
        "pypi-upload",
    )
    assert manifest[sha(LAUNCHER)]["first_seen"] == dt.date(2019, 7, 8)
    assert manifest[sha(PYD)]["family"] is None


def test_group_cap_leaves_malware_whole():
    rows = [
        {
            "sha256": f"{i:064x}",
            "label": "malicious",
            "origin_group": "gh/apt1",
            "arch": "i386",
            "kind": "exe",
        }
        for i in range(9)
    ]
    rows += [
        {
            "sha256": f"{100 + i:064x}",
            "label": "benign",
            "origin_group": "pypi/x",
            "arch": "i386",
            "kind": "dll",
        }
        for i in range(9)
    ]
    kept, dropped = apply_group_cap(rows, 3)
    assert sum(r["label"] == "malicious" for r in kept) == 9 and dropped == {"pypi/x": 6}
