/* The stack overflow report: a fault in a fiber's guard region stops the
 * process with a line naming the fiber, never a bare "Segmentation fault".
 *
 * The handler runs on an alternate signal stack, since the fiber's own is
 * exhausted.  A signal stack belongs to an OS thread, not to an interpreter
 * or a thread state: each OS thread that uses fibers gets one (unless it has
 * one already, e.g. faulthandler's), and a thread-exit destructor takes it
 * down and frees it on that same thread, so a signal never lands on freed
 * memory (subinterpreters come and go on a thread that stays).
 *
 * Another handler installed after ours (faulthandler.enable() after import)
 * runs first and re-raises the signal to us with raise(): then there is no
 * fault address to read, and the report is made if the running fiber has
 * touched the lowest page of its stack.
 */
#define _GNU_SOURCE
#include "fiber_internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

/* Room for the handler itself (write, mincore, abort), beyond the frame the
 * kernel pushes. */
#define ALTSTACK_HANDLER_ROOM (64 * 1024)

static struct sigaction previous_segv, previous_bus;
static pthread_key_t altstack_key;
static _Thread_local char *thread_altstack;

/* The kernel's signal frame depends on the CPU: on AArch64 it carries the
 * SVE vectors and SME's ZA array when they are live (AT_MINSIGSTKSZ, tens of
 * KiB for a large ZA), where x86-64's frame is about 3 KiB.  Ask for its size
 * (glibc 2.34+ reads AT_MINSIGSTKSZ) instead of assuming x86-64's. */
static size_t altstack_size(void)
{
    long frame = MINSIGSTKSZ;
#ifdef _SC_MINSIGSTKSZ
    long reported = sysconf(_SC_MINSIGSTKSZ);
    if (reported > frame)
        frame = reported;
#endif
    return ALTSTACK_HANDLER_ROOM + (size_t)frame;
}

static void write_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void write_num(size_t n)
{
    char buf[32];
    int i = sizeof buf;
    buf[--i] = 0;
    do {
        buf[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n && i > 0);
    write_str(buf + i);
}

static int stack_page_resident(const char *addr)
{
    size_t ps = sf_page_size();
    unsigned char vec = 0;
    char *page = (char *)((uintptr_t)addr & ~(uintptr_t)(ps - 1));
    return mincore(page, ps, &vec) == 0 && (vec & 1);
}

/* Did the running fiber overflow?  `info` and `ucontext` describe the fault. */
static int is_overflow(const Fiber *f, const siginfo_t *info, void *ucontext)
{
    const sf_stack *s = f->stack;
    const char *base = sf_stack_base(s);
    const char *low = s->map;  /* the guard's lowest byte */
    if (info->si_code <= 0) {
        /* Re-raised by another handler (SI_USER, SI_TKILL): no address. */
        return stack_page_resident(base);
    }
    const char *addr = info->si_addr;
    uintptr_t sp = 0;
    const ucontext_t *uc = ucontext;
#if defined(__x86_64__)
    sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    sp = (uintptr_t)uc->uc_mcontext.sp;
#endif
    /* A touch of the guard, or a stack pointer already past the base. */
    int in_guard = addr >= low && addr < base;
    int sp_below = sp && sp < (uintptr_t)base && sp >= (uintptr_t)low;
    return in_guard || sp_below;
}

static void on_fault(int sig, siginfo_t *info, void *ucontext)
{
    sf_thread *th = sf_tls_thread;
    Fiber *f = th ? th->current : NULL;
    if (f && f->stack && is_overflow(f, info, ucontext)) {
        write_str("stackful: fiber '");
        if (f->cname) {
            write_str(f->cname);
        } else {
            write_str("Fiber-");
            write_num((size_t)f->serial);
        }
        write_str("' overflowed its ");
        write_num(f->stack->size / 1024);
        write_str(" KiB stack (raise stack_size, or lower sys.setrecursionlimit)\n");
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    /* Not ours: put the previous handler back and let the fault repeat. */
    sigaction(sig, sig == SIGSEGV ? &previous_segv : &previous_bus, NULL);
    if (info->si_code <= 0)
        raise(sig);  /* a re-raised signal does not repeat by itself */
}

/* Runs on the exiting thread: take its signal stack down before freeing it. */
static void drop_thread_altstack(void *mem)
{
    stack_t now;
    if (sigaltstack(NULL, &now) == 0 && now.ss_sp == mem && !(now.ss_flags & SS_ONSTACK)) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    thread_altstack = NULL;
    free(mem);
}

void sf_overflow_prepare_thread(void)
{
    if (thread_altstack)
        return;
    stack_t now;
    if (sigaltstack(NULL, &now) != 0 || !(now.ss_flags & SS_DISABLE))
        return;  /* keep the one installed (faulthandler's) */
    size_t size = altstack_size();
    char *mem = malloc(size);
    if (!mem)
        return;
    stack_t ss = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0 || pthread_setspecific(altstack_key, mem) != 0) {
        stack_t off = {.ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
        free(mem);
        return;
    }
    thread_altstack = mem;
}

int sf_overflow_init(void)
{
    if (pthread_key_create(&altstack_key, drop_thread_altstack) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "stackful: cannot create a thread key");
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
    return 0;
}
