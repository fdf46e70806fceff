"""Debian packages from other releases than the machine's, and each package's date and licence.

Wine, NSIS and the MinGW runtimes are rebuilt for every Debian release, so bullseye, trixie and sid hold
programs with the same names as bookworm's but different code.  `apt-get` reaches them through a private
configuration under the download cache (its own sources list, package lists and archive folder): the
machine's apt setup is never touched, and nothing is installed; a package is only unpacked with
`dpkg-deb -x`.

`deb_provenance` reads the date of the package version (its newest `debian/changelog` entry: when that
build was published) and the licence of its main files from what was unpacked.
"""

from __future__ import annotations

import gzip
import re
import shutil
from datetime import datetime
from pathlib import Path

from runtrace.corpus.fetch import COMPLETE_MARKER, FetchError, deb_version, run_tool

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCHITECTURES = ("amd64", "i386")


def _apt_options(root: Path) -> list[str]:
    options = {
        "Dir::Etc::SourceList": root / "sources.list",
        "Dir::Etc::SourceParts": root / "sources.list.d",
        "Dir::State::Lists": root / "lists",
        "Dir::Cache": root / "cache",
        "Dir::State::status": "/dev/null",  # nothing counts as installed: only downloads are asked for
    }
    args = [f"-o{k}={v}" for k, v in options.items()]
    return args + [f"-oAPT::Architectures::={a}" for a in ARCHITECTURES]


def suite_apt(suite: str, downloads_dir: Path, timeout_s: float = 900) -> list[str]:
    """apt options for `suite`, its package lists fetched once (marker file) and reused afterwards."""
    root = downloads_dir / "debian" / f"apt-{suite}"
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n")
    options = _apt_options(root)
    if not (root / COMPLETE_MARKER).is_file():
        try:
            run_tool(["apt-get", "-q", *options, "update"], cwd=None, timeout_s=timeout_s)
        except FetchError as e:
            raise FetchError(f"apt-get update ({suite}): {e}") from None
        (root / COMPLETE_MARKER).write_text(suite + "\n")
    return options


def fetch_deb_suite(
    package: str, arch: str, suite: str, downloads_dir: Path, timeout_s: float = 900
) -> tuple[Path, str]:
    """Like `fetch.fetch_deb`, from another Debian release; cached per (package, arch, suite)."""
    folder = downloads_dir / "debian" / f"{package}_{arch}_{suite}"
    unpacked = folder / "extracted"
    debs = sorted(folder.glob(f"{package}_*_{arch}.deb"))
    if debs and (unpacked / COMPLETE_MARKER).is_file():
        return unpacked, deb_version(debs[-1])
    folder.mkdir(parents=True, exist_ok=True)
    if not debs:
        spec = package if arch == "all" else f"{package}:{arch}"
        options = suite_apt(suite, downloads_dir, timeout_s)
        try:
            run_tool(["apt-get", "-q", *options, "download", spec], cwd=folder, timeout_s=timeout_s)
        except FetchError as e:
            raise FetchError(f"apt-get download {spec} ({suite}): {e}") from None
        debs = sorted(folder.glob(f"{package}_*_{arch}.deb"))
        if not debs:
            raise FetchError(f"apt-get download {spec} ({suite}) produced no .deb")
    partial = folder / "extracted.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        run_tool(["dpkg-deb", "-x", str(debs[-1]), str(partial)], cwd=None, timeout_s=timeout_s)
    except FetchError as e:
        raise FetchError(f"dpkg-deb -x {debs[-1].name}: {e}") from None
    (partial / COMPLETE_MARKER).write_text(debs[-1].name + "\n")
    partial.rename(unpacked)
    return unpacked, deb_version(debs[-1])


# --- date and licence ----------------------------------------------------------------------------

_TRAILER = re.compile(r"^ -- .+?>  (.+)$", re.MULTILINE)


def _doc_dir(unpacked: Path, package: str) -> Path | None:
    docs = unpacked / "usr" / "share" / "doc"
    own = docs / package
    if own.is_dir() and not own.is_symlink():
        return own
    found = sorted(p for p in docs.glob("*") if p.is_dir() and not p.is_symlink()) if docs.is_dir() else []
    return found[0] if found else None


def deb_provenance(unpacked: Path, package: str) -> tuple[str, str]:
    """(date of the package version as YYYY-MM-DD, licence of its `Files: *`), "" where unknown."""
    doc = _doc_dir(unpacked, package)
    if doc is None:
        return "", ""
    date = ""
    # Native packages (win32-loader) keep their Debian changelog as changelog.gz.
    changelog = next((doc / n for n in ("changelog.Debian.gz", "changelog.gz") if (doc / n).is_file()), None)
    if changelog is not None:
        try:
            with gzip.open(changelog, "rt", encoding="utf-8", errors="replace") as f:
                match = _TRAILER.search(f.read(65536))
            if match:
                stamp = datetime.strptime(match.group(1).strip()[:25], "%a, %d %b %Y %H:%M:%S")
                date = stamp.date().isoformat()
        except (OSError, ValueError, EOFError):
            date = ""
    return date, _licence(doc / "copyright")


def _licence(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    # Machine-readable copyright files: the licence of the `Files: *` stanza is the package's own.
    for stanza in re.split(r"\n\s*\n", text):
        if re.search(r"^Files:\s*\*\s*$", stanza, re.MULTILINE):
            match = re.search(r"^License:\s*(\S.*)$", stanza, re.MULTILINE)
            if match:
                return match.group(1).strip()
    match = re.search(r"^License:\s*(\S.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""
