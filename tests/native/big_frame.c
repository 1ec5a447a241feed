/* A C function with a frame of `kib` KiB whose first write lands at its lowest
 * address, as a large stack buffer's does: called near the bottom of a fiber's
 * stack it jumps past the base by up to `kib` KiB (tests/crash/stack_overflow.py). */
int touch_frame_bottom(int kib)
{
    volatile char buffer[kib * 1024];
    buffer[0] = 1;
    return buffer[0];
}
