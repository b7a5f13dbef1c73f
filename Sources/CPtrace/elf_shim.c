// A thin walk over libelf: header, program headers, build id, symbols, RELA relocations.
// The interpretation (bias, IFUNCs, patterns) lives in Injector's ElfSymbols.swift.
#include "cptrace.h"
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>

static int elf_ready(char *err, size_t errlen) {
    if (elf_version(EV_CURRENT) == EV_NONE) {
        snprintf(err, errlen, "libelf: %s", elf_errmsg(-1));
        return -1;
    }
    return 0;
}

static int fill_info(Elf *e, hk_elf_info *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    if (elf_kind(e) != ELF_K_ELF) { snprintf(err, errlen, "not an ELF file"); return -1; }
    GElf_Ehdr eh;
    if (!gelf_getehdr(e, &eh)) { snprintf(err, errlen, "bad ELF header: %s", elf_errmsg(-1)); return -1; }
    info->elf_class = gelf_getclass(e);
    info->machine = eh.e_machine;
    info->type = eh.e_type;
    info->entry = eh.e_entry;
    size_t n = 0;
    if (elf_getphdrnum(e, &n) != 0) n = 0;
    for (size_t i = 0; i < n && info->nphdr < 32; i++) {
        GElf_Phdr ph;
        if (!gelf_getphdr(e, (int)i, &ph)) continue;
        hk_phdr *p = &info->phdr[info->nphdr++];
        p->type = ph.p_type; p->flags = ph.p_flags; p->offset = ph.p_offset;
        p->vaddr = ph.p_vaddr; p->filesz = ph.p_filesz; p->memsz = ph.p_memsz; p->align = ph.p_align;
    }
    // The build id, from the first GNU NT_GNU_BUILD_ID note in any SHT_NOTE section.
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL && info->build_id_len == 0) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE) continue;
        Elf_Data *d = elf_getdata(scn, NULL);
        if (!d) continue;
        size_t off = 0, noff, doff;
        GElf_Nhdr nh;
        while ((off = gelf_getnote(d, off, &nh, &noff, &doff)) > 0) {
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
                memcmp((char *)d->d_buf + noff, "GNU", 4) == 0 && nh.n_descsz <= 64) {
                memcpy(info->build_id, (char *)d->d_buf + doff, nh.n_descsz);
                info->build_id_len = (int)nh.n_descsz;
                break;
            }
        }
    }
    return 0;
}

static void walk_symbols(Elf *e, Elf_Scn *scn, GElf_Shdr *sh, hk_sym_cb cb, void *ctx) {
    Elf_Data *d = elf_getdata(scn, NULL);
    if (!d || sh->sh_entsize == 0) return;
    size_t count = sh->sh_size / sh->sh_entsize;
    for (size_t i = 1; i < count; i++) {
        GElf_Sym s;
        if (!gelf_getsym(d, (int)i, &s)) continue;
        const char *name = elf_strptr(e, sh->sh_link, s.st_name);
        if (!name || !*name) continue;
        hk_elf_sym out = { name, s.st_value, s.st_size, GELF_ST_TYPE(s.st_info),
                           GELF_ST_BIND(s.st_info), s.st_shndx, sh->sh_type == SHT_DYNSYM };
        cb(&out, ctx);
    }
}

static void walk_relas(Elf *e, Elf_Scn *scn, GElf_Shdr *sh, hk_rela_cb cb, void *ctx) {
    Elf_Data *d = elf_getdata(scn, NULL);
    if (!d || sh->sh_entsize == 0) return;
    Elf_Scn *symscn = elf_getscn(e, sh->sh_link);
    GElf_Shdr symsh;
    Elf_Data *symd = NULL;
    if (symscn && gelf_getshdr(symscn, &symsh)) symd = elf_getdata(symscn, NULL);
    size_t count = sh->sh_size / sh->sh_entsize;
    for (size_t i = 0; i < count; i++) {
        GElf_Rela r;
        if (!gelf_getrela(d, (int)i, &r)) continue;
        const char *name = "";
        size_t symi = GELF_R_SYM(r.r_info);
        GElf_Sym s;
        if (symi && symd && gelf_getsym(symd, (int)symi, &s)) {
            const char *n = elf_strptr(e, symsh.sh_link, s.st_name);
            if (n) name = n;
        }
        hk_elf_rela out = { r.r_offset, (uint32_t)GELF_R_TYPE(r.r_info), r.r_addend, name };
        cb(&out, ctx);
    }
}

static int walk(Elf *e, hk_sym_cb sym_cb, hk_rela_cb rela_cb, void *ctx, char *err, size_t errlen) {
    if (elf_kind(e) != ELF_K_ELF) { snprintf(err, errlen, "not an ELF file"); return -1; }
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh)) continue;
        if (sym_cb && (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM)) walk_symbols(e, scn, &sh, sym_cb, ctx);
        if (rela_cb && sh.sh_type == SHT_RELA) walk_relas(e, scn, &sh, rela_cb, ctx);
    }
    return 0;
}

