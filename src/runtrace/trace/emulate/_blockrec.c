/*
 * Native basic-block recorder for unicorn.
 *
 * Why C: unicorn calls a block hook once per executed block.  Through the Python binding every call
 * crosses ctypes, takes the GIL and runs Python code (about 3 us), which caps a Python-hooked tracer at
 * roughly 1.5M instructions/s.  This hook runs in C, appends the block's id to a growing array and
 * counts instructions; it calls back into Python only the first time it sees a block, so Python can
 * read the block's bytes and disassemble it once.  No library offers this for unicorn.
 *
 * What is recorded is what ran, instruction for instruction.  A block hook alone is not enough in
 * unicorn 1:
 * (1) a translation block gets no block hook when the block translated just before it was cut at the
 *     size limit (its `block_full` flag): long straight runs go unseen, and so, before the emulator
 *     filled Speakeasy's API trampolines with `ret`, did the block at every API call's return address;
 * (2) a block hook reports the whole block before it runs, but a fault, an API reached through a
 *     pointer or a run that ends can leave it part way;
 * (3) code rewritten in place (unpackers, generated trampolines) comes back at the same address and
 *     size with other bytes.
 * So a code hook (called before every instruction, and needed anyway for Speakeasy) follows each
 * recorded block: an instruction outside every reported block is recorded as a block of its own
 * (`canonicalize` merges such pieces), and a block left part way has its visit replaced by one of the
 * part that ran.  Blocks in memory that can change are checked against a hash of their bytes at every
 * visit, and recorded anew when they changed.
 *
 * That check reads the block's bytes straight from host memory: every mapping of the engine is backed
 * by memory the tracer allocated (hostmem.py), and Python tells the recorder where each guest range
 * lives (rec_region_add / rec_region_remove).  Reading through uc_mem_read instead went through QEMU's
 * address-space dispatch at every visit, about 70 ns, a quarter of the time of a packed program whose
 * code all lies in writable memory.  A block's host address is kept with it and looked up again after
 * any change of the mappings; a block outside every known range is read with uc_mem_read as before.
 *
 * The file is a CPython extension only so that setuptools builds it; its functions are used through
 * ctypes (see recorder.py), with the hooks' addresses handed to unicorn's uc_hook_add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*uc_stop_fn)(void *uc);
typedef int (*uc_read_fn)(void *uc, uint64_t address, void *bytes, size_t size);
/* Python's answer for a block it has not seen (as these bytes): (block_id << 16) | instruction_count,
 * plus VOLATILE when the memory may be rewritten; -1 to stop emulation; -2 for code that is not the
 * program's (the emulator's own trampolines), never recorded. */
typedef int64_t (*new_block_fn)(uint64_t address, uint32_t size);
/* Python's answer for the first `size` bytes of a recorded block, as they ran (the memory may have
 * been rewritten since): (block_id << 16) | instruction_count, or -1 to stop emulation. */
typedef int64_t (*prefix_fn)(uint32_t block_id, uint32_t size);
/* Speakeasy's per-instruction hook; returns non-zero when it moved the program counter elsewhere (an
 * exception dispatched, a run ended), so the instruction it was called for does not run. */
typedef int (*code_fn)(uint64_t address, uint32_t size);

#define VOLATILE ((int64_t)1 << 48)
#define IGNORED_ID 0xFFFFFFFFu
#define MAX_INSN 15 /* bytes in an x86 instruction; unicorn passes 0xf1f1f1f1 for an undecodable one */

