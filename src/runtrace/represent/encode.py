"""One trace -> one token sequence (ISM) or block sequence (BSM), with a lexicon local to the trace.

Speed comes from the shape of a trace: few distinct blocks, many visits.  Each distinct block is
normalised once (and each distinct instruction text once per process, see `normalise_instruction`'s
cache); the per-visit sequence is then produced by numpy gathers over the visit array, never by a
Python loop over executed instructions.

Ids here are *local* to the trace; `runtrace.represent.dataset` remaps them into the dataset's lexicon,
which lets traces be encoded in parallel worker processes without sharing a dictionary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from runtrace.represent.apiargs import argument_tokens
from runtrace.represent.names import BSM, ISM, REPRESENTATIONS
from runtrace.represent.normalise import Normalisation, api_token, normalise_instruction
from runtrace.trace.model import ApiCall, Trace


@dataclass
class EncodedTrace:
    """A trace as ids into `lexicon` (local to this trace)."""

    lexicon: list[str]  # ISM: instruction/API tokens; BSM: block keys
    sequence: np.ndarray  # int32 ids into lexicon, in execution order
    n_api_calls: int
    # BSM only: for every block key in `lexicon`, the normalised instruction tokens of the block.
    block_contents: list[tuple[str, ...]] = field(default_factory=list)


def distinct_blocks(visits: np.ndarray, n_blocks: int) -> np.ndarray:
    """The block ids that occur in `visits`, ascending.  (Not `np.unique`: numpy 2.4's imports numpy.ma on
    its first call, 20 ms of a one-second `runtrace scan`; a bincount over the ids is cheaper anyway.)"""
    return np.flatnonzero(np.bincount(visits.astype(np.int64, copy=False), minlength=n_blocks))


def block_token_lists(trace: Trace, mode: Normalisation | str, block_ids: np.ndarray) -> dict[int, list[str]]:
    """Normalised instruction tokens of the given distinct blocks."""
    mode = Normalisation(mode)
    out = {}
    for block_id in block_ids.tolist():
        insns = trace.block_instructions(block_id)
        out[block_id] = [normalise_instruction(i.mnemonic, i.op_str, mode) for i in insns]
    return out


def block_key(tokens: list[str] | tuple[str, ...]) -> str:
    """Identity of a block's *normalised* content: the same code at another address, or with other
    constants, is the same block; 80 bits make collisions irrelevant at corpus scale."""
    digest = hashlib.blake2b("\n".join(tokens).encode(), digest_size=10).hexdigest()
    return f"b:{digest}"


def expand(flat: np.ndarray, offsets: np.ndarray, visits: np.ndarray) -> np.ndarray:
    """Concatenate `flat[offsets[v]:offsets[v+1]]` for every v in visits, vectorised."""
    lengths = (offsets[1:] - offsets[:-1])[visits]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=flat.dtype)
    # Position p of the output reads flat[start of its visit + (p - output start of its visit)].
    out_starts = np.cumsum(lengths) - lengths
    shift = np.repeat(offsets[:-1][visits] - out_starts, lengths)
    return flat[np.arange(total, dtype=np.int64) + shift]


def insert_at(sequence: np.ndarray, points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Insert values[k] before sequence[points[k]] (points sorted ascending; equal points keep order)."""
    if len(points) == 0:
        return sequence
    out = np.empty(len(sequence) + len(points), dtype=sequence.dtype)
    dest = points + np.arange(len(points))
    is_insert = np.zeros(len(out), dtype=bool)
    is_insert[dest] = True
    out[dest] = values
    out[~is_insert] = sequence
    return out


def _visible_visits(trace: Trace, max_visits: int | None) -> np.ndarray:
    visits = trace.visits
    return visits if max_visits is None else visits[:max_visits]


def sequence_calls(trace: Trace, n_visits: int) -> list[ApiCall]:
    """The API calls made within the first n_visits visits, in the order the encoders insert them: by
    position, calls at one position in their recorded order (sorted() is stable)."""
    return sorted((c for c in trace.api_calls if 0 <= c.position < n_visits), key=lambda c: c.position)


