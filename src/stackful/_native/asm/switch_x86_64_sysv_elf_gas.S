/* Context switch for x86-64, System V ABI, ELF, GNU as.
 *
 *   sf_context sf_make_context(void *stack_top, sf_entry_fn entry, void *arg);
 *   void      *sf_switch(sf_context *from, sf_context to, void *value);
 *
 * A suspended context is its stack pointer.  sf_switch pushes the callee-saved
 * registers and the FP control words, stores rsp in *from, loads `to` as rsp,
 * pops the same frame and `ret`s into the resumed code with `value` in rax.
 *
 * Suspended stack (addresses grow upward; sp = the saved sf_context):
 *
 *          |  ... caller's frames ...  |
 *   +0x38  |  return address (rip)     |  <- where sf_switch's caller resumes
 *   +0x30  |  rbp                      |
 *   +0x28  |  rbx                      |
 *   +0x20  |  r12                      |
 *   +0x18  |  r13                      |
 *   +0x10  |  r14                      |
 *   +0x08  |  r15                      |
 *   +0x04  |  x87 control word (16 b)  |
 *   +0x00  |  MXCSR (32 b)             |  <- sp
 *
 * Fresh stack made by sf_make_context (top = stack_top aligned down to 16):
 *
 *   top-0x08 |  0 (fake return address: unwinders stop here) |
 *   top-0x10 |  0 (padding)                                   |
 *   top-0x18 |  sf_trampoline      (popped by `ret`)          |
 *   top-0x20 |  rbp = 0            (ends frame-pointer chains)|
 *   top-0x28 |  rbx = 0                                       |
 *   top-0x30 |  r12 = entry                                   |
 *   top-0x38 |  r13 = arg                                     |
 *   top-0x40 |  r14 = 0                                       |
 *   top-0x48 |  r15 = 0                                       |
 *   top-0x50 |  MXCSR, x87 CW of the creator                  |  <- sp
 *
 * Alignment: the ABI wants rsp % 16 == 0 at every `call`.  After the `ret`
 * into sf_trampoline, rsp = top - 0x10, a multiple of 16, so its
 * `call *%r12` enters `entry` with the alignment a normal call would give.
 * Offsets are mirrored in switch.h and checked by fiber.c's _Static_asserts.
 */

    .text
    .globl  sf_switch
    .type   sf_switch, @function
    .hidden sf_switch
    .p2align 4
sf_switch:
    .cfi_startproc
    endbr64
    pushq   %rbp                /* callee-saved general registers */
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $8, %rsp            /* room for the FP control words */
    stmxcsr (%rsp)              /* SSE rounding/exception masks */
    fnstcw  4(%rsp)             /* x87 precision/rounding */

    movq    %rsp, (%rdi)        /* *from = our stack pointer */
    movq    %rsi, %rsp          /* now on the other stack */

    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    movq    %rdx, %rax          /* value: sf_switch's return value, or the
                                   trampoline's first argument */
    ret                         /* resume the other side */
    .cfi_endproc
    .size   sf_switch, .-sf_switch

    .globl  sf_make_context
    .type   sf_make_context, @function
    .hidden sf_make_context
    .p2align 4
sf_make_context:
    .cfi_startproc
    endbr64
    movq    %rdi, %rax
    andq    $-16, %rax          /* align the top down to 16 */
    movq    $0, -0x08(%rax)     /* fake return address above the entry */
    movq    $0, -0x10(%rax)
    leaq    sf_trampoline(%rip), %rcx
    movq    %rcx, -0x18(%rax)   /* popped by sf_switch's `ret` */
    movq    $0, -0x20(%rax)     /* rbp */
    movq    $0, -0x28(%rax)     /* rbx */
    movq    %rsi, -0x30(%rax)   /* r12 = entry */
    movq    %rdx, -0x38(%rax)   /* r13 = arg */
    movq    $0, -0x40(%rax)     /* r14 */
    movq    $0, -0x48(%rax)     /* r15 */
    leaq    -0x50(%rax), %rax   /* the new context's stack pointer */
    stmxcsr (%rax)              /* the fresh context inherits our FP modes */
    fnstcw  4(%rax)
    ret
    .cfi_endproc
    .size   sf_make_context, .-sf_make_context

    .type   sf_trampoline, @function
    .p2align 4
sf_trampoline:
    .cfi_startproc
    .cfi_undefined rip          /* outermost frame: debuggers stop here */
    endbr64
    movq    %rax, %rdi          /* entry(value, ...) */
    movq    %r13, %rsi          /*       (..., arg)  */
    callq   *%r12
    ud2                         /* entry must never return */
    .cfi_endproc
    .size   sf_trampoline, .-sf_trampoline

    .section .note.GNU-stack, "", @progbits
