/* Fiber stacks: one mmap per fiber, a guard below, pooled for reuse.
 *
 *   high  +------------------------------+  <- map + map_size
 *         | (rest of the last page)      |
 *         | interpreter data-stack chunk |  SF_DATA_CHUNK_SIZE: CPython 3.11+ keeps
 *         |  (grows upward)              |  Python frames here; pooling it with the
 *         +------------------------------+  C stack spares an mmap/munmap per fiber
 *         | C stack (grows downward)     |  <- top: where sf_make_context starts
 *         |   `size` usable bytes        |
 *         +------------------------------+  <- base
 *         | SF_STACK_PAGE_OFFSET slack   |
 *         | guard, SF_STACK_GUARD_SIZE   |  a touch here is a stack overflow
 *         | (MADV_GUARD_INSTALL, else    |
 *         |  PROT_NONE)                  |
 *   low   +------------------------------+  <- map
 *
 * top sits in the middle of a page, not on its edge: a suspended fiber's first
 * C frames (just below top) and first Python frames (just above) then share
 * one resident page instead of two.
 *
 * Pages are reserved lazily (MAP_NORESERVE): only what a fiber touches costs
 * memory.  Released stacks go to a bounded pool, so a steady state of spawning
 * and finishing fibers makes no system call (see stack.c for its two levels).  All functions run with the GIL held.
 */
#ifndef STACKFUL_STACK_H
#define STACKFUL_STACK_H

#include <stddef.h>
#include <stdint.h>

#define SF_DATA_CHUNK_SIZE (16 * 1024)
#define SF_STACK_PAGE_OFFSET 2048  /* where base (and so top) sits within its page */
/* The guard below each stack.  A C function's frame is written wherever its
 * stack pointer lands: a frame bigger than the guard near the bottom of a
 * stack would jump it and write into the mapping below.  16 KiB buffers on
 * the stack are common (name resolution, formatting, codecs); 64 KiB leaves
 * room for four times that.  With MADV_GUARD_INSTALL it costs no memory and
 * no extra mapping; with the mprotect fallback, address space only. */
#define SF_STACK_GUARD_SIZE (64 * 1024)
#define SF_STACK_MIN (32 * 1024)
#define SF_STACK_DEFAULT (2 * 1024 * 1024)
#define SF_STACK_MAX ((size_t)1 << 36)

typedef struct sf_stack {
    char *map;             /* the whole mapping, guard included */
    size_t map_size;
    size_t guard_size;
    size_t size;           /* usable C stack bytes */
    struct sf_stack *next_free;  /* link while pooled */
    unsigned valgrind_id;
} sf_stack;

static inline char *sf_stack_base(const sf_stack *s)
{
    return s->map + s->guard_size + SF_STACK_PAGE_OFFSET;
}
static inline char *sf_stack_top(const sf_stack *s) { return sf_stack_base(s) + s->size; }
static inline void *sf_stack_data_chunk(const sf_stack *s) { return sf_stack_top(s); }

/* A stack of `size` usable bytes (a multiple of the page size), from the pool
 * if one fits.  NULL with a Python MemoryError set when the system refuses. */
sf_stack *sf_stack_acquire(size_t size);
/* Give a stack back: into the pool, or unmapped when the pool is full. */
void sf_stack_release(sf_stack *stack);
/* Give back the pages a suspended fiber is not using: the C stack's below the
 * page holding `sp` (its saved stack pointer), and its data-stack chunk's from
 * the page after `data_top` (NULL: the fiber's frames live in later chunks,
 * keep the chunk as it is).  One or two madvise calls; returns the bytes. */
size_t sf_stack_trim(sf_stack *stack, const char *sp, const void *data_top);
/* Never reuse or unmap this stack (something may still point into it). */
void sf_stack_quarantine(sf_stack *stack);
/* Bytes of the C stack touched so far (resident pages, counted from the top). */
size_t sf_stack_touched(const sf_stack *stack);
/* Unmap every pooled stack; returns how many. */
size_t sf_stack_pool_clear(void);
size_t sf_stack_pool_count(void);       /* warm: pages kept */
size_t sf_stack_pool_cold_count(void);  /* cold: pages given back, mapping kept */
void sf_stack_pool_set_limit(size_t max_stacks);
size_t sf_stack_pool_limit(void);
/* "madvise" or "mprotect": how guard pages are made on this kernel. */
const char *sf_stack_guard_method(void);
size_t sf_page_size(void);
/* Round a requested size up to whole pages, and check it. -1 + ValueError. */
int sf_stack_normalize_size(long long requested, size_t *out);
/* Bytes currently mapped for stacks (live and pooled). */
size_t sf_stack_mapped_bytes(void);

#endif
