#include "hk_unwind.h"
#include <elfutils/libdwfl.h>
#include <stdlib.h>
#include <string.h>

// The sample being unwound: libdwfl asks for the thread, its registers and stack words through
// the callbacks below, each given this.
struct hk_unwinder {
    Dwfl *dwfl;
    Dwfl_Callbacks callbacks;
    char *debug_path;
    int pid, tid, attached;
    uint64_t pc, rsp, rbp, base;
    const uint8_t *bytes;
    size_t len;
    uint64_t *pcs;
    int max, count;
    int missed;                 // a word outside the copy was asked for
};

static pid_t next_thread(Dwfl *dwfl, void *arg, void **thread_arg) {
    (void)dwfl;
    struct hk_unwinder *u = arg;
    if (*thread_arg) return 0;
    *thread_arg = u;
    return u->tid;
}

static bool get_thread(Dwfl *dwfl, pid_t tid, void *arg, void **thread_arg) {
    (void)dwfl;
    struct hk_unwinder *u = arg;
    *thread_arg = u;
    return tid == u->tid;
}

// Only the copied bytes: a word outside them ends the unwind there.
static bool memory_read(Dwfl *dwfl, Dwarf_Addr addr, Dwarf_Word *result, void *arg) {
    (void)dwfl;
    struct hk_unwinder *u = arg;
    if (addr < u->base || addr - u->base > u->len || u->len - (addr - u->base) < 8) {
        u->missed = 1;
        return false;
    }
    memcpy(result, u->bytes + (addr - u->base), 8);
    return true;
}

// DWARF numbering: 6 rbp, 7 rsp. The other registers are unknown: a rule that needs one of them
// fails, and the unwind ends there.
static bool set_initial_registers(Dwfl_Thread *thread, void *thread_arg) {
    struct hk_unwinder *u = thread_arg;
    Dwarf_Word regs[2] = { u->rbp, u->rsp };
    if (!dwfl_thread_state_registers(thread, 6, 2, regs)) return false;
    dwfl_thread_state_register_pc(thread, u->pc);
    return true;
}

static const Dwfl_Thread_Callbacks thread_callbacks = {
    .next_thread = next_thread,
    .get_thread = get_thread,
    .memory_read = memory_read,
    .set_initial_registers = set_initial_registers,
};

hk_unwinder *hk_unwinder_new(int pid, const char *debug_dir) {
    struct hk_unwinder *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->debug_path = debug_dir ? strdup(debug_dir) : NULL;
    u->callbacks.find_elf = dwfl_build_id_find_elf;
    u->callbacks.find_debuginfo = dwfl_standard_find_debuginfo;
    u->callbacks.debuginfo_path = &u->debug_path;
    u->dwfl = dwfl_begin(&u->callbacks);
    if (!u->dwfl) { free(u->debug_path); free(u); return NULL; }
    u->pid = pid;
    dwfl_report_begin(u->dwfl);
    return u;
}

int hk_unwinder_add(hk_unwinder *u, const char *name, const char *path, uint64_t bias) {
    return dwfl_report_elf(u->dwfl, name, path, -1, bias, false) ? 0 : -1;
}

int hk_unwinder_ready(hk_unwinder *u) {
    if (dwfl_report_end(u->dwfl, NULL, NULL) != 0) return -1;
    u->attached = dwfl_attach_state(u->dwfl, NULL, u->pid, &thread_callbacks, u);
    return u->attached ? 0 : -1;
}

void hk_unwinder_free(hk_unwinder *u) {
    if (!u) return;
    dwfl_end(u->dwfl);
    free(u->debug_path);
    free(u);
}

static int frame_cb(Dwfl_Frame *frame, void *arg) {
    struct hk_unwinder *u = arg;
    Dwarf_Addr pc;
    if (!dwfl_frame_pc(frame, &pc, NULL)) return DWARF_CB_ABORT;
    u->pcs[u->count++] = pc;
    return u->count < u->max ? DWARF_CB_OK : DWARF_CB_ABORT;
}

int hk_unwind(hk_unwinder *u, int tid, uint64_t pc, uint64_t rsp, uint64_t rbp,
              uint64_t base, const uint8_t *bytes, size_t len, uint64_t *pcs, int max, int *complete) {
    *complete = 0;
    if (!u->attached || max <= 0) return 0;
    u->tid = tid;
    u->pc = pc; u->rsp = rsp; u->rbp = rbp;
    u->base = base; u->bytes = bytes; u->len = len;
    u->pcs = pcs; u->max = max; u->count = 0; u->missed = 0;
    int rc = dwfl_getthread_frames(u->dwfl, tid, frame_cb, u);
    // 0: the walk ended at a frame whose caller is undefined: the outermost (_start, clone's
    // child), or one whose return address libdw could not read (it then calls the caller
    // undefined too), which `missed` tells apart.
    *complete = rc == 0 && !u->missed;
    if (u->count == 0) pcs[u->count++] = pc;
    return u->count;
}
