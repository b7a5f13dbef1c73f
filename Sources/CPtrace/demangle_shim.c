// libiberty's demangler rather than libstdc++'s __cxa_demangle: it reads Rust names as well as
// C++ ones (DMGL_AUTO tries Rust first: legacy Rust names look like C++ ones), and it can leave
// a function's parameter list out, which is the name patterns match (`Server::handle*`);
// __cxa_demangle knows C++ only and always prints the parameters.
#include "hk_demangle.h"
#include <libiberty/demangle.h>

char *hk_demangle(const char *name, int with_params) {
    return cplus_demangle(name, DMGL_AUTO | DMGL_ANSI | (with_params ? DMGL_PARAMS : 0));
}
