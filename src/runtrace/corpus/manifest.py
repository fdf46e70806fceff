"""The corpus manifest: one Parquet row per distinct sample (by sha256), with label, provenance, PE
metadata and, once `corpus trace` has run, trace statistics.

The schema is fixed here so every writer produces the same columns in the same types, and readers (the
audit, the evaluation stage) can rely on them.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Bumped whenever a column's meaning or computation changes: a rebuild then recomputes every row.
MANIFEST_VERSION = 3

PROVENANCE_FIELDS = [
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),  # "malicious" / "benign"
    pa.field("source", pa.string()),  # archive name, "debian", "pypi"
    pa.field("package", pa.string()),
    pa.field("package_version", pa.string()),
    pa.field("origin_group", pa.string()),  # package, Wine module or malware family: the CV group
    pa.field("member", pa.string()),  # where the file sits inside its package
    pa.field("file_name", pa.string()),
    pa.field("also_in", pa.list_(pa.string())),  # other origin groups that ship the identical file
    pa.field("storage", pa.string()),  # "store" (sample store) or "zip" (read from the archive)
    pa.field("path", pa.string()),  # sample-store file, or the archive for storage == "zip"
    pa.field("archive_member", pa.string()),
    pa.field("archive_password", pa.string()),  # the archive's public convention ("infected"), not a secret
    pa.field("note", pa.string()),
    pa.field("licence", pa.string()),  # the package's licence as its metadata states it
]

PE_FIELDS = [
    pa.field("arch", pa.string()),  # "i386" / "amd64"
    pa.field("kind", pa.string()),  # "exe" / "dll" / "driver"
    pa.field("size", pa.int64()),
    pa.field("is_dotnet", pa.bool_()),
    pa.field("linker_major", pa.int32()),
    pa.field("linker_minor", pa.int32()),
    pa.field("linker_version", pa.float64()),
    pa.field("has_rich", pa.bool_()),
    pa.field("rich_entries", pa.int32()),
    pa.field("rich_max_build", pa.int32()),
    pa.field("compiler", pa.string()),
    pa.field("compiler_detail", pa.string()),
    pa.field("section_count", pa.int32()),
    pa.field("import_dll_count", pa.int32()),
    pa.field("import_count", pa.int32()),
    pa.field("export_count", pa.int32()),
    pa.field("entropy", pa.float64()),
    pa.field("signed", pa.bool_()),
    pa.field("subsystem", pa.int32()),
    pa.field("timestamp", pa.int64()),
    # A reproducible build (MSVC /Brepro, lld /Brepro) writes a hash of the content where the link time
    # would be: its `timestamp` is no date at all.
    pa.field("repro_build", pa.bool_()),
    pa.field("packer_hint", pa.string()),
]

CODE_FIELDS = [
    # Hash of the executable sections with relocation targets zeroed (codeid.py): equal = same program.
    pa.field("code_id", pa.string()),
    # The cross-validation group: origin groups joined by shared code, or a widely shared code group
    # (installer stub, launcher, runtime DLL) on its own.  No fold may split one.
    pa.field("cv_group", pa.string()),
]

SELECTION_FIELDS = [
    # True for the rows of the metadata-matched subset (see build.mark_matched_subset).
    pa.field("matched", pa.bool_()),
    # The pair a matched row belongs to (its malicious member's sha256): pairs must not straddle folds,
    # or each test file's near-twin with the other label sits in training and inverts the scores.
    pa.field("match_id", pa.string()),
]

TRACE_FIELDS = [
    pa.field("trace_status", pa.string()),  # "ok" / "skipped" / "error"; null before `corpus trace`
    pa.field("trace_path", pa.string()),
    pa.field("instruction_count", pa.int64()),
    pa.field("block_count", pa.int64()),  # distinct basic blocks
    pa.field("visit_count", pa.int64()),
    pa.field("api_call_count", pa.int64()),
    pa.field("stop_reason", pa.string()),
    pa.field("trace_error", pa.string()),
]

LINEAGE_FIELDS = [
    # The source collection's grouping label (threat actor, report or campaign, malware family), as its
    # csv spells it; null where the source gives none.  A grouping key, not ground truth (corpus.md).
    pa.field("family", pa.string()),
    pa.field("family_kind", pa.string()),  # "threat-actor", "report-or-campaign", "malware-family", "crypter"
    # When the file was first known to exist, for temporal evaluation (corpus/dates.py says how), and
    # which rule gave the date: "csv-date", "pe-timestamp", "pypi-upload", "debian-changelog"; null: none.
    pa.field("first_seen", pa.date32()),
    pa.field("first_seen_source", pa.string()),
]

SCHEMA = pa.schema(
    PROVENANCE_FIELDS + PE_FIELDS + CODE_FIELDS + SELECTION_FIELDS + LINEAGE_FIELDS + TRACE_FIELDS
)
TRACE_COLUMNS = [f.name for f in TRACE_FIELDS]


class ManifestError(ValueError):
    """An unreadable or foreign manifest file; the message names the file."""


def rows_to_table(rows: list[dict]) -> pa.Table:
    full = [{name: row.get(name) for name in SCHEMA.names} for row in rows]
    table = pa.Table.from_pylist(full, schema=SCHEMA)
    return table.replace_schema_metadata({b"runtrace.manifest_version": str(MANIFEST_VERSION).encode()})


# Columns naming files of the corpus itself (stored samples, traces). Inside the manifest's folder they are
# written relative to it, so a corpus folder can be moved or copied to another disk and still work.
LOCAL_PATH_COLUMNS = ("path", "trace_path")


def _relative_to(folder: Path, value: str | None) -> str | None:
    if not value or not Path(value).is_absolute() or not Path(value).is_relative_to(folder):
        return value
    return Path(value).relative_to(folder).as_posix()


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.absolute()
    rows = [row | {c: _relative_to(folder, row.get(c)) for c in LOCAL_PATH_COLUMNS} for row in rows]
    tmp = path.with_name(path.name + ".partial")
    pq.write_table(rows_to_table(rows), tmp)
    tmp.replace(path)  # readers never see a half-written manifest
    return path


def read_manifest(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest there (run `runtrace corpus build` first)") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise ManifestError(f"{path}: not a readable Parquet manifest ({e})") from None
    missing = {"sha256", "label", "origin_group", "arch", "kind"} - set(table.column_names)
    if missing:
        raise ManifestError(f"{path}: not a runtrace manifest (missing {', '.join(sorted(missing))})")
    return _absolute_paths(table, path.parent.absolute())


def _absolute_paths(table: pa.Table, folder: Path) -> pa.Table:
    """The manifest with its relative sample and trace paths joined to its folder (readers get paths
    they can open, whatever folder the corpus now lives in)."""
    for name in LOCAL_PATH_COLUMNS:
        if name not in table.column_names:
            continue
        values = table.column(name).to_pylist()
        values = [v if not v or Path(v).is_absolute() else str(folder / v) for v in values]
        table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.string()))
    return table


def read_manifest_rows(path: Path) -> list[dict]:
    return read_manifest(path).to_pylist()


def has_trace_columns(table: pa.Table) -> bool:
    """True when at least one row carries trace statistics from `corpus trace`."""
    if "instruction_count" not in table.column_names:
        return False
    return table.column("instruction_count").null_count < table.num_rows
