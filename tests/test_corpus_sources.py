"""The sources config and the candidates each source yields (no network: everything is local)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from runtrace.corpus import fetch
from runtrace.corpus.sources import (
    ArchiveSource,
    Candidate,
    ConfigError,
    Problem,
    archive_candidates,
    archive_origin_group,
    load_sources,
    pypi_jobs,
    wheel_candidates,
)
from test_corpus_pemeta import make_pe

CSV_FIELDS = [
    "sha256",
    "md5",
    "original_name",
    "size",
    "machine",
    "kind",
    "dotnet",
    "label",
    "source",
    "note",
]


def write_archive(
    tmp: Path, members: dict[str, tuple[bytes, str, str]], password: str = ""
) -> tuple[Path, Path]:
    """A malware-archive lookalike: zip of <sha256>.bin members + csv rows (name, label) per member.

    `members` maps sha256 -> (bytes, original name, label); bytes may differ from the sha to test checks.
    """
    zpath, cpath = tmp / "archive.zip", tmp / "archive.csv"
    staging = tmp / "staging"
    staging.mkdir(exist_ok=True)
    for sha, (data, _, _) in members.items():
        if data is not None:
            (staging / f"{sha}.bin").write_bytes(data)
    if password:
        # Python's zipfile cannot write encrypted zips; the zip tool writes ZipCrypto like the real archive.
        if shutil.which("zip") is None:
            pytest.skip("the zip tool is not installed")
        names = sorted(p.name for p in staging.iterdir())
        subprocess.run(["zip", "-q", "-P", password, str(zpath), *names], cwd=staging, check=True)
    else:
        with zipfile.ZipFile(zpath, "w") as zf:
            for p in sorted(staging.iterdir()):
                zf.write(p, p.name)
    with cpath.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for sha, (_, name, label) in members.items():
            w.writerow({"sha256": sha, "original_name": name, "label": label, "source": "test"})
    return zpath, cpath


def sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_default_sources_file_is_valid_and_meets_the_brief():
    cfg = load_sources()
    assert cfg.archive and cfg.archive[0].password == "infected"
    wine = next(d for d in cfg.debian if d.package == "libwine")
    assert set(wine.architectures) == {"i386", "amd64"}
    assert cfg.pypi is not None and set(cfg.pypi.platforms) == {"win32", "win_amd64"}
    assert len(cfg.pypi.projects) >= 30
    assert set(cfg.pypi.extra_pythons) <= set(cfg.pypi.projects)


def test_bad_sources_files_name_the_file(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text("[pypi\n")
    with pytest.raises(ConfigError, match=r"s\.toml: not valid TOML"):
        load_sources(bad)
    bad.write_text("[pypi]\nplatfroms = ['win32']\n")
    with pytest.raises(ConfigError, match=r"s\.toml: pypi\.platfroms"):
        load_sources(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_sources(tmp_path / "missing.toml")


def test_archive_groups_follow_family_lab_or_file():
    h = "ab" * 32
    assert archive_origin_group("a", {"sha256": h, "family": "Emotet"}) == "a/emotet"
    lab = {"sha256": h, "original_name": "Practical Malware Analysis Lab 03-02.dll_"}
    assert archive_origin_group("a", lab) == "a/pma-lab-03"
    assert archive_origin_group("a", {"sha256": h, "original_name": f"{h[:32]}.exe_"}) == f"a/sha256:{h[:16]}"
    assert archive_origin_group("a", {"sha256": h, "original_name": "al-khaser_x64.exe_"}) == "a/al-khaser"


def test_archive_candidates_label_by_csv_and_report_the_rest(tmp_path):
    exe, dll = make_pe("i386"), make_pe("amd64", dll=True)
    missing = "cd" * 32
    zpath, cpath = write_archive(
        tmp_path,
        {
            sha(exe): (exe, "a.exe_", "malicious"),
            sha(dll): (dll, "kernel32.dll_", "benign"),
            "ef" * 32: (b"whatever", "tool.exe_", "grayware"),
            missing: (None, "gone.exe_", "malicious"),
        },
    )
    items = list(archive_candidates(ArchiveSource(name="t", zip=str(zpath), csv=str(cpath))))
    cands = [i for i in items if isinstance(i, Candidate)]
    problems = [i for i in items if isinstance(i, Problem)]
    assert {c.label for c in cands} == {"malicious", "benign"}
    assert all(c.archive_path == str(zpath.resolve()) and c.archive_member.endswith(".bin") for c in cands)
    assert cands[0].read() == exe
    reasons = " / ".join(p.reason for p in problems)
    assert "'grayware' is neither class" in reasons and "no member named after sha256" in reasons


def test_encrypted_archive_is_read_with_the_password(tmp_path):
    exe = make_pe("i386")
    zpath, cpath = write_archive(tmp_path, {sha(exe): (exe, "a.exe_", "malicious")}, password="infected")
    src = ArchiveSource(name="t", zip=str(zpath), csv=str(cpath), password="infected")
    [cand] = list(archive_candidates(src))
    assert cand.read() == exe


def test_missing_csv_or_zip_is_a_problem_not_a_crash(tmp_path):
    src = ArchiveSource(name="t", zip=str(tmp_path / "no.zip"), csv=str(tmp_path / "no.csv"))
    [problem] = list(archive_candidates(src))
    assert isinstance(problem, Problem) and "cannot read the csv" in problem.reason


def test_wheel_candidates_only_offer_pe_suffixes(tmp_path):
    wheel = tmp_path / "demo-1.0-cp311-cp311-win32.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/_core.pyd", make_pe("i386", dll=True))
        zf.writestr("demo/__init__.py", "")
        zf.writestr("demo/launcher.EXE", make_pe("i386"))
    cands = list(wheel_candidates("Demo_Pkg", wheel, [".pyd", ".exe"]))
    assert [c.member.split("/", 1)[1] for c in cands] == ["demo/_core.pyd", "demo/launcher.EXE"]
    assert {c.origin_group for c in cands} == {"pypi/demo-pkg"} and cands[0].package_version == "1.0"
    broken = tmp_path / "broken-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    [problem] = list(wheel_candidates("broken", broken, [".pyd"]))
    assert "not a readable wheel" in problem.reason


def test_pypi_jobs_and_old_python_abi_tags():
    cfg = load_sources().pypi
    jobs = pypi_jobs(cfg)
    assert ("numpy", "win32", "2.7") in jobs and ("numpy", "win_amd64", "3.11") in jobs
    args = fetch.pip_download_args("numpy", "win32", "2.7", Path("/tmp/x"))
    assert args[args.index("--abi") + 1] == "cp27m" and "--only-binary=:all:" in args and "--no-deps" in args
    assert "--abi" not in fetch.pip_download_args("numpy", "win32", "3.11", Path("/tmp/x"))


def test_wheel_download_failure_is_reported_and_not_cached(tmp_path, monkeypatch):
    def no_wheel(cmd, cwd, timeout_s):
        raise fetch.FetchError("ERROR: No matching distribution found for nothing")

    monkeypatch.setattr(fetch, "run_tool", no_wheel)
    with pytest.raises(
        fetch.FetchError, match=r"pip download absent \(win32, Python 3.11\): ERROR: No matching"
    ):
        fetch.fetch_wheels("absent", "win32", "3.11", tmp_path)
    assert not list((tmp_path / "pypi").rglob("*.whl"))


def test_cached_wheels_are_reused_without_the_network(tmp_path, monkeypatch):
    def network(cmd, cwd, timeout_s):
        raise AssertionError("the network must not be touched for a cached download")

    folder = tmp_path / "pypi" / "demo" / "py3.11-win32"
    folder.mkdir(parents=True)
    (folder / "demo-1.0-cp311-cp311-win32.whl").write_bytes(b"PK")
    (folder / fetch.COMPLETE_MARKER).write_text("demo-1.0-cp311-cp311-win32.whl\n")
    monkeypatch.setattr(fetch, "run_tool", network)
    assert [w.name for w in fetch.fetch_wheels("Demo", "win32", "3.11", tmp_path)] == [
        "demo-1.0-cp311-cp311-win32.whl"
    ]


def test_deb_version_parsing():
    assert fetch.deb_version(Path("libwine_8.0~repack-4_amd64.deb")) == "8.0~repack-4"
    assert fetch.deb_version(Path("foo_1%3a2.0-1_i386.deb")) == "1:2.0-1"


def test_toolchain_caps_name_known_toolchains(tmp_path):
    from runtrace.corpus.sources import ConfigError, load_sources

    good = tmp_path / "good.toml"
    good.write_text('[build.exes_per_group_by_toolchain]\nrust = 12\n"msvc-2017+" = 20\n')
    assert load_sources(good).build.exes_per_group_by_toolchain == {"rust": 12, "msvc-2017+": 20}
    bad = tmp_path / "bad.toml"
    bad.write_text("[build.exes_per_group_by_toolchain]\nrustc = 12\n")
    with pytest.raises(ConfigError, match="exes_per_group_by_toolchain"):
        load_sources(bad)
    negative = tmp_path / "negative.toml"
    negative.write_text("[build.exes_per_group_by_toolchain]\nrust = -1\n")
    with pytest.raises(ConfigError):
        load_sources(negative)
