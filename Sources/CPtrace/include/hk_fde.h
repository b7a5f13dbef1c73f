// Function extents from .eh_frame (elfutils libdw): stripped shared objects keep an FDE for
// every function even when they have no symbol sizes for it (glibc's IFUNC implementations,
// __strlen_avx2 and friends, exist only as addresses in GOT slots).
#ifndef HK_FDE_H
#define HK_FDE_H
#include <stdint.h>

typedef struct hk_fde_index hk_fde_index;

/// Opens the call frame information of the ELF file at `path`; NULL when it has none.
hk_fde_index *hk_fde_open(const char *path);

/// The [start, end) range of the FDE covering `vaddr` (a link-time address of the file).
/// Returns 0 on success.
int hk_fde_range(hk_fde_index *index, uint64_t vaddr, uint64_t *start, uint64_t *end);

/// The rule for the canonical frame address at `vaddr`: CFA = DWARF register `reg` + `offset`
/// (7 is rsp, 6 rbp), valid for every address in [row_start, row_end). Returns 0; 1 when the
/// rule is not register + offset (an expression, as after a stack realignment); -1 when no FDE
/// covers `vaddr`.
int hk_fde_cfa(hk_fde_index *index, uint64_t vaddr, int *reg, int64_t *offset, uint64_t *row_start, uint64_t *row_end);

void hk_fde_close(hk_fde_index *index);
#endif