def api_items(
    trace: Trace, n_visits: int, api_args: bool = False
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """What the API calls within the first n_visits visits add to a sequence: per inserted token, the
    visit index it follows, the token, and the index of its call in `sequence_calls` order.

    One token per call (`api_token`), followed with `api_args` by its argument classes
    (`runtrace.represent.apiargs`)."""
    calls = sequence_calls(trace, n_visits)
    if not api_args:
        positions = np.fromiter((c.position for c in calls), dtype=np.int64, count=len(calls))
        return positions, [api_token(c.name) for c in calls], np.arange(len(calls), dtype=np.int64)
    positions, tokens, owners = [], [], []
    for k, call in enumerate(calls):
        items = [api_token(call.name), *argument_tokens(call.name, call.args)]
        tokens += items
        positions += [call.position] * len(items)
        owners += [k] * len(items)
    return np.asarray(positions, dtype=np.int64), tokens, np.asarray(owners, dtype=np.int64)


def encode_ism(
    trace: Trace,
    mode: Normalisation | str,
    *,
    api: bool = True,
    api_args: bool = False,
    max_tokens: int | None = None,
) -> EncodedTrace:
    visits = trace.visits
    if max_tokens is not None:
        # Cut the visit array before expanding so a 10^7-instruction trace costs only what is kept.
        ends = np.cumsum(trace.block_insn_counts[visits]) if len(visits) else np.zeros(0, np.int64)
        visits = visits[: int(np.searchsorted(ends, max_tokens)) + 1]
    distinct = distinct_blocks(visits, len(trace.blocks))
    tokens_of = block_token_lists(trace, mode, distinct)

    index: dict[str, int] = {}
    n_blocks = len(trace.blocks)
    counts = np.zeros(n_blocks, dtype=np.int64)
    parts = [np.zeros(0, dtype=np.int32)] * n_blocks
    for block_id, tokens in tokens_of.items():
        parts[block_id] = np.fromiter(
            (index.setdefault(t, len(index)) for t in tokens), dtype=np.int32, count=len(tokens)
        )
        counts[block_id] = len(tokens)
    lexicon = list(index)
    offsets = np.zeros(n_blocks + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate(parts) if n_blocks else np.zeros(0, dtype=np.int32)
    sequence = expand(flat, offsets, visits.astype(np.int64))

    n_api = 0
    if api:
        positions, names, owners = api_items(trace, len(visits), api_args)
        if len(positions):
            # An API call happens after its visit's last instruction: insert before the next visit.
            visit_ends = np.cumsum(counts[visits])
            ids = np.fromiter((index.setdefault(t, len(index)) for t in names), dtype=np.int32)
            lexicon = list(index)
            sequence = insert_at(sequence, visit_ends[positions], ids)
            n_api = int(owners[-1]) + 1
    if max_tokens is not None and len(sequence) > max_tokens:
        sequence = sequence[:max_tokens]
    return EncodedTrace(lexicon, sequence.astype(np.int32, copy=False), n_api)


def encode_bsm(
    trace: Trace,
    mode: Normalisation | str,
    *,
    api: bool = True,
    api_args: bool = False,
    max_tokens: int | None = None,
) -> EncodedTrace:
    """Blocks keyed by normalised content; an API call is a pseudo-block whose only token is the call,
    so the block encoder reads it like any other block (with `api_args`, each argument class follows it
    as a pseudo-block of its own, as in ISM)."""
    visits = _visible_visits(trace, max_tokens)
    distinct = distinct_blocks(visits, len(trace.blocks))
    tokens_of = block_token_lists(trace, mode, distinct)

    index: dict[str, int] = {}
    contents: list[tuple[str, ...]] = []
    key_of_block = np.zeros(len(trace.blocks), dtype=np.int32)
    for block_id, tokens in tokens_of.items():
        key = block_key(tokens)
        if key not in index:
            index[key] = len(index)
            contents.append(tuple(tokens))
        key_of_block[block_id] = index[key]
    sequence = key_of_block[visits.astype(np.int64)]

    n_api = 0
    if api:
        positions, names, owners = api_items(trace, len(visits), api_args)
        if len(positions):
            ids = []
            for name in names:
                if name not in index:
                    index[name] = len(index)
                    contents.append((name,))
                ids.append(index[name])
            sequence = insert_at(sequence, positions + 1, np.asarray(ids, dtype=np.int32))
            n_api = int(owners[-1]) + 1
    if max_tokens is not None and len(sequence) > max_tokens:
        sequence = sequence[:max_tokens]
    return EncodedTrace(list(index), sequence.astype(np.int32, copy=False), n_api, contents)


def encode_trace(
    trace: Trace,
    representation: str,
    mode: Normalisation | str,
    *,
    api: bool = True,
    api_args: bool = False,
    max_tokens: int | None = None,
) -> EncodedTrace:
    """`api`: API calls as tokens after the block that made them; `api_args` (needs `api`): each followed
    by its arguments' class tokens (off by default: the paper's ISM and BSM have neither)."""
    if representation == ISM:
        return encode_ism(trace, mode, api=api, api_args=api_args, max_tokens=max_tokens)
    if representation == BSM:
        return encode_bsm(trace, mode, api=api, api_args=api_args, max_tokens=max_tokens)
    raise ValueError(
        f"unknown representation {representation!r} (expected one of {', '.join(REPRESENTATIONS)})"
    )
