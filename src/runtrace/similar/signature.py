"""A trace's executed code as two MinHash signatures: its set of distinct normalised blocks, and the set
of its API-call n-grams.

Blocks are identified by their normalised content (`represent.encode.block_key` over operand-kind
tokens), so the same code at another address or with other constants is the same block; a program
rebuilt or relocated keeps most of its blocks, where a packer or a recompilation changes every byte a
static hash (ssdeep, TLSH, imphash) reads.  The MinHash itself is datasketch's; its permutations are made
once per process, since making them is most of the cost of a signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasketch import MinHash

from runtrace.represent.encode import block_key, block_token_lists, distinct_blocks
from runtrace.represent.normalise import Normalisation
from runtrace.trace.model import Trace

NUM_PERM = 128
SEED = 1
API_NGRAM = 3
NORMALISATION = Normalisation.OPERAND_KINDS
_PERMUTATIONS = None


def minhash(items: list[bytes]) -> np.ndarray:
    """The MinHash signature (NUM_PERM 32-bit values, as datasketch computes them) of a set of items."""
    global _PERMUTATIONS
    if _PERMUTATIONS is None:
        _PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=SEED).permutations
    m = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=_PERMUTATIONS)
    if items:
        m.update_batch(items)
    return m.hashvalues.astype(np.uint32)  # datasketch keeps values below 2**32 in uint64s


@dataclass(frozen=True)
class CodeSignature:
    blocks: np.ndarray  # uint32[NUM_PERM]
    n_blocks: int  # distinct normalised blocks
    apis: np.ndarray  # uint32[NUM_PERM]
    n_api_ngrams: int


def block_keys(trace: Trace) -> set[str]:
    """The distinct normalised blocks the trace executed."""
    if len(trace.visits) == 0:
        return set()
    ids = distinct_blocks(trace.visits, len(trace.blocks))
    return {block_key(tokens) for tokens in block_token_lists(trace, NORMALISATION, ids).values()}


def api_ngrams(trace: Trace, n: int = API_NGRAM) -> set[str]:
    """n-grams of the API calls' function names (lower case, without the DLL: api-ms-win-* forwarders
    and kernel32 name one function)."""
    names = [c.name.rsplit(".", 1)[-1].lower() for c in trace.api_calls]
    return {"|".join(names[i : i + n]) for i in range(len(names) - n + 1)} if len(names) >= n else set(names)


def signature_of(trace: Trace) -> CodeSignature:
    blocks, apis = block_keys(trace), api_ngrams(trace)
    return CodeSignature(
        minhash([k.encode() for k in sorted(blocks)]),
        len(blocks),
        minhash([k.encode() for k in sorted(apis)]),
        len(apis),
    )
