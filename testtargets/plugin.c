// A library for `hookit inject`: the target finds plugin_answer with dlsym once it is loaded.
#include <stdatomic.h>

static atomic_int constructed;

__attribute__((constructor)) static void plugin_init(void) { atomic_store(&constructed, 1); }

long plugin_answer(long x) { return atomic_load(&constructed) ? 4200 + x : -1; }
