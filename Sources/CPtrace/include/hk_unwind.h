// Unwinding a copied user stack offline (hookit's --stack), as perf's --call-graph dwarf does
// with libdw: the CFI (.eh_frame, or .debug_frame of a debug file) of the modules reported, the
// stack bytes the tracee copied, frame pointers where a module has no CFI.
#ifndef HK_UNWIND_H
#define HK_UNWIND_H
#include <stddef.h>
#include <stdint.h>

typedef struct hk_unwinder hk_unwinder;

/// An unwinder for process `pid`'s modules; `debug_dir` replaces /usr/lib/debug (NULL: the default).
hk_unwinder *hk_unwinder_new(int pid, const char *debug_dir);

/// Reports one module: its ELF file (opened now, so a process that exits later can still be
/// unwound) mapped with `bias` added to its virtual addresses. 0, or -1 if it cannot be read.
int hk_unwinder_add(hk_unwinder *u, const char *name, const char *path, uint64_t bias);

/// Ends the reports: the modules are fixed from here on. 0, or -1.
int hk_unwinder_ready(hk_unwinder *u);

void hk_unwinder_free(hk_unwinder *u);

/// Unwinds the stack of thread `tid` at a function's entry: pc, rsp and rbp there, and a copy of
/// the memory [base, base + len). Writes at most `max` pcs, innermost first (the first is `pc`,
/// the others return addresses); returns how many. `*complete` is 1 when the outermost frame
/// was reached, 0 when a frame could not be unwound (the copy ended, no CFI and no frame
/// pointer, a pc in no module).
int hk_unwind(hk_unwinder *u, int tid, uint64_t pc, uint64_t rsp, uint64_t rbp,
              uint64_t base, const uint8_t *bytes, size_t len, uint64_t *pcs, int max, int *complete);

#endif
