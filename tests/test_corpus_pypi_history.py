"""PyPI's history source, offline: file selection from registry JSON, the files inside installers, eggs and
sdists, and the refusal of reserved projects before any request."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest

from runtrace.corpus import pypi_history as ph
from runtrace.corpus.fetch import FetchError
from runtrace.corpus.history_config import HistoryProject, PypiHistorySources
from runtrace.corpus.sources import Candidate, Problem
from test_corpus_pemeta import make_pe

STUB = make_pe("i386", linker=(9, 0), extra=b"wininst stub")
PYD = make_pe("i386", dll=True, linker=(9, 0), extra=b"_speedups")


def _file(name, kind, when, python="2.7", size=1000):
    return {"filename": name, "packagetype": kind, "upload_time": f"{when}T12:00:00",
            "url": f"https://files.example/{name}", "digests": {"sha256": ""}, "size": size,
            "python_version": python}  # fmt: skip


def _meta():
    return {
        "info": {"name": "demo", "license": "MIT", "classifiers": []},
        "releases": {
            "1.0": [
                _file("demo-1.0.win32-py2.7.exe", "bdist_wininst", "2009-03-01"),
                _file("demo-1.0.tar.gz", "sdist", "2009-03-01", "source"),
                _file("demo-1.0.win32-py2.7.msi", "bdist_msi", "2009-03-01"),
            ],
            "2.0": [
                _file("demo-2.0-py2.7-win32.egg", "bdist_egg", "2012-05-01"),
                _file("demo-2.0-py2.7-linux-x86_64.egg", "bdist_egg", "2012-05-01"),
                _file("demo-2.0-cp27-none-win_amd64.whl", "bdist_wheel", "2016-01-01"),
                _file("demo-2.0-cp27-none-manylinux1_x86_64.whl", "bdist_wheel", "2016-01-01"),
            ],
            "3.0": [_file("demo-3.0-cp37-cp37m-win32.whl", "bdist_wheel", "2020-01-01", "cp37")],
        },
    }


def test_reserved_rule_is_the_sha256_of_the_normalised_name():
    # sha256("mypy") starts with 1, sha256("numpy") does not; case and separators are normalised first.
    assert ph.is_reserved("mypy") and ph.is_reserved("MyPy")
    assert not ph.is_reserved("numpy")
    assert ph.is_reserved("Argon2_CFFI.Bindings") == ph.is_reserved("argon2-cffi-bindings")


def test_windows_files_within_the_years():
    cfg = PypiHistorySources()
    names = [f.filename for f in ph.windows_files(_meta(), HistoryProject(name="demo"), cfg)]
    assert names == [
        "demo-1.0.win32-py2.7.exe",
        "demo-2.0-py2.7-win32.egg",
        "demo-2.0-cp27-none-win_amd64.whl",
    ]
    with_sdists = ph.windows_files(_meta(), HistoryProject(name="demo", sdists=True), cfg)
    assert "demo-1.0.tar.gz" in [f.filename for f in with_sdists]
    first = with_sdists[0]
    assert first.upload_date == "2009-03-01" and first.licence == "MIT" and first.project == "demo"


def test_a_project_can_have_its_own_years_and_its_platform_independent_wheels():
    meta = _meta()
    meta["releases"]["4.0"] = [
        _file("demo-4.0-py3-none-any.whl", "bdist_wheel", "2024-02-01", "py3"),
        _file("demo-4.0-py3-none-win_amd64.whl", "bdist_wheel", "2024-02-01", "py3"),
    ]
    cfg = PypiHistorySources()  # 2005-2018
    late = HistoryProject(name="demo", first_year=2016, last_year=2025)
    assert [f.filename for f in ph.windows_files(meta, late, cfg)] == [
        "demo-2.0-cp27-none-win_amd64.whl",
        "demo-3.0-cp37-cp37m-win32.whl",
        "demo-4.0-py3-none-win_amd64.whl",
    ]
    with_any = HistoryProject(name="demo", first_year=2024, last_year=2024, any_wheels=True)
    assert [f.filename for f in ph.windows_files(meta, with_any, cfg)] == [
        "demo-4.0-py3-none-any.whl",
        "demo-4.0-py3-none-win_amd64.whl",
    ]
    # The section's years still hold for every project that does not set its own.
    assert ph.years(HistoryProject(name="demo", last_year=2020), cfg) == (2005, 2020)


def test_relative_registry_urls_are_made_absolute():
    meta = _meta()
    meta["releases"]["1.0"][0]["url"] = "../../packages/packages/82/cb/abc/demo-1.0.win32-py2.7.exe"
    f = ph.windows_files(meta, HistoryProject(name="demo"), PypiHistorySources())[0]
    assert f.url == "https://files.pythonhosted.org/packages/82/cb/abc/demo-1.0.win32-py2.7.exe"


def test_selection_is_capped_and_spread_over_years():
    files = [
        ph.ReleaseFile("p", str(v), f"p-{v}.win32-py2.7.exe", "", "", 10, f"{2005 + v}-01-01",
                       "bdist_wininst", "2.7", "")
        for v in range(12)
    ]  # fmt: skip
    chosen = ph.select_files(files, 3, max_bytes=100)
    years = [f.year for f in chosen]
    assert len(chosen) == 3 and min(years) == 2005 and max(years) == 2016
    big = [f for f in files[:2]]
    assert ph.select_files(big, 5, max_bytes=5) == []


def _release(name: str, kind: str = "bdist_wininst") -> ph.ReleaseFile:
    return ph.ReleaseFile("demo", "1.0", name, "", "", 0, "2009-03-01", kind, "2.7", "MIT")


def test_installer_yields_itself_and_its_payload(tmp_path):
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("PLATLIB/demo/_speedups.pyd", PYD)
        zf.writestr("PURELIB/demo/__init__.py", b"")
    path = tmp_path / "demo-1.0.win32-py2.7.exe"
    path.write_bytes(STUB + payload.getvalue())
    found = list(ph.file_candidates(_release(path.name), path, "pypi/demo"))
    assert all(isinstance(c, Candidate) for c in found)
    assert [c.member for c in found] == [path.name, f"{path.name}/PLATLIB/demo/_speedups.pyd"]
    assert found[0].read().startswith(STUB) and found[1].read() == PYD
    assert {(c.first_seen, c.licence, c.source, c.origin_group) for c in found} == {
        ("2009-03-01", "MIT", "pypi-history", "pypi/demo")
    }


def test_sdist_members_and_unreadable_archives(tmp_path):
    path = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("demo-1.0/bootloader/Windows-32bit/run.exe")
        info.size = len(STUB)
        tf.addfile(info, io.BytesIO(STUB))
    found = list(ph.file_candidates(_release(path.name, "sdist"), path, "pypi/demo"))
    assert [c.file_name for c in found] == ["run.exe"] and found[0].read() == STUB
    broken = tmp_path / "demo-1.0-py2.7-win32.egg"
    broken.write_bytes(b"not a zip")
    (problem,) = ph.file_candidates(_release(broken.name, "bdist_egg"), broken, "pypi/demo")
    assert isinstance(problem, Problem) and "unreadable archive" in problem.reason


def test_programs_only_leaves_out_the_dlls_and_modules(tmp_path, monkeypatch):
    wheel = tmp_path / "pypi-history" / "demo" / "demo-1.0-py3-none-win_amd64.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.data/scripts/demo.exe", STUB)
        zf.writestr("demo/runtime.dll", PYD)
        zf.writestr("demo/_speedups.pyd", PYD)
    f = ph.ReleaseFile("demo", "1.0", wheel.name, "", "", 0, "2024-03-01", "bdist_wheel", "py3", "MIT")
    everything = ph.HistoryJob(HistoryProject(name="demo"), [f])
    programs = ph.HistoryJob(HistoryProject(name="demo", programs_only=True), [f])
    assert sorted(c.file_name for c in ph.history_candidates(everything, tmp_path)) == [
        "_speedups.pyd", "demo.exe", "runtime.dll"]  # fmt: skip
    assert [c.file_name for c in ph.history_candidates(programs, tmp_path)] == ["demo.exe"]


def test_plan_refuses_reserved_projects_before_any_request(tmp_path, monkeypatch):
    asked = []

    def fake_get(url, timeout_s):
        asked.append(url)
        return json.dumps(_meta()).encode()

    monkeypatch.setattr(ph, "_http_get", fake_get)
    cfg = PypiHistorySources(projects=["mypy", "demo"], max_files=2)
    items = list(ph.plan(cfg, tmp_path, pause_s=0))
    assert isinstance(items[0], Problem) and "reserved" in items[0].reason
    assert asked == ["https://pypi.org/pypi/demo/json"]
    job = items[1]
    assert len(job.files) == 2
    # Cached: a second plan asks nothing.
    list(ph.plan(cfg, tmp_path, pause_s=0))
    assert len(asked) == 1
    with pytest.raises(FetchError, match="reserved"):
        ph.project_json("MyPy", tmp_path)


def test_download_checks_the_registry_digest(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(ph.urllib.request, "urlopen", lambda request, timeout: Response(b"data"))
    good = ph.ReleaseFile("demo", "1", "a.whl", "https://x/a.whl",
                          "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7", 4,
                          "2010-01-01", "bdist_wheel", "2.7", "")  # fmt: skip
    assert ph.download(good, tmp_path).read_bytes() == b"data"
    bad = ph.ReleaseFile("demo", "1", "b.whl", "https://x/b.whl", "00" * 32, 4, "2010-01-01",
                         "bdist_wheel", "2.7", "")  # fmt: skip
    with pytest.raises(FetchError, match="sha256"):
        ph.download(bad, tmp_path)
    assert not list((tmp_path / "pypi-history" / "demo").glob("b.whl*"))


def test_the_shipped_sources_list_no_reserved_project():
    from runtrace.corpus.sources import load_sources

    config = load_sources()
    names = [e.name for e in config.pypi_history.entries()] + list(config.pypi.projects)
    assert names and [n for n in names if ph.is_reserved(n)] == []


def test_one_download_per_release_and_platform_when_the_programs_do_not_depend_on_python(
    tmp_path, monkeypatch
):
    # A tool wheel tagged for three Pythons carries the same programs: one file per release and
    # platform is enough, the oldest upload of each.
    meta = {"info": {"name": "tool"}, "releases": {}}
    for version, day in (("1.0", "2016-03-01"), ("1.1", "2017-05-01")):
        meta["releases"][version] = [
            _file(f"tool-{version}-{py}-{py}m-{plat}.whl", "bdist_wheel", day, py)
            for py in ("cp27", "cp35", "cp36")
            for plat in ("win32", "win_amd64")
        ]
    meta["releases"]["1.0"][0]["upload_time"] = "2016-03-02T00:00:00"  # cp27 win32 came a day late
    entry = HistoryProject(name="tool", one_per_release=True)
    chosen = ph.one_per_release(ph.windows_files(meta, entry, PypiHistorySources()))
    assert [f.filename for f in chosen] == [
        "tool-1.0-cp27-cp27m-win_amd64.whl",
        "tool-1.0-cp35-cp35m-win32.whl",
        "tool-1.1-cp27-cp27m-win32.whl",
        "tool-1.1-cp27-cp27m-win_amd64.whl",
    ]
    monkeypatch.setattr(ph, "_http_get", lambda url, timeout_s: json.dumps(meta).encode())
    cfg = PypiHistorySources(projects=[entry, HistoryProject(name="tool", max_files=100)])
    once, every = list(ph.plan(cfg, tmp_path, pause_s=0))
    assert [f.filename for f in once.files] == [f.filename for f in chosen]
    assert len(every.files) == 12  # without the option: every Python's wheel
