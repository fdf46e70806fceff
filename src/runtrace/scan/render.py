"""The terminal view of a scan report (rich).  Analysis never happens here: it renders a `ScanReport`.

Laid out for an 80-column terminal: file names as short as still tells them apart, short column
headers, no sha256 spread over lines."""

from __future__ import annotations

import math

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runtrace.paths import short_names
from runtrace.scan.schema import (
    Contribution,
    Decision,
    Explanation,
    FileResult,
    Neighbours,
    ScanReport,
    SimilarReport,
)

EXPLAIN_ALL_UP_TO = 5  # batches this small show every file's explanation; larger ones the malicious only
SHOWN_INSTRUCTIONS = 6
_STYLE = {"malicious": "bold red", "benign": "green", "unknown": "yellow", None: "red"}

# Said under every explanation of a monotone model, whose rows can only point towards malicious.
EVIDENCE_ONLY = "towards benign: none by design (this model counts evidence of malice only)"


def probability_text(p: float) -> str:
    """A probability with the digits that tell it apart from 0 or 1: three decimals in the middle, more
    near the ends (an n-gram model's threshold can be 0.999975, which three decimals print as 1.000)."""
    tail = min(p, 1.0 - p)
    digits = 3 if tail >= 0.001 else min(8, 1 + math.ceil(-math.log10(tail))) if tail > 0 else 8
    return f"{p:.{digits}f}"


