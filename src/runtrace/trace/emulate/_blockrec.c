/*
 * Native basic-block recorder for unicorn.
 *
 * Why C: unicorn calls a block hook once per executed block.  Through the Python binding every call
 * crosses ctypes, takes the GIL and runs Python code (about 3 us), which caps a Python-hooked tracer at
 * roughly 1.5M instructions/s.  This hook runs in C, appends the block's id to a growing array and
 * counts instructions; it calls back into Python only the first time it sees a block, so Python can
 * read the block's bytes and disassemble it once.  No library offers this for unicorn.
 *
 * The file is a CPython extension only so that setuptools builds it; its functions are used through
 * ctypes (see recorder.py), with the hook's address handed to unicorn's uc_hook_add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*uc_stop_fn)(void *uc);
/* Returns (block_id << 16) | instruction_count for a new block, or -1 to stop emulation. */
typedef int64_t (*new_block_fn)(uint64_t address, uint32_t size);
typedef void (*code_fn)(uint64_t address, uint32_t size);

typedef struct {
    uint64_t *keys_addr;
    uint32_t *keys_size;
    uint32_t *ids;
    uint32_t *ninsn;
    uint8_t *used;
    size_t table_cap;
    size_t table_count;

    uint32_t *visits;
    size_t nvisits;
    size_t visits_cap;

    uint64_t insn_total;
    uint64_t insn_cap; /* 0: no cap */
    uint64_t run_cap;  /* 0: none; else the instruction total at which the current run's budget ends */
    uc_stop_fn stop;
    new_block_fn on_new;
    /* 1: instruction cap reached, 2: callback asked to stop, 3: out of memory, 4: timeout (set from
     * Python), 5: the current run's budget is spent (cleared when the next run starts) */
    int stopped;

    /* A per-instruction hook gated in C: Speakeasy switches its instruction hook on after each API call
     * for one instruction; a Python hook that is merely "disabled" still costs a Python call per
     * instruction, this one costs a branch. */
    code_fn on_code;
    int code_enabled;
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
    r->used = calloc(cap, 1);
    r->table_cap = cap;
    r->table_count = 0;
    return r->keys_addr && r->keys_size && r->ids && r->ninsn && r->used;
}

static void table_free(rec_t *r) {
    free(r->keys_addr);
    free(r->keys_size);
    free(r->ids);
    free(r->ninsn);
    free(r->used);
}

static void table_put(rec_t *r, uint64_t addr, uint32_t size, uint32_t id, uint32_t n) {
    size_t i = slot_of(addr, size, r->table_cap);
    while (r->used[i]) i = (i + 1) & (r->table_cap - 1);
    r->used[i] = 1;
    r->keys_addr[i] = addr;
    r->keys_size[i] = size;
    r->ids[i] = id;
    r->ninsn[i] = n;
    r->table_count++;
}

static int table_grow(rec_t *r) {
    rec_t old = *r;
    if (!table_init(r, old.table_cap * 2)) {
        table_free(r);
        *r = old;
        return 0;
    }
    for (size_t i = 0; i < old.table_cap; i++)
        if (old.used[i]) table_put(r, old.keys_addr[i], old.keys_size[i], old.ids[i], old.ninsn[i]);
    table_free(&old);
    return 1;
}

rec_t *rec_new(uint64_t insn_cap, void *stop, void *on_new) {
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
    r->stop = (uc_stop_fn)stop;
    r->on_new = (new_block_fn)on_new;
    return r;
}

void rec_free(rec_t *r) {
    if (!r) return;
    table_free(r);
    free(r->visits);
    free(r);
}

static void halt(rec_t *r, void *uc, int why) {
    if (!r->stopped) r->stopped = why;
    r->stop(uc);
}

/* The unicorn UC_HOOK_BLOCK callback. */
void rec_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    rec_t *r = (rec_t *)user_data;
    if (r->stopped) {
        halt(r, uc, r->stopped);
        return;
    }
    /* unicorn reports a block of size 0 when fetching its first instruction fails (Speakeasy's API
     * calls are fetches from unmapped import addresses): nothing was executed. */
    if (size == 0) return;
    size_t i = slot_of(address, size, r->table_cap);
    uint32_t id, n;
    for (;;) {
        if (!r->used[i]) {
            int64_t packed = r->on_new(address, size);
            if (packed < 0) {
                halt(r, uc, 2);
                return;
            }
            id = (uint32_t)(packed >> 16);
            n = (uint32_t)(packed & 0xFFFF);
            if ((r->table_count + 1) * 2 > r->table_cap && !table_grow(r)) {
                halt(r, uc, 3);
                return;
            }
            table_put(r, address, size, id, n);
            break;
        }
        if (r->keys_addr[i] == address && r->keys_size[i] == size) {
            id = r->ids[i];
            n = r->ninsn[i];
            break;
        }
        i = (i + 1) & (r->table_cap - 1);
    }
    if (r->nvisits == r->visits_cap) {
        uint32_t *grown = realloc(r->visits, r->visits_cap * 2 * sizeof(uint32_t));
        if (!grown) {
            halt(r, uc, 3);
            return;
        }
        r->visits = grown;
        r->visits_cap *= 2;
    }
    r->visits[r->nvisits++] = id;
    r->insn_total += n;
    if (r->insn_cap && r->insn_total >= r->insn_cap) halt(r, uc, 1);
    if (r->run_cap && r->insn_total >= r->run_cap) halt(r, uc, 5);
}

void rec_code_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    rec_t *r = (rec_t *)user_data;
    (void)uc;
    if (r->code_enabled && r->on_code) r->on_code(address, size);
}

void rec_set_code_hook(rec_t *r, void *on_code, int enabled) {
    if (on_code) r->on_code = (code_fn)on_code;
    r->code_enabled = enabled;
}

size_t rec_nvisits(rec_t *r) { return r->nvisits; }
uint32_t *rec_visits(rec_t *r) { return r->visits; }
uint64_t rec_insn_total(rec_t *r) { return r->insn_total; }
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
