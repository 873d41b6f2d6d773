/*
 * The process sandbox (core/sandbox.c, docs/security.md): no_new_privs and
 * a seccomp filter on every thread, entered once set-up is done.
 */
#ifndef HYVE_SANDBOX_H
#define HYVE_SANDBOX_H

#include <stddef.h>

/* MODE: security.seccomp's value (NULL: kill; log in sanitizer builds).  0, or -1 with err. */
int sandbox_enter(const char *mode, char *err, size_t errlen);

#endif