def render_report(report: ScanReport, console: Console) -> None:
    names = dict(
        zip((r.name for r in report.results), short_names([r.name for r in report.results]), strict=True)
    )
    console.print(_header(report), highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print(_results_table(report.results, names))
    for r in report.results:
        for warning in r.warnings:
            console.print(f"[yellow]warning:[/] {escape(names[r.name])}: {escape(warning)}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        if r.status == "ok" and r.verdict == "unknown":
            console.print(f"[yellow]unknown:[/] {escape(names[r.name])}: {escape(r.reason or '')}",
                          highlight=False, soft_wrap=True)  # fmt: skip
    few = len(report.results) <= EXPLAIN_ALL_UP_TO
    for r in report.results:
        if r.explanation is not None and (few or r.verdict == "malicious"):
            console.print(_explanation_panel(r, names[r.name]))
        if r.neighbours is not None and r.neighbours.nearest and (few or r.verdict == "malicious"):
            console.print(_neighbours_table(r.neighbours, f"{names[r.name]}: nearest known files"))
    for r in report.results:
        if r.neighbours is not None and r.neighbours.note:
            console.print(f"[yellow]neighbours:[/] {escape(names[r.name])}: {escape(r.neighbours.note)}",
                          highlight=False, soft_wrap=True)  # fmt: skip
    s = report.summary
    console.print(
        f"{s.files} file{'s' if s.files != 1 else ''}: {s.malicious} malicious, {s.benign} benign, "
        f"{s.unknown} unknown, {s.errors} error{'s' if s.errors != 1 else ''}",
        highlight=False,
    )


def _header(report: ScanReport) -> str:
    m = report.model
    if m is None:
        return "no model"
    name = escape(f"{m.kind} {m.version}" if m.version else m.kind)
    trained = ", ".join(m.trained_tracer_versions) if m.trained_tracer_versions else "not recorded"
    return (
        f"model: {name} (weights {m.weights_sha256[:12]}; trained on traces of {escape(trained)}); "
        f"{describe_decision(report.decision)}; traces under {report.min_instructions:,} instructions are "
        f"not judged; tracer {escape(report.tracer_version)}"
    )


def describe_decision(d: Decision | None) -> str:
    if d is None:
        return ""
    if d.target_fpr is None:
        warning = "[yellow]not calibrated for any false-positive rate[/]"
        return f"threshold {probability_text(d.threshold)}, {warning} ({escape(d.source)})"
    threshold = probability_text(d.threshold)
    return f"threshold {threshold}, calibrated for a false-positive rate of {d.target_fpr:.2%}"


def _results_table(results: list[FileResult], names: dict[str, str]) -> Table:
    table = Table(show_lines=False, pad_edge=False)
    columns = [("file", "left"), ("verdict", "left"), ("P(mal)", "right"), ("arch", "left"),
               ("instr.", "right"), ("APIs", "right"), ("stop / error", "left")]  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col == "file")
    for r in results:
        verdict = Text(r.verdict or "error", style=_STYLE.get(r.verdict, "red"))
        name = Text(names[r.name])
        if r.status == "error":
            table.add_row(name, verdict, "", "", "", "", Text(r.reason or "", style="red"))
            continue
        t = r.trace
        stop = Text(f"{t.stop_reason} {t.stop_detail}".strip())
        p = "–" if r.probability is None else probability_text(r.probability)
        table.add_row(name, verdict, p, t.arch, f"{t.instructions:,}", f"{t.api_calls:,}", stop)
    return table


def _explanation_panel(r: FileResult, name: str) -> Panel:
    e = r.explanation
    parts = []
    for title, rows in (("towards malicious", e.towards_malicious), ("towards benign", e.towards_benign)):
        if rows:
            parts += [Text(title, style="bold"), _rows_table(rows)]
    if e.evidence_only:
        parts.append(Text(EVIDENCE_ONLY, style="dim"))
    parts.append(Text(_summary(e), style="yellow" if e.weak else "dim"))
    title = f"{escape(name)}: [{_STYLE[r.verdict]}]{r.verdict}[/] (P = {probability_text(r.probability)})"
    return Panel(Group(*parts), title=title, title_align="left")


def _rows_table(rows: list[Contribution]) -> Table:
    """Rank, where, ΔP, occurrences, then the block's code with the API calls made near it below (one
    column, so that the calls' arguments have the width of the code, not a sliver beside it)."""
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col, justify in [("#", "right"), ("where", "left"), ("ΔP", "right"), ("seen", "right"),
                         ("code, then API calls nearby", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col in ("where", "ΔP", "seen"))
    for c in rows:
        where = c.address if c.kind == "block" else f"API {c.api}"
        delta = _delta(c.contribution) if c.contribution is not None else "~"
        code = c.instructions[:SHOWN_INSTRUCTIONS]
        if len(c.instructions) > SHOWN_INSTRUCTIONS:
            code.append(f"... ({len(c.instructions) - SHOWN_INSTRUCTIONS} more)")
        # Text, not markup: disassembly is full of brackets ("dword ptr [ecx]").  A cut instruction
        # line reads better than one wrapped into two.
        cell = [Text("\n".join(code), no_wrap=True, overflow="ellipsis")]
        if c.nearby_api_calls:
            cell.append(Text("\n".join(f"→ {call}" for call in c.nearby_api_calls), style="cyan"))
        table.add_row(str(c.rank), Text(where), Text(delta), Text(str(c.occurrences)), Group(*cell))
    return table


def _summary(e: Explanation) -> str:
    # A negative share (masking the rows moves the score away from the all-masked answer) is in the JSON
    # for the record; the note says what it means in words.
    shown = e.shown_share is not None and e.shown_share >= 0
    share = f"the rows shown account for {e.shown_share:.0%} of the score; " if shown else ""
    text = (
        f"ΔP: how much P(malicious) drops when the model no longer sees the block (occlusion by "
        f"{e.baseline}); {share}{e.units_exact} of {e.units_total} blocks and API functions occluded exactly."
    )
    return f"{e.note}.\n{text}" if e.note else text


def _delta(value: float) -> str:
    """A change of P, readable whether it is 0.8 or 0.0003."""
    return f"{value:+.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:+.1e}"


def _neighbours_table(n: Neighbours, title: str) -> Table:
    """The nearest known files: label, family or origin, J (estimated Jaccard of the executed blocks),
    shared blocks (estimated), J api (of the API-call 3-grams); names cut rather than wrapped at 80."""
    table = Table(title=escape(title), title_justify="left", pad_edge=False, show_edge=False)
    for col, justify in [("#", "right"), ("label", "left"), ("family / origin", "left"), ("J", "right"),
                         ("shared", "right"), ("J api", "right"), ("sha256", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, overflow="ellipsis", no_wrap=True)
    for rank, f in enumerate(n.nearest, 1):
        what = ("this file: " if f.same_file else "") + (f.family or f.origin or f.file_name or "")
        table.add_row(str(rank), Text(f.label, style=_STYLE.get(f.label, "")), Text(what), f"{f.jaccard:.2f}",
                      f"~{f.shared_blocks:,}", f"{f.api_jaccard:.2f}", f.sha256[:10])  # fmt: skip
    return table


def render_similar(report: SimilarReport, console: Console) -> None:
    """`runtrace similar`: the index, then for each input its nearest known files."""
    names = dict(
        zip((r.name for r in report.results), short_names([r.name for r in report.results]), strict=True)
    )
    i = report.index
    console.print(
        f"index: {i.entries:,} known files ({i.malicious:,} malicious in {i.families} families, "
        f"{i.benign:,} benign){f'; {escape(i.path)}' if i.path else ''}",
        highlight=False,
        soft_wrap=True,
    )
    for r in report.results:
        name = escape(names[r.name])
        if r.status == "error":
            continue  # printed on stderr by the command
        n = r.neighbours
        if not n.nearest:
            why = "it executed no code" if n.blocks == 0 else f"{n.blocks:,} distinct blocks executed"
            console.print(f"{name}: no known file alike ({why})", highlight=False, soft_wrap=True)
            continue
        console.print(_neighbours_table(n, f"{names[r.name]} ({n.blocks:,} distinct blocks executed)"))
    s = report.summary
    console.print(
        f"{s.files} input{'s' if s.files != 1 else ''}: {s.with_neighbours} with known files alike, "
        f"{s.without_neighbours} without, {s.errors} error{'s' if s.errors != 1 else ''}",
        highlight=False,
    )
