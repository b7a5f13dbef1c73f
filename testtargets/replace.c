// Replacement functions for hookit's `replace` attachments (libreplace.so), for hooktarget's
// `long add(long, long)`.
#include "hookit.h"

// hookit finds this pointer by name and fills it with the original add before my_add runs.
HOOKIT_ORIGINAL(add, long, (long, long));

// Calls the original: add A B then answers A + B + 1000.
__attribute__((visibility("default"))) long my_add(long a, long b) {
    return hookit_original_add ? hookit_original_add(a, b) + 1000 : -1;
}

// Does not call the original: add A B answers A * B (and add's call counter stays put).
__attribute__((visibility("default"))) long my_add_alone(long a, long b) { return a * b; }
