#include "hk_fde.h"
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <libelf.h>
#include <stdlib.h>
#include <unistd.h>

struct hk_fde_index {
    int fd;
    Elf *elf;
    Dwarf_CFI *cfi;
};

hk_fde_index *hk_fde_open(const char *path) {
    if (elf_version(EV_CURRENT) == EV_NONE) return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    Dwarf_CFI *cfi = elf ? dwarf_getcfi_elf(elf) : NULL;
    if (!cfi) {
        if (elf) elf_end(elf);
        close(fd);
        return NULL;
    }
    hk_fde_index *index = malloc(sizeof *index);
    if (!index) { dwarf_cfi_end(cfi); elf_end(elf); close(fd); return NULL; }
    index->fd = fd;
    index->elf = elf;
    index->cfi = cfi;
    return index;
}

int hk_fde_range(hk_fde_index *index, uint64_t vaddr, uint64_t *start, uint64_t *end) {
    Dwarf_Frame *frame = NULL;
    if (dwarf_cfi_addrframe(index->cfi, vaddr, &frame) != 0) return -1;
    Dwarf_Addr s = 0, e = 0;
    int rc = dwarf_frame_info(frame, &s, &e, NULL) < 0 ? -1 : 0;
    free(frame);
    if (rc == 0) { *start = s; *end = e; }
    return rc;
}

int hk_fde_cfa(hk_fde_index *index, uint64_t vaddr, int *reg, int64_t *offset, uint64_t *row_start, uint64_t *row_end) {
    Dwarf_Frame *frame = NULL;
    if (dwarf_cfi_addrframe(index->cfi, vaddr, &frame) != 0) return -1;
    Dwarf_Addr s = 0, e = 0;
    Dwarf_Op *ops = NULL;
    size_t nops = 0;
    int rc = -1;
    if (dwarf_frame_info(frame, &s, &e, NULL) >= 0 && dwarf_frame_cfa(frame, &ops, &nops) == 0) {
        *row_start = s;
        *row_end = e;
        // libdw gives a register + offset rule as one DW_OP_bregx (register, offset).
        if (nops == 1 && ops[0].atom == DW_OP_bregx) {
            *reg = (int)ops[0].number;
            *offset = (int64_t)ops[0].number2;
            rc = 0;
        } else if (nops == 1 && ops[0].atom >= DW_OP_breg0 && ops[0].atom <= DW_OP_breg31) {
            *reg = ops[0].atom - DW_OP_breg0;
            *offset = (int64_t)ops[0].number;
            rc = 0;
        } else {
            rc = 1;
        }
    }
    free(frame);
    return rc;
}

void hk_fde_close(hk_fde_index *index) {
    if (!index) return;
    dwarf_cfi_end(index->cfi);
    elf_end(index->elf);
    close(index->fd);
    free(index);
}
