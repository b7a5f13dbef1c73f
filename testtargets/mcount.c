// Built with -pg -mfentry -mnop-mcount: gcc puts a 5-byte nop (0f 1f 44 00 00) where the
// call to __fentry__ would be, as the very first instruction: the kernel-style patch site.
// gcc refuses -mnop-mcount with -fPIE, so this is built -fno-pie; nopped has no relocations,
// so the object links into the PIE hooktarget all the same.
__attribute__((noinline, used)) long nopped(long x) { return x + 5; }
