"""One in-memory trace as the model reads it: its sequence, its windows, and where each item came from.

The representation package turns a trace into a token (ISM) or block (BSM) sequence with
`encode_trace`; scanning also needs to know, for every position of that sequence, which executed basic
block (visit) or which API call produced it, so an explanation can name addresses.  `origins` rebuilds
that map with the same rules `encode_ism` / `encode_bsm` follow (an API call, with its argument classes
when the model reads them, is inserted after the visit that made it, as `api_items` lists them; ISM
expands each visit into its instructions; `max_tokens` cuts the sequence), and
checks its length against the encoder's output so a change there fails loudly instead of mislabelling.

A dataset with one file is not needed for this: the sequence is scored straight from the encoding.
A model that reads the whole sequence at once (n-gram counts) has one "window" holding all of it
(`WHOLE_SEQUENCE`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtrace.represent.encode import (
    BSM,
    ISM,
    EncodedTrace,
    api_items,
    encode_trace,
    insert_at,
    sequence_calls,
)
from runtrace.represent.windows import WindowConfig, window_starts
from runtrace.trace.model import ApiCall, Trace

# The window settings of a model that reads the whole sequence at once (`scan.ngrammodel`).
WHOLE_SEQUENCE = {"mode": "whole"}


@dataclass
class ModelSequence:
    encoded: EncodedTrace  # local lexicon + sequence of ids into it
    origin: np.ndarray  # int64 per position: visit index (>= 0), or -1 - k for the k-th call in `calls`
    calls: list[ApiCall]  # the API calls of the sequence, in sequence order
    starts: np.ndarray  # int64 window starts
    lengths: np.ndarray  # int64 window lengths (0 only for an empty sequence)

    @property
    def length(self) -> int:
        return len(self.encoded.sequence)

    def window_positions(self) -> np.ndarray:
        """(B, T) sequence positions of each window's steps, -1 for padding."""
        width = max(int(self.lengths.max(initial=0)), 1)
        steps = np.arange(width, dtype=np.int64)
        positions = self.starts[:, None] + steps[None, :]
        return np.where(steps[None, :] < self.lengths[:, None], positions, -1)


def _ism_visit_count(trace: Trace, max_tokens: int | None) -> int:
    visits = trace.visits
    if max_tokens is None or not len(visits):
        return len(visits)
    ends = np.cumsum(trace.block_insn_counts[visits])
    return min(len(visits), int(np.searchsorted(ends, max_tokens)) + 1)


def origins(
    trace: Trace, representation: str, api: bool, max_tokens: int | None, api_args: bool = False
) -> tuple:
    """(origin per sequence position, the calls in sequence order).  A call's argument-class tokens
    (`api_args`) have the call as their origin: an explanation names the call, masking it masks them."""
    if representation == ISM:
        n_visits = _ism_visit_count(trace, max_tokens)
        counts = trace.block_insn_counts[trace.visits[:n_visits]] if n_visits else np.zeros(0, np.int64)
        origin = np.repeat(np.arange(n_visits, dtype=np.int64), counts)
        visit_ends = np.cumsum(counts)
    elif representation == BSM:
        n_visits = len(trace.visits) if max_tokens is None else min(len(trace.visits), max_tokens)
        origin = np.arange(n_visits, dtype=np.int64)
        visit_ends = origin + 1
    else:
        raise ValueError(f"unknown representation {representation!r}")
    calls = sequence_calls(trace, n_visits) if api else []
    if calls:
        positions, _, owners = api_items(trace, n_visits, api_args)
        origin = insert_at(origin, visit_ends[positions], -1 - owners)
    if max_tokens is not None:
        origin = origin[:max_tokens]
    return origin, calls


def encode_for_model(
    trace: Trace,
    representation: str,
    normalisation: str,
    api: bool,
    max_tokens: int | None,
    window: dict,
    api_args: bool = False,
) -> ModelSequence:
    encoded = encode_trace(
        trace, representation, normalisation, api=api, api_args=api_args, max_tokens=max_tokens
    )
    origin, calls = origins(trace, representation, api, max_tokens, api_args)
    if len(origin) != len(encoded.sequence):
        raise RuntimeError(
            f"scan's position map ({len(origin)}) disagrees with the {representation} encoder "
            f"({len(encoded.sequence)}): runtrace.represent.encode changed its rules"
        )
    n = len(encoded.sequence)
    if window == WHOLE_SEQUENCE:
        starts, lengths = np.zeros(1, dtype=np.int64), np.array([n], dtype=np.int64)
    else:
        config = WindowConfig.from_json(window)
        starts = window_starts(n, config)
        lengths = np.minimum(n - starts, config.length)
    return ModelSequence(encoded, origin, calls, starts, lengths)
