// The benchmark's program built with -mgeneral-regs-only (testtargets/Makefile): the compiler
// uses no vector or x87 register anywhere in this library, so an engine that proves that by
// decoding it may run the program without saving the vector state (issue 14).
#include "hookit.h"

// Reads an argument and the return value (an fentry program sees ret as 0) as any real program
// would, without storing them anywhere two threads would share.
uint64_t bench_gpr_read_arg(struct hookit_ctx *ctx) {
    __asm__ volatile("" ::"r"(ctx->args[0]), "r"(ctx->ret));
    return 0;
}
