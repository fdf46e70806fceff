"""Downloading benign packages with the ordinary clients (apt-get, dpkg-deb, pip), cached for reruns.

Nothing here installs a package: a .deb is only unpacked with `dpkg-deb -x` into the cache and a wheel is
only read as a zip.  Every download lands in its own cache folder only once it is complete, so an
interrupted build resumes where it stopped and a finished one never touches the network again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

from runtrace.corpus.reserved import refuse_reserved

COMPLETE_MARKER = ".runtrace-complete"


class FetchError(Exception):
    """A package could not be fetched; the message is one line, fit to report and move on."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # pip and apt put the useful line last, but prefix it with "ERROR:"/"E:"; keep it as they wrote it.
    errors = [ln for ln in lines if ln.startswith(("ERROR:", "E:"))]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_tool(cmd: list[str], cwd: Path | None, timeout_s: float) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} not found on this machine") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(cmd[:3])} timed out after {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        raise FetchError(_last_line(proc.stderr or proc.stdout))
    return proc


def normalise_project(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def deb_version(deb: Path) -> str:
    # apt-get download names files <package>_<version>_<arch>.deb, with ':' (epoch) escaped as %3a.
    parts = unquote(deb.name).split("_")
    return parts[1] if len(parts) >= 3 else ""


def fetch_deb(package: str, arch: str, downloads_dir: Path, timeout_s: float = 900) -> tuple[Path, str]:
    """Download `package:arch` once and unpack it; returns (unpacked root, package version)."""
    folder = downloads_dir / "debian" / f"{package}_{arch}"
    folder.mkdir(parents=True, exist_ok=True)
    debs = sorted(folder.glob(f"{package}_*_{arch}.deb"))
    # Architecture-independent packages ("all") are asked for by bare name.
    spec = package if arch == "all" else f"{package}:{arch}"
    if not debs:
        try:
            run_tool(["apt-get", "download", "-q", spec], cwd=folder, timeout_s=timeout_s)
        except FetchError as e:
            hint = ""
            if "Unable to locate" in str(e) or "Can't select" in str(e):
                hint = f" (run `dpkg --add-architecture {arch} && apt-get update` once)"
            raise FetchError(f"apt-get download {spec}: {e}{hint}") from None
        debs = sorted(folder.glob(f"{package}_*_{arch}.deb"))
        if not debs:
            raise FetchError(f"apt-get download {spec} produced no .deb")
    deb = debs[-1]
    unpacked = folder / "extracted"
    if not (unpacked / COMPLETE_MARKER).is_file():
        partial = folder / "extracted.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        try:
            run_tool(["dpkg-deb", "-x", str(deb), str(partial)], cwd=None, timeout_s=timeout_s)
        except FetchError as e:
            raise FetchError(f"dpkg-deb -x {deb.name}: {e}") from None
        (partial / COMPLETE_MARKER).write_text(deb.name + "\n")
        partial.rename(unpacked)
    return unpacked, deb_version(deb)


def pip_download_args(project: str, platform: str, python: str, dest: Path) -> list[str]:
    args = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
    args += ["--disable-pip-version-check", "--platform", platform, "--python-version", python]
    major, _, minor = python.partition(".")
    if (int(major), int(minor or 0)) < (3, 8):
        # Before 3.8 CPython's ABI tag carried an "m" (pymalloc) flag, which pip does not infer when it is
        # asked for a foreign Python; without it no cp27/cp34 wheel matches.
        tag = f"cp{major}{minor}"
        args += ["--implementation", "cp", "--abi", f"{tag}m", "--abi", "abi3", "--abi", "none"]
    return args + ["--dest", str(dest), project]


def fetch_wheels(
    project: str, platform: str, python: str, downloads_dir: Path, timeout_s: float = 600
) -> list[Path]:
    """Download the newest wheel of `project` for one Windows platform and Python; cached per triple."""
    refuse_reserved("pypi", project)  # a reserved project is never downloaded, whoever asks
    folder = downloads_dir / "pypi" / normalise_project(project) / f"py{python}-{platform}"
    if (folder / COMPLETE_MARKER).is_file():
        return sorted(folder.glob("*.whl"))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        run_tool(pip_download_args(project, platform, python, partial), cwd=None, timeout_s=timeout_s)
    except FetchError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise FetchError(f"pip download {project} ({platform}, Python {python}): {e}") from None
    wheels = sorted(partial.glob("*.whl"))
    if not wheels:
        shutil.rmtree(partial, ignore_errors=True)
        raise FetchError(f"pip download {project} ({platform}, Python {python}): no wheel")
    (partial / COMPLETE_MARKER).write_text("\n".join(w.name for w in wheels) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return sorted(folder.glob("*.whl"))
