/* The whole contract between C and the per-ABI assembly in asm/.
 *
 * A suspended context is nothing but its saved stack pointer: the callee-saved
 * registers (and the floating-point control words) sit on that stack in the
 * layout each assembly file draws in its header.  Everything else in the
 * project is built on these two functions.
 */
#ifndef STACKFUL_SWITCH_H
#define STACKFUL_SWITCH_H

#include <stddef.h>

typedef void *sf_context;

/* The body of a fresh context.  `value` is what the first sf_switch into the
 * context passed; `arg` is what sf_make_context was given.  It must never
 * return: it leaves by switching away for good. */
typedef void (*sf_entry_fn)(void *value, void *arg);

/* Lay out a fresh context just below `stack_top` (the highest address of a
 * stack; it is aligned down as the ABI requires).  The first sf_switch to the
 * returned context runs entry(value, arg) on that stack. */
sf_context sf_make_context(void *stack_top, sf_entry_fn entry, void *arg);

/* Save the running context into *from, resume `to`, hand it `value`.  Returns
 * when something switches back to *from, with the value that switch passed. */
void *sf_switch(sf_context *from, sf_context to, void *value);

/* Size of the frame sf_switch leaves on a suspended stack; the offsets inside
 * it are checked against the assembly in fiber.c's static asserts. */
#if defined(__x86_64__)
#  define SF_SWITCH_FRAME_SIZE 0x40
#  define SF_FRAME_OFFSET_RETURN 0x38  /* the address `ret` resumes at */
#  define SF_FRAME_OFFSET_ENTRY 0x20   /* r12 of a fresh context */
#  define SF_FRAME_OFFSET_ARG 0x18     /* r13 of a fresh context */
#  define SF_FRESH_SP_BELOW_TOP 0x50   /* frame + padding that keeps the entry aligned */
#elif defined(__aarch64__)
#  define SF_SWITCH_FRAME_SIZE 0xb0
#  define SF_FRAME_OFFSET_RETURN 0x98  /* x30 (lr) */
#  define SF_FRAME_OFFSET_ENTRY 0x40   /* x19 of a fresh context */
#  define SF_FRAME_OFFSET_ARG 0x48     /* x20 of a fresh context */
#  define SF_FRESH_SP_BELOW_TOP 0xb0
#else
#  error "stackful: no context switch for this architecture"
#endif

#endif
