"""The terminal view of a scan report (rich).  Analysis never happens here: it renders a `ScanReport`."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runtrace.scan.schema import Decision, FileResult, ScanReport

EXPLAIN_ALL_UP_TO = 5  # batches this small show every file's explanation; larger ones the malicious only
SHOWN_INSTRUCTIONS = 6
_STYLE = {"malicious": "bold red", "benign": "green", "unknown": "yellow", None: "red"}


def render_report(report: ScanReport, console: Console) -> None:
    console.print(_header(report), highlight=False, soft_wrap=True)
    console.print(_results_table(report.results))
    for r in report.results:
        if r.status == "ok" and r.verdict == "unknown":
            console.print(f"[yellow]unknown:[/] {escape(r.name)}: {escape(r.reason or '')}", highlight=False,
                          soft_wrap=True)  # fmt: skip
    few = len(report.results) <= EXPLAIN_ALL_UP_TO
    for r in report.results:
        if r.explanation is not None and r.explanation.contributions and (few or r.verdict == "malicious"):
            console.print(_explanation_panel(r))
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
    return f"model: {name} (weights {m.weights_sha256[:12]}); {describe_decision(report.decision)}"


def describe_decision(d: Decision | None) -> str:
    if d is None:
        return ""
    if d.target_fpr is None:
        warning = "[yellow]not calibrated for any false-positive rate[/]"
        return f"threshold {d.threshold:.3f}, {warning} ({escape(d.source)})"
    return f"threshold {d.threshold:.3f}, calibrated for a false-positive rate of {d.target_fpr:.2%}"


def _results_table(results: list[FileResult]) -> Table:
    table = Table(show_lines=False)
    columns = [("file", "left"), ("verdict", "left"), ("P(mal.)", "right"), ("arch", "left"),
               ("instructions", "right"), ("API calls", "right"), ("stop / error", "left")]  # fmt: skip
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    for r in results:
        verdict = Text(r.verdict or "error", style=_STYLE.get(r.verdict, "red"))
        name = Text(_short(r.name))
        if r.status == "error":
            table.add_row(name, verdict, "", "", "", "", Text(r.reason or "", style="red"))
            continue
        t = r.trace
        stop = Text(f"{t.stop_reason} {t.stop_detail}".strip())
        table.add_row(name, verdict, f"{r.probability:.3f}", t.arch, f"{t.instructions:,}",
                      f"{t.api_calls:,}", stop)  # fmt: skip
    return table


def _explanation_panel(r: FileResult) -> Panel:
    e = r.explanation
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col, justify in [("#", "right"), ("where", "left"), ("ΔP", "right"), ("seen", "right"),
                         ("code", "left"), ("API calls nearby", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")
    for c in e.contributions:
        where = c.address if c.kind == "block" else f"API {c.api}"
        delta = _delta(c.contribution) if c.contribution is not None else "~"
        code = c.instructions[:SHOWN_INSTRUCTIONS]
        if len(c.instructions) > SHOWN_INSTRUCTIONS:
            code.append(f"... ({len(c.instructions) - SHOWN_INSTRUCTIONS} more)")
        # Text, not markup: disassembly is full of brackets ("dword ptr [ecx]").
        cells = [where, delta, str(c.occurrences), "\n".join(code), "\n".join(c.nearby_api_calls)]
        table.add_row(str(c.rank), *map(Text, cells))
    note = Text(
        f"ΔP: how much P(malicious) drops when the model no longer sees the block (occlusion by "
        f"{e.baseline}); {e.units_exact} of {e.units_total} blocks and API functions occluded exactly.",
        style="dim",
    )
    title = f"{escape(_short(r.name))}: [{_STYLE[r.verdict]}]{r.verdict}[/] (P = {r.probability:.3f})"
    return Panel(Group(table, note), title=title, title_align="left")


def _delta(value: float) -> str:
    """A change of P, readable whether it is 0.8 or 0.0003."""
    return f"{value:+.3f}" if abs(value) >= 0.001 or value == 0 else f"{value:+.1e}"


def _short(name: str) -> str:
    """The file name (or archive member) without its directories; a sha256 name cut to 12 digits."""
    base = name.rsplit("/", 1)[-1] if name else ""
    stem, dot, suffix = base.partition(".")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem.lower()):
        return f"{stem[:12]}…{dot}{suffix}"
    return base