typedef struct {
    uint64_t *keys_addr;
    uint32_t *keys_size;
    uint32_t *ids;
    uint32_t *ninsn;
    uint64_t *hashes; /* of the bytes, for volatile blocks */
    const uint8_t **hosts; /* where a volatile block's bytes are in host memory (NULL: not known) */
    uint64_t *host_gens;   /* the mapping generation `hosts` was looked up in (0: never) */
    uint8_t *used;    /* 0: free slot, 1: stable block, 2: volatile block */
    size_t table_cap;
    size_t table_count;

    uint32_t *visits;
    size_t nvisits;
    size_t visits_cap;

    uint64_t insn_total;
    uint64_t insn_cap; /* 0: no cap */
    uint64_t run_cap;  /* 0: none; else the instruction total at which the current run's budget ends */
    void *uc;
    uc_stop_fn stop;
    uc_read_fn read;
    new_block_fn on_new;
    prefix_fn on_prefix;
    /* 1: instruction cap reached, 2: callback asked to stop, 3: out of memory, 4: timeout (set from
     * Python), 5: the current run's budget is spent (cleared when the next run starts) */
    int stopped;

    /* A per-instruction hook gated in C: Speakeasy switches its instruction hook on after each API call
     * for one instruction; a Python hook that is merely "disabled" still costs a Python call per
     * instruction, this one costs a branch. */
    code_fn on_code;
    int code_enabled;

    /* The block being executed: where it starts, where its next instruction is expected and where
     * it ends; whether its visit is the last one recorded (0: ignored code, or none), and that visit's
     * instruction count. */
    uint64_t block_start;
    uint64_t next_pc;
    uint64_t block_end;
    int block_recorded;
    uint32_t block_ninsn;
    uint64_t orphans;   /* instructions of blocks unicorn did not report, recorded one by one */
    uint64_t truncated; /* visits of blocks left part way, replaced by the part that ran */
    uint64_t rewritten; /* visits of volatile blocks whose bytes had changed */

    uint8_t *scratch; /* bytes of a volatile block being checked */
    size_t scratch_cap;

    /* Guest ranges [start, end) and the host memory behind them (hostmem.py); `map_gen` changes with
     * every change, so cached host addresses are looked up again. */
    uint64_t *region_start;
    uint64_t *region_end;
    uint8_t **region_host;
    size_t nregions;
    size_t regions_cap;
    size_t region_hint;
    uint64_t map_gen;
} rec_t;

static size_t slot_of(uint64_t addr, uint32_t size, size_t cap) {
    uint64_t h = (addr ^ ((uint64_t)size << 47)) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 20) & (cap - 1);
}

static int table_init(rec_t *r, size_t cap) {
    r->keys_addr = calloc(cap, sizeof(uint64_t));
    r->keys_size = calloc(cap, sizeof(uint32_t));
    r->ids = calloc(cap, sizeof(uint32_t));
    r->ninsn = calloc(cap, sizeof(uint32_t));
    r->hashes = calloc(cap, sizeof(uint64_t));
    r->hosts = calloc(cap, sizeof(uint8_t *));
    r->host_gens = calloc(cap, sizeof(uint64_t));
    r->used = calloc(cap, 1);
    r->table_cap = cap;
    r->table_count = 0;
    return r->keys_addr && r->keys_size && r->ids && r->ninsn && r->hashes && r->hosts && r->host_gens &&
           r->used;
}

static void table_free(rec_t *r) {
    free(r->keys_addr);
    free(r->keys_size);
    free(r->ids);
    free(r->ninsn);
    free(r->hashes);
    free(r->hosts);
    free(r->host_gens);
    free(r->used);
}

static size_t table_put(rec_t *r, uint64_t addr, uint32_t size, uint8_t kind) {
    size_t i = slot_of(addr, size, r->table_cap);
    while (r->used[i]) i = (i + 1) & (r->table_cap - 1);
    r->used[i] = kind;
    r->keys_addr[i] = addr;
    r->keys_size[i] = size;
    r->table_count++;
    return i;
}

static int table_grow(rec_t *r) {
    rec_t old = *r;
    if (!table_init(r, old.table_cap * 2)) {
        table_free(r);
        *r = old;
        return 0;
    }
    for (size_t i = 0; i < old.table_cap; i++) {
        if (!old.used[i]) continue;
        size_t j = table_put(r, old.keys_addr[i], old.keys_size[i], old.used[i]);
        r->ids[j] = old.ids[i];
        r->ninsn[j] = old.ninsn[i];
        r->hashes[j] = old.hashes[i];
        r->hosts[j] = old.hosts[i];
        r->host_gens[j] = old.host_gens[i];
    }
    table_free(&old);
    return 1;
}

