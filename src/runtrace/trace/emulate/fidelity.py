"""How faithfully an emulated trace follows the program through its API calls.

After an API call that returns, the next block the program runs is the one at the call's return
address; a trace that misses it misses the code that checks every API result (tracer revisions up to
12 did, for every call).  The coverage benchmark and the tests measure the share of such calls whose
return address is the next visit.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from speakeasy.windows.common import EMU_RESERVE_SIZE, EMU_RESERVED

from runtrace.trace.model import Trace


@dataclass(frozen=True)
class ApiReturns:
    returning: int  # calls after which the program went on in the same entry point
    followed: int  # of those, calls whose return address is the next visit

    @property
    def share(self) -> float:
        return self.followed / self.returning if self.returning else 1.0


def api_returns(trace: Trace) -> ApiReturns:
    """Counts the API calls that returned to the program and those followed by their return address.

    A call returned to the program when its entry point went on after it (ExitProcess, ExitThread and
    a run that ended in the call did not) and its return address is not the emulator's own (an API
    tail-called from a window procedure returns into Speakeasy's callback trampoline).  A call that
    makes a callback (DispatchMessage calling a window procedure) is followed by the callback, not by
    its return address, and counts as not followed.
    """
    starts = sorted(e.first_visit for e in trace.meta.entry_points)
    n_visits = len(trace.visits)
    returning = followed = 0
    for call in trace.api_calls:
        if EMU_RESERVED <= call.return_address < EMU_RESERVED + EMU_RESERVE_SIZE:
            continue
        k = bisect_right(starts, call.position)
        run_end = starts[k] if k < len(starts) else n_visits
        if call.position + 1 >= run_end:
            continue
        returning += 1
        next_block = trace.blocks[int(trace.visits[call.position + 1])]
        followed += next_block.address == call.return_address
    return ApiReturns(returning, followed)
