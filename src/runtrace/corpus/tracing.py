"""`runtrace corpus trace`: emulate every manifest sample with the tracer and add trace statistics.

The tracer's batch runner does the work (one forked child per sample, resumable by trace file); this
module only turns manifest rows into the tracer's `Sample`s - reading malware straight from its archive -
and writes the outcomes back into the manifest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from runtrace.corpus import manifest as mf


def manifest_samples(rows: list[dict], max_bytes: int | None = None) -> list:
    """Tracer samples for manifest rows: malware is read straight from its archive by the tracer child,
    decrypted in memory only, never written out.  Rows over `max_bytes` become problems, unread."""
    from runtrace.trace.emulate.inputs import InputProblem, Sample, too_large

    samples = []
    for row in rows:
        name = f"{row['package']}:{row.get('member') or row['sha256']}"
        size = row.get("size") or 0
        problem = too_large(size, max_bytes)
        if problem:
            samples.append(InputProblem(name, problem, row["sha256"]))
        elif row.get("storage") == "zip":
            member, pwd = row["archive_member"], row.get("archive_password")
            samples.append(Sample(row["sha256"], name, row["path"], member, pwd, size))
        else:
            samples.append(Sample(row["sha256"], name, row["path"], size=size))
    return samples


def outcome_columns(outcome) -> dict:
    """Manifest trace columns for one tracer outcome ("skipped" = traced before: still a trace)."""
    ok = outcome.status in ("ok", "skipped")
    return {
        "trace_status": "ok" if ok else "error",
        "trace_path": outcome.path or None,
        "instruction_count": outcome.instruction_count if ok else None,
        "block_count": outcome.block_count if ok else None,
        "visit_count": outcome.visit_count if ok else None,
        "api_call_count": outcome.api_call_count if ok else None,
        "stop_reason": outcome.stop_reason or None,
        "trace_error": outcome.error or None,
    }


def select_rows(
    rows: list[dict],
    only_matched: bool,
    label: str | None,
    limit: int,
    match_pool: bool = False,
    match_preview: bool = False,
    toolchain: str | None = None,
    kind: str | None = None,
) -> list[dict]:
    if match_pool:
        from runtrace.corpus.matching import match_pool as pool

        rows = pool(rows)
    elif match_preview:
        # The draw `dataset build --match` would make if every file traced long enough: the cheapest
        # way to a matched dataset (partners whose trace turns out short are replaced from the pool).
        from runtrace.corpus.matching import match_rows

        rows = match_rows(rows).rows
    from runtrace.corpus.matching import toolchain_of

    chosen = [
        r
        for r in rows
        if (not only_matched or r.get("matched"))
        and (not label or r["label"] == label)
        and (not kind or r.get("kind") == kind)
        and (not toolchain or toolchain_of(r) == toolchain)
    ]
    if match_pool or match_preview:  # both come in priority order: keep it
        return chosen[:limit] if limit > 0 else chosen
    if limit > 0:
        # Alternate the classes so a partial run still has both of them, each class in a fixed shuffled
        # order so a partial run spreads over sources and groups instead of taking the manifest's first.
        rng = random.Random(0)
        mal = [r for r in chosen if r["label"] == "malicious"]
        ben = [r for r in chosen if r["label"] != "malicious"]
        rng.shuffle(mal)
        rng.shuffle(ben)
        mixed = [r for pair in zip(mal, ben, strict=False) for r in pair]
        mixed += mal[len(ben) :] + ben[len(mal) :]
        chosen = mixed[:limit]
    return chosen


def trace_corpus(
    manifest_path: Path,
    out_dir: Path,
    settings=None,
    workers: int | None = None,
    on_done: Callable | None = None,
    retry_errors: bool = False,
    only_matched: bool = False,
    label: str | None = None,
    limit: int = 0,
    on_start: Callable[[int], None] | None = None,
    dask_address: str | None = None,
    max_bytes: int | None = None,
    match_pool: bool = False,
    match_preview: bool = False,
    toolchain: str | None = None,
    kind: str | None = None,
) -> list:
    """Trace the selected manifest rows; the manifest is updated even if the run is interrupted.
    With `dask_address` the emulation runs on that Dask cluster (the samples are read here)."""
    from runtrace.trace.emulate.batch import trace_batch
    from runtrace.trace.emulate.dask_runner import trace_batch_dask

    rows = mf.read_manifest_rows(manifest_path)
    chosen = select_rows(rows, only_matched, label, limit, match_pool, match_preview, toolchain, kind)
    if on_start:
        on_start(len(chosen))
    outcomes: list = []

    def record(outcome) -> None:
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)

    try:
        samples = manifest_samples(chosen, max_bytes)
        if dask_address:
            trace_batch_dask(
                samples, out_dir, dask_address, settings, on_done=record, retry_errors=retry_errors
            )
        else:
            trace_batch(samples, out_dir, settings, workers, on_done=record, retry_errors=retry_errors)
    finally:
        by_sha = {o.sha256: o for o in outcomes if o.sha256}
        for row in rows:
            outcome = by_sha.get(row["sha256"])
            if outcome is not None:
                row.update(outcome_columns(outcome))
        mf.write_manifest(rows, manifest_path)
    return outcomes