rec_t *rec_new(uint64_t insn_cap, void *uc, void *stop, void *read, void *on_new, void *on_prefix) {
    rec_t *r = calloc(1, sizeof(rec_t));
    if (!r) return NULL;
    if (!table_init(r, 1024)) {
        table_free(r);
        free(r);
        return NULL;
    }
    r->visits_cap = 1 << 16;
    r->visits = malloc(r->visits_cap * sizeof(uint32_t));
    if (!r->visits) {
        table_free(r);
        free(r);
        return NULL;
    }
    r->insn_cap = insn_cap;
    r->map_gen = 1;
    r->uc = uc;
    r->stop = (uc_stop_fn)stop;
    r->read = (uc_read_fn)read;
    r->on_new = (new_block_fn)on_new;
    r->on_prefix = (prefix_fn)on_prefix;
    return r;
}

void rec_free(rec_t *r) {
    if (!r) return;
    table_free(r);
    free(r->visits);
    free(r->scratch);
    free(r->region_start);
    free(r->region_end);
    free(r->region_host);
    free(r);
}

static void halt(rec_t *r, int why) {
    if (!r->stopped) r->stopped = why;
    r->stop(r->uc);
}

/* Guest memory [start, start + size) is now host memory at `host`; Python calls it for every mapping. */
int rec_region_add(rec_t *r, uint64_t start, uint64_t size, void *host) {
    if (r->nregions == r->regions_cap) {
        size_t cap = r->regions_cap ? r->regions_cap * 2 : 64;
        uint64_t *s = realloc(r->region_start, cap * sizeof(uint64_t));
        if (!s) return 0;
        r->region_start = s;
        uint64_t *e = realloc(r->region_end, cap * sizeof(uint64_t));
        if (!e) return 0;
        r->region_end = e;
        uint8_t **h = realloc(r->region_host, cap * sizeof(uint8_t *));
        if (!h) return 0;
        r->region_host = h;
        r->regions_cap = cap;
    }
    r->region_start[r->nregions] = start;
    r->region_end[r->nregions] = start + size;
    r->region_host[r->nregions] = (uint8_t *)host;
    r->nregions++;
    r->map_gen++;
    return 1;
}

/* Guest memory [start, start + size) is unmapped: known ranges lose that part (a range cut in the
 * middle becomes two).  Returns 0 when out of memory: the recorder then knows no ranges at all and
 * reads every block through unicorn. */
int rec_region_remove(rec_t *r, uint64_t start, uint64_t size) {
    uint64_t end = start + size;
    r->map_gen++;
    for (size_t i = 0; i < r->nregions;) {
        uint64_t lo = r->region_start[i], hi = r->region_end[i];
        if (hi <= start || lo >= end) {
            i++;
            continue;
        }
        if (lo < start && hi > end) { /* the middle goes: the right part becomes a range of its own */
            if (!rec_region_add(r, end, hi - end, r->region_host[i] + (end - lo))) {
                r->nregions = 0;
                return 0;
            }
            r->region_end[i] = start;
            i++;
        } else if (lo < start) {
            r->region_end[i] = start;
            i++;
        } else if (hi > end) {
            r->region_host[i] += end - lo;
            r->region_start[i] = end;
            i++;
        } else { /* all of it goes */
            r->nregions--;
            r->region_start[i] = r->region_start[r->nregions];
            r->region_end[i] = r->region_end[r->nregions];
            r->region_host[i] = r->region_host[r->nregions];
        }
    }
    return 1;
}

/* Where the bytes of guest [address, address + size) are in host memory; NULL when no single known
 * range holds them all. */
static const uint8_t *host_lookup(rec_t *r, uint64_t address, uint32_t size) {
    size_t n = r->nregions, i = r->region_hint;
    for (size_t k = 0; k < n; k++, i++) {
        if (i >= n) i = 0;
        if (r->region_start[i] <= address && address + size <= r->region_end[i]) {
            r->region_hint = i;
            return r->region_host[i] + (address - r->region_start[i]);
        }
    }
    return NULL;
}

