/* Fiber stacks: mapping, guard pages, the pool.  See stack.h for the layout. */
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stack.h"

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#    define SF_HAVE_VALGRIND 1
#  endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#  include <sanitizer/asan_interface.h>
/* A fiber that ended never returned from its instrumented frames, so their
 * redzones stay poisoned in ASan's shadow; clear them before the stack is
 * reused, or uninstrumented code writing there later looks like an overflow. */
#  define UNPOISON_STACK(s) \
    ASAN_UNPOISON_MEMORY_REGION(sf_stack_base(s), (s)->size + SF_DATA_CHUNK_SIZE)
#else
#  define UNPOISON_STACK(s) ((void)0)
#endif

/* Linux 6.13+: guard pages inside one mapping, so a stack costs one VMA,
 * not two (an mprotect'ed guard splits the mapping, and vm.max_map_count
 * then caps us near 32k stacks). */
#ifndef MADV_GUARD_INSTALL
#  define MADV_GUARD_INSTALL 102
#endif

static size_t page_size;
static int guard_method;  /* 0: untested, 1: madvise, 2: mprotect */

/* Finished fibers' stacks, for reuse.  The warm list keeps their pages (reuse
 * costs nothing: no system call, no page fault); past its limit, stacks go to
 * the cold list with their pages given back to the system (one madvise now,
 * a fault or two on reuse: ~4x cheaper than unmapping and mapping again);
 * past that, they are unmapped. */
typedef struct {
    sf_stack *head;
    size_t count;
    size_t limit;
} stack_list;

static stack_list warm = {NULL, 0, 1024};
static stack_list cold = {NULL, 0, 16384};
static size_t mapped_bytes;

size_t sf_page_size(void)
{
    if (!page_size) {
        long ps = sysconf(_SC_PAGESIZE);
        page_size = ps > 0 ? (size_t)ps : 4096;
    }
    return page_size;
}

const char *sf_stack_guard_method(void)
{
    return guard_method == 1 ? "madvise" : guard_method == 2 ? "mprotect" : "untested";
}

int sf_stack_normalize_size(long long requested, size_t *out)
{
    if (requested < (long long)SF_STACK_MIN) {
        PyErr_Format(PyExc_ValueError,
                     "stack_size must be at least %d bytes (%d KiB), got %lld",
                     SF_STACK_MIN, SF_STACK_MIN / 1024, requested);
        return -1;
    }
    if ((unsigned long long)requested > SF_STACK_MAX) {
        PyErr_Format(PyExc_ValueError, "stack_size must be at most %zu bytes, got %lld",
                     (size_t)SF_STACK_MAX, requested);
        return -1;
    }
    size_t ps = sf_page_size();
    *out = ((size_t)requested + ps - 1) & ~(ps - 1);
    return 0;
}

static long read_max_map_count(void)
{
    long value = -1;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &value) != 1)
            value = -1;
        fclose(f);
    }
    return value;
}

static void set_mapping_error(const char *what, size_t bytes, int err)
{
    long max_maps = read_max_map_count();
    PyErr_Format(PyExc_MemoryError,
                 "stackful: cannot %s a fiber stack of %zu KiB: %s; %zu KiB of fiber "
                 "stacks are mapped now. The limit may be memory, RLIMIT_AS, or "
                 "vm.max_map_count (%ld mappings; each stack takes %s)",
                 what, bytes / 1024, strerror(err), mapped_bytes / 1024, max_maps,
                 guard_method == 2 ? "two" : "one");
}

/* Does the guard that madvise accepted stop an access?  qemu-user (7.x) answers
 * 0 to any advice it does not know, MADV_GUARD_INSTALL included, and installs
 * nothing: an overflow would then run on into whatever lies below the stack.
 * The kernel reads the guard for write() and fails with EFAULT only if it is
 * real.  Asked once, with the first stack. */
static int guard_stops_access(const char *guard)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        return 1;  /* cannot tell: trust the answer madvise gave */
    ssize_t n = write(fds[1], guard, 1);
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return n < 0 && err == EFAULT;
}

static int install_guard(char *map, size_t guard_size)
{
    if (guard_method == 0 && getenv("STACKFUL_GUARD_MPROTECT"))
        guard_method = 2;  /* testing the fallback on a kernel that has guard regions */
    if (guard_method != 2) {
        if (madvise(map, guard_size, MADV_GUARD_INSTALL) == 0) {
            if (guard_method == 1 || guard_stops_access(map)) {
                guard_method = 1;
                return 0;
            }
            guard_method = 2;  /* accepted but not installed: protect the pages instead */
            return mprotect(map, guard_size, PROT_NONE);
        }
        if (guard_method == 1 || (errno != EINVAL && errno != ENOSYS))
            return -1;
        guard_method = 2;  /* this kernel predates guard regions */
    }
    return mprotect(map, guard_size, PROT_NONE);
}

static sf_stack *list_take(stack_list *list, size_t size)
{
    for (sf_stack **link = &list->head; *link; link = &(*link)->next_free) {
        sf_stack *s = *link;
        if (s->size == size) {
            *link = s->next_free;
            s->next_free = NULL;
            list->count--;
            return s;
        }
    }
    return NULL;
}

static void list_push(stack_list *list, sf_stack *s)
{
    s->next_free = list->head;
    list->head = s;
    list->count++;
}

static sf_stack *list_pop(stack_list *list)
{
    sf_stack *s = list->head;
    if (s) {
        list->head = s->next_free;
        s->next_free = NULL;
        list->count--;
    }
    return s;
}

