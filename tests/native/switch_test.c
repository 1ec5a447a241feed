/* The context switch on its own, without Python: a ping-pong between contexts,
 * values passed both ways, callee-saved registers and floating-point modes
 * preserved, 16-byte alignment on entry (printf("%f") on the new stack would
 * fault otherwise on some libcs), and a fresh context per round.
 *
 * On AArch64 with pointer authentication, the return address a suspended
 * context keeps is signed, and `switch_test tamper` (which flips one bit of it
 * before resuming) must die instead of jumping.
 *
 * Built and run by tests/test_switch_native.py, natively and, where a cross
 * compiler and qemu-user exist, for the other architectures. */
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "switch.h"

#if defined(__aarch64__)
#  include <sys/auxv.h>
#  ifndef HWCAP_PACA
#    define HWCAP_PACA (1UL << 30)
#  endif
/* `p` without its pointer authentication code (xpaclri: a NOP without PAuth). */
static void *strip_pac(void *p)
{
    register void *x30 __asm__("x30") = p;
    __asm__("hint #7" : "+r"(x30));
    return x30;
}
#endif

static sf_context main_ctx, co_ctx;
static int failures;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                 \
            fputc('\n', stderr);                          \
            failures++;                                   \
        }                                                 \
    } while (0)

static void counter(void *value, void *arg)
{
    uintptr_t n = (uintptr_t)value;
    CHECK(arg == (void *)&co_ctx, "entry got the wrong arg");
    CHECK(((uintptr_t)__builtin_frame_address(0) & 15) == 0, "entry frame not 16-aligned");
    char text[64];
    snprintf(text, sizeof text, "%f", 1.5);  /* SSE/NEON code needing an aligned stack */
    CHECK(strcmp(text, "1.500000") == 0, "printf on the new stack gave %s", text);
    for (;;)
        n = (uintptr_t)sf_switch(&co_ctx, main_ctx, (void *)(n + 1));
}

/* Values kept in callee-saved registers across switches (the compiler puts
 * them there since they live across calls). */
static int __attribute__((noinline)) registers_survive(void)
{
    volatile double d = 2.25;
    uintptr_t a = 11, b = 22, c = 33, e = 44, f = 55, g = 66;
    for (int i = 0; i < 1000; i++) {
        uintptr_t got = (uintptr_t)sf_switch(&main_ctx, co_ctx, (void *)(uintptr_t)i);
        if (got != (uintptr_t)i + 1)
            return 0;
        a += 1; b += 2; c += 3; e += 4; f += 5; g += 6;
    }
    return a == 1011 && b == 2022 && c == 3033 && e == 4044 && f == 5055 && g == 6066 &&
           d == 2.25;
}

static void finisher(void *value, void *arg)
{
    if (arg)
        fesetround(FE_DOWNWARD);  /* this context's own mode: must not leak back */
    sf_switch(&co_ctx, main_ctx, value);  /* hand the value back, never resumed */
}

#if defined(__aarch64__)
/* A code that happens to equal the address's own top bits reads as "unsigned"
 * (1 run in 60 under qemu here), so one
 * suspended frame proves nothing: suspend at 16 stack depths (the modifier is
 * SP) and ask that one of them carries a code. */
static int some_suspension_is_signed(void)
{
    enum { DEPTHS = 16, SIZE = 64 * 1024 };
    char *stack = malloc(SIZE);
    int signed_seen = 0;
    sf_context saved = co_ctx;
    for (int depth = 0; depth < DEPTHS && !signed_seen; depth++) {
        co_ctx = sf_make_context(stack + SIZE - 16 * depth, finisher, NULL);
        sf_switch(&main_ctx, co_ctx, NULL);  /* finisher suspends itself into co_ctx */
        void *ret = *(void **)((char *)co_ctx + SF_FRAME_OFFSET_RETURN);
        signed_seen = strip_pac(ret) != ret;
    }
    co_ctx = saved;
    free(stack);
    return signed_seen;
}
#endif

/* Through a pointer, so the calls are indirect: with BTI enforced, an entry
 * without a landing pad faults. */
static sf_context (*volatile make_context)(void *, sf_entry_fn, void *) = sf_make_context;
static void *(*volatile switch_to)(sf_context *, sf_context, void *) = sf_switch;

int main(int argc, char **argv)
{
    size_t size = 256 * 1024;
    char *stack = malloc(size);
    co_ctx = make_context(stack + size, counter, &co_ctx);
    CHECK(registers_survive(), "callee-saved registers or values were lost");
    CHECK((uintptr_t)switch_to(&main_ctx, co_ctx, (void *)41) == 42, "indirect switch");
#if defined(__aarch64__)
    if (getauxval(AT_HWCAP) & HWCAP_PACA) {
        void **ret = (void **)((char *)co_ctx + SF_FRAME_OFFSET_RETURN);
        CHECK(some_suspension_is_signed(),
              "a suspended context's return address is not signed");
        if (argc > 1 && strcmp(argv[1], "tamper") == 0) {
            *ret = (void *)((uintptr_t)*ret ^ ((uintptr_t)1 << 53));  /* inside the PAC field */
            switch_to(&main_ctx, co_ctx, (void *)0);
            printf("tampered return address was followed\n");
            return 3;
        }
    }
#endif
    if (argc > 1 && strcmp(argv[1], "tamper") == 0) {
        printf("no pointer authentication here\n");
        return 2;
    }

    /* Floating-point modes belong to each context. */
    fesetround(FE_UPWARD);
    char *stack2 = malloc(size);
    co_ctx = sf_make_context(stack2 + size, finisher, &co_ctx);
    void *back = sf_switch(&main_ctx, co_ctx, (void *)0x1234);
    CHECK(back == (void *)0x1234, "value did not round-trip");
    CHECK(fegetround() == FE_UPWARD, "rounding mode lost across a switch");
    fesetround(FE_TONEAREST);

    /* Many fresh contexts on the same memory. */
    for (int round = 0; round < 10000; round++) {
        co_ctx = sf_make_context(stack2 + size, finisher, NULL);
        back = sf_switch(&main_ctx, co_ctx, (void *)(uintptr_t)round);
        if (back != (void *)(uintptr_t)round) {
            CHECK(0, "round %d came back with %p", round, back);
            break;
        }
    }
    free(stack);
    free(stack2);
    printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
    return failures != 0;
}
