"""A trace's executed code as two MinHash signatures: its set of distinct normalised blocks, and the set
of its API-call n-grams.

Blocks are identified by their normalised content (`represent.encode.block_key` over operand-kind
tokens), so the same code at another address or with other constants is the same block; a program
rebuilt or relocated keeps most of its blocks, where a packer or a recompilation changes every byte a
static hash (ssdeep, TLSH, imphash) reads.

The index is built with datasketch's `MinHash`.  A query (one trace, in `scan`, `serve` or `runtrace
similar`) is signed by `query_minhash` instead: the same two lines of arithmetic datasketch's
`update_batch` does, with the permutations the index stores.  Why not datasketch there too: importing
`datasketch` imports its LSH module and with it scipy.integrate, 0.3-0.4 s on this machine, a third of
a one-file scan (`docs/scan.md`, Latency); a test checks that both give the same signature bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from runtrace.represent.encode import block_key, block_token_lists, distinct_blocks
from runtrace.represent.normalise import Normalisation
from runtrace.trace.model import Trace

NUM_PERM = 128
SEED = 1
API_NGRAM = 3
NORMALISATION = Normalisation.OPERAND_KINDS
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)  # datasketch's modulus and hash range
_MAX_HASH = np.uint64((1 << 32) - 1)
_PERMUTATIONS = None


def permutations() -> np.ndarray:
    """uint64 (2 x NUM_PERM): datasketch's permutation parameters (a, b) for NUM_PERM and SEED; made
    once per process, since making them is most of the cost of a signature."""
    global _PERMUTATIONS
    if _PERMUTATIONS is None:
        from datasketch import MinHash  # imported when an index is built, never on the scan path

        _PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=SEED).permutations
    return _PERMUTATIONS


def minhash(items: list[bytes]) -> np.ndarray:
    """The MinHash signature (NUM_PERM 32-bit values, as datasketch computes them) of a set of items."""
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=permutations())
    if items:
        m.update_batch(items)
    return m.hashvalues.astype(np.uint32)  # datasketch keeps values below 2**32 in uint64s


def query_minhash(items: list[bytes], perms: np.ndarray) -> np.ndarray:
    """`minhash(items)` without importing datasketch, with the index's permutations `perms`: each item's
    32-bit SHA-1 hash (datasketch's `sha1_hash32`) mapped by (h * a + b) mod 2**61-1, cut to 32 bits,
    minimum per permutation."""
    if not items:
        return np.full(perms.shape[1], _MAX_HASH, dtype=np.uint64).astype(np.uint32)
    hv = np.array([int.from_bytes(hashlib.sha1(x).digest()[:4], "little") for x in items], dtype=np.uint64)
    a, b = perms
    with np.errstate(over="ignore"):  # uint64 products wrap, exactly as in datasketch
        phv = (hv[:, None] * a + b) % _MERSENNE_PRIME
    return np.bitwise_and(phv, _MAX_HASH).min(axis=0).astype(np.uint32)


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


def signature_of(trace: Trace, perms: np.ndarray | None = None) -> CodeSignature:
    """The trace's signatures: by datasketch (building an index), or with an index's permutations
    `perms` by `query_minhash` (asking one)."""
    blocks, apis = block_keys(trace), api_ngrams(trace)

    def sign(keys: set[str]) -> np.ndarray:
        items = [k.encode() for k in sorted(keys)]
        return minhash(items) if perms is None else query_minhash(items, perms)

    return CodeSignature(sign(blocks), len(blocks), sign(apis), len(apis))