static uint64_t fnv(const uint8_t *bytes, uint32_t size) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint32_t k = 0; k < size; k++) h = (h ^ bytes[k]) * 0x100000001b3ULL;
    return h | 1;
}

/* FNV-1a over the bytes of the block in slot i as they are in memory now; 0 when they cannot be
 * read.  From host memory where the block's range is known, else through uc_mem_read. */
static uint64_t hash_of(rec_t *r, size_t i, uint64_t address, uint32_t size) {
    if (r->host_gens[i] != r->map_gen) {
        r->hosts[i] = host_lookup(r, address, size);
        r->host_gens[i] = r->map_gen;
    }
    if (r->hosts[i]) return fnv(r->hosts[i], size);
    if (size > r->scratch_cap) {
        uint8_t *grown = realloc(r->scratch, size);
        if (!grown) return 0;
        r->scratch = grown;
        r->scratch_cap = size;
    }
    if (r->read(r->uc, address, r->scratch, size) != 0) return 0;
    return fnv(r->scratch, size);
}

/* Asks Python about the block as it is in memory now and stores the answer in slot i.  Returns 0, or
 * -1 when the emulation was stopped instead. */
static int ask(rec_t *r, size_t i, uint64_t address, uint32_t size) {
    int64_t packed = r->on_new(address, size);
    if (packed == -1) {
        halt(r, 2);
        return -1;
    }
    int ignored = packed < 0;
    r->ids[i] = ignored ? IGNORED_ID : (uint32_t)((packed & (VOLATILE - 1)) >> 16);
    r->ninsn[i] = ignored ? 0 : (uint32_t)(packed & 0xFFFF);
    r->used[i] = (!ignored && (packed & VOLATILE)) ? 2 : 1;
    r->hashes[i] = r->used[i] == 2 ? hash_of(r, i, address, size) : 0;
    return 0;
}

/* Looks the block (address, size) up, asking Python the first time and whenever a volatile block's
 * bytes changed.  Returns 1 with its id and instruction count, 0 for ignored code, -1 when the
 * emulation was stopped instead. */
static int lookup(rec_t *r, uint64_t address, uint32_t size, uint32_t *id, uint32_t *n) {
    size_t i = slot_of(address, size, r->table_cap);
    for (;;) {
        if (!r->used[i]) {
            if ((r->table_count + 1) * 2 > r->table_cap) {
                if (!table_grow(r)) {
                    halt(r, 3);
                    return -1;
                }
                i = slot_of(address, size, r->table_cap);
                continue;
            }
            i = table_put(r, address, size, 1);
            if (ask(r, i, address, size) < 0) return -1;
            break;
        }
        if (r->keys_addr[i] == address && r->keys_size[i] == size) {
            if (r->used[i] == 2 && hash_of(r, i, address, size) != r->hashes[i]) {
                r->rewritten++;
                if (ask(r, i, address, size) < 0) return -1;
            }
            break;
        }
        i = (i + 1) & (r->table_cap - 1);
    }
    *id = r->ids[i];
    *n = r->ninsn[i];
    return *id != IGNORED_ID;
}

static int append_visit(rec_t *r, uint32_t id, uint32_t n) {
    if (r->nvisits == r->visits_cap) {
        uint32_t *grown = realloc(r->visits, r->visits_cap * 2 * sizeof(uint32_t));
        if (!grown) {
            halt(r, 3);
            return 0;
        }
        r->visits = grown;
        r->visits_cap *= 2;
    }
    r->visits[r->nvisits++] = id;
    r->insn_total += n;
    return 1;
}

/* Makes (address, size) the block being executed, recording a visit unless it is ignored code.  The
 * caps are checked before: the block that reaches a cap runs whole, the next one is not started. */
static void enter_block(rec_t *r, uint64_t address, uint32_t size) {
    uint32_t id, n;
    r->block_start = r->next_pc = address;
    r->block_end = address;
    r->block_recorded = 0;
    int found = lookup(r, address, size, &id, &n);
    if (found < 0) return;
    if (found) {
        if (r->insn_cap && r->insn_total >= r->insn_cap) {
            halt(r, 1);
            return;
        }
        if (r->run_cap && r->insn_total >= r->run_cap) {
            halt(r, 5);
            return;
        }
        if (!append_visit(r, id, n)) return;
    }
    r->block_end = address + size;
    r->block_recorded = found;
    r->block_ninsn = n;
}