int hk_elf_info_fd(int fd, hk_elf_info *info, char *err, size_t errlen) {
    if (elf_ready(err, errlen)) return -1;
    Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (!e) { snprintf(err, errlen, "libelf: %s", elf_errmsg(-1)); return -1; }
    int rc = fill_info(e, info, err, errlen);
    elf_end(e);
    return rc;
}

int hk_elf_info_mem(const void *image, size_t len, hk_elf_info *info, char *err, size_t errlen) {
    if (elf_ready(err, errlen)) return -1;
    Elf *e = elf_memory((char *)image, len);
    if (!e) { snprintf(err, errlen, "libelf: %s", elf_errmsg(-1)); return -1; }
    int rc = fill_info(e, info, err, errlen);
    elf_end(e);
    return rc;
}

int hk_elf_walk_fd(int fd, hk_sym_cb sym_cb, hk_rela_cb rela_cb, void *ctx, char *err, size_t errlen) {
    if (elf_ready(err, errlen)) return -1;
    Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (!e) { snprintf(err, errlen, "libelf: %s", elf_errmsg(-1)); return -1; }
    int rc = walk(e, sym_cb, rela_cb, ctx, err, errlen);
    elf_end(e);
    return rc;
}

int hk_elf_walk_mem(const void *image, size_t len, hk_sym_cb sym_cb, hk_rela_cb rela_cb, void *ctx,
                    char *err, size_t errlen) {
    if (elf_ready(err, errlen)) return -1;
    Elf *e = elf_memory((char *)image, len);
    if (!e) { snprintf(err, errlen, "libelf: %s", elf_errmsg(-1)); return -1; }
    int rc = walk(e, sym_cb, rela_cb, ctx, err, errlen);
    elf_end(e);
    return rc;
}

int hk_elf_needed_fd(int fd, hk_needed_cb cb, void *ctx) {
    char err[8];
    if (elf_ready(err, sizeof err) != 0) return -1;
    Elf *e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (!e) return -1;
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_DYNAMIC || sh.sh_entsize == 0) continue;
        Elf_Data *d = elf_getdata(scn, NULL);
        for (size_t i = 0; d && i < sh.sh_size / sh.sh_entsize; i++) {
            GElf_Dyn dyn;
            if (!gelf_getdyn(d, (int)i, &dyn)) break;
            if (dyn.d_tag == DT_NULL) break;
            if (dyn.d_tag != DT_NEEDED) continue;
            const char *name = elf_strptr(e, sh.sh_link, dyn.d_un.d_val);
            if (name) cb(name, ctx);
        }
    }
    elf_end(e);
    return 0;
}

int hk_elf_drop_needed_fd(int fd, const char *needed) {
    char err[8];
    if (elf_ready(err, sizeof err) != 0) return -1;
    Elf *e = elf_begin(fd, ELF_C_RDWR, NULL);
    if (!e) return -1;
    // The file's layout stays exactly as the linker made it: only the dynamic section's
    // entries move up by one over the dropped one, and its last entry becomes DT_NULL.
    elf_flagelf(e, ELF_C_SET, ELF_F_LAYOUT);
    int dropped = 0;
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL && !dropped) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_DYNAMIC || sh.sh_entsize == 0) continue;
        Elf_Data *d = elf_getdata(scn, NULL);
        size_t n = d ? sh.sh_size / sh.sh_entsize : 0;
        for (size_t i = 0; i < n && !dropped; i++) {
            GElf_Dyn dyn;
            if (!gelf_getdyn(d, (int)i, &dyn) || dyn.d_tag == DT_NULL) break;
            const char *name = dyn.d_tag == DT_NEEDED ? elf_strptr(e, sh.sh_link, dyn.d_un.d_val) : NULL;
            if (!name || strcmp(name, needed) != 0) continue;
            for (size_t j = i; j + 1 < n; j++) {
                GElf_Dyn next;
                if (!gelf_getdyn(d, (int)(j + 1), &next) || !gelf_update_dyn(d, (int)j, &next)) { elf_end(e); return -1; }
            }
            GElf_Dyn last = { .d_tag = DT_NULL };
            if (!gelf_update_dyn(d, (int)(n - 1), &last)) { elf_end(e); return -1; }
            elf_flagdata(d, ELF_C_SET, ELF_F_DIRTY);
            dropped = 1;
        }
    }
    int rc = dropped ? (elf_update(e, ELF_C_WRITE) < 0 ? -1 : 1) : 0;
    elf_end(e);
    return rc;
}
