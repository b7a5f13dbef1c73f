// Demangling (libiberty's cplus_demangle): C++ (Itanium ABI) and Rust (legacy and v0) names.
#ifndef HK_DEMANGLE_H
#define HK_DEMANGLE_H

/// cplus_demangle(name, DMGL_AUTO | DMGL_ANSI, plus DMGL_PARAMS when `with_params`): the
/// readable name, in memory the caller frees with free(); NULL when `name` is not a mangled
/// name the library knows. Without parameters, a function's name stops before its parameter
/// list (`Server::handle`, not `Server::handle(int)`).
char *hk_demangle(const char *name, int with_params);

#endif
