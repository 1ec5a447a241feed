/* Context switch for AArch64, AAPCS64, ELF, GNU as.
 *
 *   sf_context sf_make_context(void *stack_top, sf_entry_fn entry, void *arg);
 *   void      *sf_switch(sf_context *from, sf_context to, void *value);
 *
 * A suspended context is its stack pointer.  sf_switch stores the
 * callee-saved registers (x19-x30, d8-d15) and FPCR below sp, stores sp in
 * *from, loads `to` as sp, reloads the same frame and returns through x30
 * with `value` in x0.
 *
 * Suspended stack (addresses grow upward; sp = the saved sf_context):
 *
 *   +0xa8  |  padding                    |
 *   +0xa0  |  FPCR                       |
 *   +0x98  |  x30 (lr: where we resume)  |
 *   +0x90  |  x29 (fp)                   |
 *   +0x88  |  x28                        |
 *    ...   |  x27 .. x20                 |
 *   +0x40  |  x19                        |
 *   +0x38  |  d15                        |
 *    ...   |  d14 .. d9                  |
 *   +0x00  |  d8                         |  <- sp
 *
 * Fresh stack made by sf_make_context (top = stack_top aligned down to 16):
 *   the same 0xb0-byte frame at top - 0xb0 with x30 = sf_trampoline,
 *   x19 = entry, x20 = arg, x29 = 0 (ends frame-record chains), FPCR = the
 *   creator's, everything else 0.
 *
 * Alignment: sp must be 16-aligned at all times on AArch64; 0xb0 is a
 * multiple of 16, so sf_trampoline starts with sp = top, aligned.
 * Offsets are mirrored in switch.h and checked by fiber.c's _Static_asserts.
 *
 * Pointer authentication: the saved x30 is the one value here that decides
 * where code runs next, and it sits in memory (on a suspended stack) for as
 * long as a fiber sleeps.  sf_switch signs it on entry (paciasp: key A, the
 * entry sp as modifier) and authenticates it on the way out (autiasp, with
 * the resumed context's sp, which is that context's entry sp again);
 * sf_make_context signs the trampoline's address for the fresh stack's top
 * with pacia1716.  All three are in the hint space: plain NOPs on cores
 * without FEAT_PAuth, so one binary runs everywhere.  A tampered frame makes
 * the return fault instead of jumping.
 *
 * Branch target identification: the two global entry points start with
 * `bti c` (a NOP without FEAT_BTI), so the file carries the GNU property note
 * below that says BTI and PAC; without it the linker drops both properties
 * for the whole shared object.  sf_trampoline is entered by `ret`, which BTI
 * does not check.
 */

/* bti c / paciasp / autiasp / pacia1716 by their hint numbers: any assembler
 * takes them, whatever -march says. */
#define BTI_C       hint #34
#define PACIASP     hint #25
#define AUTIASP     hint #29
#define PACIA1716   hint #8

    .text
    .globl  sf_switch
    .type   sf_switch, %function
    .hidden sf_switch
    .p2align 4
sf_switch:
    .cfi_startproc
    BTI_C                       /* a valid target of an indirect call */
    PACIASP                     /* sign x30 with key A and the entry sp */
    .cfi_negate_ra_state        /* unwinders: x30 is signed from here on */
    sub     sp, sp, #0xb0
    .cfi_def_cfa_offset 0xb0    /* the same rules hold after the stack
                                   swap: there they name the resumed
                                   context's caller */
    stp     d8,  d9,  [sp, #0x00]
    stp     d10, d11, [sp, #0x10]
    stp     d12, d13, [sp, #0x20]
    stp     d14, d15, [sp, #0x30]
    stp     x19, x20, [sp, #0x40]
    stp     x21, x22, [sp, #0x50]
    stp     x23, x24, [sp, #0x60]
    stp     x25, x26, [sp, #0x70]
    stp     x27, x28, [sp, #0x80]
    stp     x29, x30, [sp, #0x90]
    .cfi_offset x29, -0x20
    .cfi_offset x30, -0x18
    mrs     x9, fpcr
    str     x9, [sp, #0xa0]

    mov     x9, sp
    str     x9, [x0]            /* *from = our stack pointer */
    mov     sp, x1              /* now on the other stack */

    ldr     x9, [sp, #0xa0]
    msr     fpcr, x9
    ldp     d8,  d9,  [sp, #0x00]
    ldp     d10, d11, [sp, #0x10]
    ldp     d12, d13, [sp, #0x20]
    ldp     d14, d15, [sp, #0x30]
    ldp     x19, x20, [sp, #0x40]
    ldp     x21, x22, [sp, #0x50]
    ldp     x23, x24, [sp, #0x60]
    ldp     x25, x26, [sp, #0x70]
    ldp     x27, x28, [sp, #0x80]
    ldp     x29, x30, [sp, #0x90]
    .cfi_restore x29
    .cfi_restore x30
    add     sp, sp, #0xb0       /* sp = the resumed context's entry sp */
    .cfi_def_cfa_offset 0
    AUTIASP                     /* check x30 against it: a tampered
                                   frame faults at the ret */
    .cfi_negate_ra_state        /* x30 is plain again */
    mov     x0, x2              /* value: our return value, or the
                                   trampoline's first argument */
    ret                         /* to x30 */
    .cfi_endproc
    .size   sf_switch, .-sf_switch

    .globl  sf_make_context
    .type   sf_make_context, %function
    .hidden sf_make_context
    .p2align 4
sf_make_context:
    .cfi_startproc
    BTI_C
    and     x9, x0, #~15        /* align the top down to 16 */
    sub     x0, x9, #0xb0       /* the new context's stack pointer */
    mov     x10, x0
1:  str     xzr, [x10], #8      /* zero the frame */
    cmp     x10, x9
    b.lo    1b
    str     x1, [x0, #0x40]     /* x19 = entry */
    str     x2, [x0, #0x48]     /* x20 = arg */
    adr     x17, sf_trampoline
    mov     x16, x9             /* sf_switch leaves with sp = the top */
    PACIA1716                   /* sign x17 as sf_switch's AUTIASP checks */
    str     x17, [x0, #0x98]    /* x30: where sf_switch returns to */
    mrs     x10, fpcr
    str     x10, [x0, #0xa0]    /* the fresh context inherits our FP modes */
    ret
    .cfi_endproc
    .size   sf_make_context, .-sf_make_context

    .type   sf_trampoline, %function
    .p2align 4
sf_trampoline:
    .cfi_startproc
    .cfi_undefined x30          /* outermost frame: debuggers stop here */
    mov     x1, x20             /* entry(value = x0, arg) */
    blr     x19
    brk     #0                  /* entry must never return */
    .cfi_endproc
    .size   sf_trampoline, .-sf_trampoline

    .section .note.GNU-stack, "", %progbits

/* The GNU property note: this object keeps to BTI (bit 0) and PAC (bit 1),
 * so a shared object built with -mbranch-protection=standard stays marked. */
    .section .note.gnu.property, "a"
    .p2align 3
    .word   4                   /* name size: "GNU" and its NUL */
    .word   16                  /* descriptor size */
    .word   5                   /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz  "GNU"
    .word   0xc0000000          /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .word   4                   /* its data size */
    .word   3                   /* BTI | PAC */
    .word   0                   /* padding to 8 bytes */
