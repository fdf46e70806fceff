"""Turning a scored trace into the result document's parts: trace facts, behaviour, the API calls with
their arguments, and the explanation's rows."""

from __future__ import annotations

from collections import Counter

import numpy as np

from runtrace.scan.explain import UnitAttribution
from runtrace.scan.schema import ApiCallLog, ApiCallRecord, ApiCount, Behaviour, Contribution, TraceFacts
from runtrace.trace.model import ApiCall, Trace

NEARBY_VISITS = 3  # API calls this close (in visits) to a block's occurrences are shown with it
MAX_DISASSEMBLY = 16
MAX_CALLS_LISTED = 256  # API calls listed with their arguments per result (the first ones)
NEARBY_ARG_CHARS = 48  # a string argument shown beside a block is cut to this many characters


def trace_facts(trace: Trace, seq, score=None) -> TraceFacts:
    """The trace's figures; window figures only when it was scored (`score`), not for `unknown`."""
    meta = trace.meta
    counts = Counter(c.name for c in trace.api_calls)
    scored = {}
    if score is not None:
        probabilities = score.window_probabilities()
        scored = dict(
            positions_scored=score.positions_scored(),
            # Each window's own probability, so a reader (the service's page) can see where in the run
            # the model grew suspicious; the file's probability aggregates these.
            window_starts=[int(s) for s in seq.starts],
            window_probabilities=[round(float(p), 4) for p in probabilities],
        )
    return TraceFacts(
        source=meta.source,
        arch=str(meta.arch),
        instructions=trace.instruction_count,
        blocks=len(trace.blocks),
        visits=trace.visit_count,
        api_calls=len(trace.api_calls),
        distinct_apis=len(counts),
        top_apis=[ApiCount(name=n, calls=k) for n, k in counts.most_common(10)],
        stop_reason=str(meta.stop_reason),
        stop_detail=meta.stop_detail,
        tracer_version=meta.tracer_version,
        emulation_s=float(meta.wall_time_s),
        sequence_length=seq.length,
        windows=len(seq.starts) if score is not None else 0,
        positions_scored=scored.pop("positions_scored", 0),
        **scored,
    )


def behaviour(trace: Trace) -> Behaviour:
    """The tracer's behaviour summary, the kinds the result document knows (a kind a newer tracer adds
    stays in the trace file until the document learns it)."""
    recorded = trace.meta.behaviour or {}
    return Behaviour(**{kind: list(recorded[kind]) for kind in Behaviour.model_fields if kind in recorded})


def api_call_log(trace: Trace) -> ApiCallLog:
    width = 16 if trace.arch.bits == 64 else 8
    calls = sorted(trace.api_calls, key=lambda c: c.position)[:MAX_CALLS_LISTED]
    return ApiCallLog(
        total=len(trace.api_calls),
        calls=[
            ApiCallRecord(
                visit=c.position,
                name=c.name,
                args=list(c.args),
                result=c.result,
                return_address=f"0x{c.return_address:0{width}x}",
                stubbed=not c.supported,
            )
            for c in calls
        ],
    )


def contribution(
    rank: int, trace: Trace, unit: UnitAttribution, calls: CallTexts, call_positions
) -> Contribution:
    width = 16 if trace.arch.bits == 64 else 8
    common = dict(
        rank=rank,
        kind=unit.kind,
        contribution=unit.contribution,
        estimate=unit.estimate,
        occurrences=unit.positions,
        windows=unit.windows,
        first_visit=unit.first_visit,
    )
    if unit.kind == "api":
        return Contribution(**common, address=None, api=unit.api, instructions=[], nearby_api_calls=[])
    block = trace.blocks[unit.block_id]
    insns = trace.block_instructions(unit.block_id)
    lines = [f"{i.address:0{width}x}  {i.text}" for i in insns[:MAX_DISASSEMBLY]]
    if len(insns) > MAX_DISASSEMBLY:
        lines[-1] = f"... {len(insns) - MAX_DISASSEMBLY + 1} more instructions"
    return Contribution(
        **common,
        address=f"0x{block.address:0{width}x}",
        api=None,
        instructions=lines,
        nearby_api_calls=nearby_calls(trace, unit.block_id, calls, call_positions),
    )


class CallTexts:
    """A trace's API calls in visit order, each call's `short_call` text made once: the rows of an
    explanation each list the calls near their block, and a call is near many of the blocks shown."""

    def __init__(self, calls: list[ApiCall]) -> None:
        self._calls = calls
        self._texts: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def text(self, k: int) -> str:
        found = self._texts.get(k)
        if found is None:
            found = self._texts[k] = short_call(self._calls[k])
        return found


def nearby_calls(
    trace: Trace, block_id: int, calls: CallTexts, call_positions: np.ndarray, limit: int = 5
) -> list[str]:
    """API calls made within NEARBY_VISITS visits of the block's occurrences, with their arguments
    (`KERNEL32.LoadLibraryA("ws2_32.dll") (x3)`), most frequent first."""
    if not len(call_positions):
        return []
    visits = np.flatnonzero(trace.visits == block_id)
    if not len(visits):
        return []
    # For each call: the distance to the closest occurrence of the block.
    at = np.searchsorted(visits, call_positions)
    before = np.abs(call_positions - visits[np.clip(at - 1, 0, len(visits) - 1)])
    after = np.abs(visits[np.clip(at, 0, len(visits) - 1)] - call_positions)
    close = np.minimum(before, after) <= NEARBY_VISITS
    shown = Counter(calls.text(k) for k in np.flatnonzero(close).tolist())
    return [f"{n} (x{k})" if k > 1 else n for n, k in shown.most_common(limit)]


def short_call(call: ApiCall) -> str:
    """The call with its arguments (long strings cut), without its result: calls that differ only in
    what they returned are the same call to an analyst reading a block."""
    return call.signature(result=False, max_string=NEARBY_ARG_CHARS)