static void unmap_stack(sf_stack *s)
{
#ifdef SF_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(s->valgrind_id);
#endif
    munmap(s->map, s->map_size);
    mapped_bytes -= s->map_size;
    PyMem_RawFree(s);
}

sf_stack *sf_stack_acquire(size_t size)
{
    sf_stack *s = list_take(&warm, size);
    if (!s)
        s = list_take(&cold, size);
    if (s)
        return s;

    s = PyMem_RawCalloc(1, sizeof(*s));
    if (!s) {
        PyErr_NoMemory();
        return NULL;
    }
    s->guard_size = SF_STACK_GUARD_SIZE;
    s->size = size;
    /* size and the chunk are whole pages; the page offset of base costs one more */
    s->map_size = s->guard_size + size + SF_DATA_CHUNK_SIZE + sf_page_size();
    void *map = mmap(NULL, s->map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        set_mapping_error("map", s->map_size, errno);
        PyMem_RawFree(s);
        return NULL;
    }
    s->map = map;
    if (install_guard(s->map, s->guard_size) != 0) {
        int err = errno;
        munmap(map, s->map_size);
        set_mapping_error("guard", s->map_size, err);
        PyMem_RawFree(s);
        return NULL;
    }
    mapped_bytes += s->map_size;
#ifdef SF_HAVE_VALGRIND
    s->valgrind_id = VALGRIND_STACK_REGISTER(sf_stack_base(s), sf_stack_top(s));
#endif
    return s;
}

/* Give the pages of a stack (not its guard) back to the system, keeping the
 * mapping; false if the system refused. */
static int release_pages(sf_stack *s)
{
    size_t ps = sf_page_size();
    char *first_page = (char *)((uintptr_t)sf_stack_base(s) & ~(uintptr_t)(ps - 1));
    return madvise(first_page, (size_t)(s->map + s->map_size - first_page), MADV_DONTNEED) == 0;
}

/* Put a stack that leaves the warm list where the limits say. */
static void cool(sf_stack *s)
{
    if (cold.count < cold.limit && release_pages(s))
        list_push(&cold, s);
    else
        unmap_stack(s);
}

void sf_stack_release(sf_stack *s)
{
    UNPOISON_STACK(s);
    if (warm.count < warm.limit)
        list_push(&warm, s);
    else
        cool(s);
}

static size_t discard_pages(char *from, char *to)
{
    size_t ps = sf_page_size();
    char *lo = (char *)(((uintptr_t)from + ps - 1) & ~(uintptr_t)(ps - 1));
    char *hi = (char *)((uintptr_t)to & ~(uintptr_t)(ps - 1));
    if (hi <= lo || madvise(lo, (size_t)(hi - lo), MADV_DONTNEED) != 0)
        return 0;
    return (size_t)(hi - lo);
}

size_t sf_stack_trim(sf_stack *s, const char *sp, const void *data_top)
{
    char *base = sf_stack_base(s), *top = sf_stack_top(s);
    if (sp <= base || sp > top)
        return 0;
    size_t ps = sf_page_size();
    char *sp_page = (char *)((uintptr_t)sp & ~(uintptr_t)(ps - 1));  /* kept */
    size_t n = discard_pages((char *)((uintptr_t)base & ~(uintptr_t)(ps - 1)), sp_page);
    char *chunk = sf_stack_data_chunk(s), *chunk_end = chunk + SF_DATA_CHUNK_SIZE;
    const char *dt = data_top;
    if (dt && dt >= chunk && dt < chunk_end)
        n += discard_pages((char *)dt, chunk_end);  /* from the page after the last frame */
    return n;
}

void sf_stack_quarantine(sf_stack *s)
{
    /* Its pages stay as they are; the mapping stays counted in mapped_bytes. */
    (void)s;
}

size_t sf_stack_pool_clear(void)
{
    size_t n = 0;
    sf_stack *s;
    while ((s = list_pop(&warm)) || (s = list_pop(&cold))) {
        unmap_stack(s);
        n++;
    }
    return n;
}

size_t sf_stack_pool_count(void) { return warm.count; }
size_t sf_stack_pool_cold_count(void) { return cold.count; }
size_t sf_stack_pool_limit(void) { return warm.limit; }
size_t sf_stack_mapped_bytes(void) { return mapped_bytes; }

void sf_stack_pool_set_limit(size_t max_stacks)
{
    warm.limit = max_stacks;
    while (warm.count > warm.limit)
        cool(list_pop(&warm));
}

size_t sf_stack_touched(const sf_stack *s)
{
    size_t ps = sf_page_size();
    char *base = sf_stack_base(s), *top = sf_stack_top(s);
    char *first_page = (char *)((uintptr_t)base & ~(uintptr_t)(ps - 1));
    size_t pages = (size_t)(top - first_page + (ptrdiff_t)ps - 1) / ps;
    unsigned char vec[256];
    /* Walk up from the bottom in windows of 256 pages; the first resident page
     * found bounds the depth the stack has reached. */
    for (size_t first = 0; first < pages; first += sizeof vec) {
        size_t n = pages - first < sizeof vec ? pages - first : sizeof vec;
        if (mincore(first_page + first * ps, n * ps, vec) != 0)
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (vec[i] & 1) {
                char *lowest = first_page + (first + i) * ps;
                return (size_t)(top - (lowest > base ? lowest : base));
            }
        }
    }
    return 0;
}