/* The block being executed is over: if it was left part way, its visit becomes one of the part that
 * ran (or goes, when none of it did). */
static void leave_block(rec_t *r) {
    if (r->block_recorded && r->next_pc != r->block_end) {
        uint32_t whole = r->visits[--r->nvisits];
        r->insn_total -= r->block_ninsn;
        r->truncated++;
        if (r->next_pc > r->block_start) {
            int64_t packed = r->on_prefix(whole, (uint32_t)(r->next_pc - r->block_start));
            if (packed < 0)
                halt(r, 2);
            else
                append_visit(r, (uint32_t)(packed >> 16), (uint32_t)(packed & 0xFFFF));
        }
    }
    r->block_recorded = 0;
    r->block_start = r->next_pc = r->block_end = 0;
}

/* The unicorn UC_HOOK_BLOCK callback. */
void rec_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    rec_t *r = (rec_t *)user_data;
    (void)uc;
    leave_block(r);
    if (r->stopped) {
        halt(r, r->stopped);
        return;
    }
    /* unicorn reports size 0 for a block it cut at the size limit (its size is unknown then) and for
     * a block whose first fetch failed (Speakeasy's API calls are fetches from unmapped addresses);
     * the code hook records whatever of it runs. */
    if (size) enter_block(r, address, size);
}

/* The unicorn UC_HOOK_CODE callback, called before every instruction. */
void rec_code_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    rec_t *r = (rec_t *)user_data;
    (void)uc;
    if (r->code_enabled && r->on_code && r->on_code(address, size)) return; /* it will not run */
    if (size == 0 || size > MAX_INSN) return;                              /* nor will this */
    if (address == r->next_pc && address < r->block_end) {
        r->next_pc = address + size;
        return;
    }
    /* An instruction of a block unicorn did not report: recorded as a block of its own. */
    leave_block(r);
    if (r->stopped) {
        halt(r, r->stopped);
        return;
    }
    r->orphans++;
    enter_block(r, address, size);
    if (r->block_end > address) r->next_pc = address + size;
}

/* Ends the recording: the last block may have been left part way. */
void rec_finish(rec_t *r) { leave_block(r); }

void rec_set_code_hook(rec_t *r, void *on_code, int enabled) {
    if (on_code) r->on_code = (code_fn)on_code;
    r->code_enabled = enabled;
}

size_t rec_nvisits(rec_t *r) { return r->nvisits; }
const size_t *rec_nvisits_at(rec_t *r) { return &r->nvisits; }
uint32_t *rec_visits(rec_t *r) { return r->visits; }
uint64_t rec_insn_total(rec_t *r) { return r->insn_total; }
/* Where the counts live: Python reads them there, without a call, at every API call. */
const uint64_t *rec_insn_total_at(rec_t *r) { return &r->insn_total; }
uint64_t rec_orphans(rec_t *r) { return r->orphans; }
uint64_t rec_truncated(rec_t *r) { return r->truncated; }
uint64_t rec_rewritten(rec_t *r) { return r->rewritten; }
int rec_stopped(rec_t *r) { return r->stopped; }
void rec_set_stopped(rec_t *r, int why) {
    if (!r->stopped) r->stopped = why;
}
/* A budget for the run that starts now (0: none); a stop for the previous run's budget is lifted. */
void rec_set_run_cap(rec_t *r, uint64_t cap) {
    r->run_cap = cap;
    if (r->stopped == 5) r->stopped = 0;
}

static struct PyModuleDef blockrec_module = {
    PyModuleDef_HEAD_INIT, "_blockrec", "Native unicorn block recorder (used through ctypes).", -1, NULL,
};

PyMODINIT_FUNC PyInit__blockrec(void) { return PyModule_Create(&blockrec_module); }
