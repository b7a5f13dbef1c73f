// A library that cannot load: it needs a symbol nothing defines, so dlopen(RTLD_NOW) fails
// in the tracee and hookit must print the tracee's own dlerror() text.
extern long hookit_symbol_that_does_not_exist(long);
long broken_answer(long x) { return hookit_symbol_that_does_not_exist(x); }
