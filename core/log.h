/* Logging: one line per message on stderr, prefixed "hyve: ". */
#ifndef HYVE_LOG_H
#define HYVE_LOG_H

#include <stdarg.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };
extern int log_level_max;   /* messages above this level are dropped */

void logmsg(enum log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define log_err(...)   logmsg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  logmsg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  logmsg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) logmsg(LOG_DEBUG, __VA_ARGS__)

/* Print one error line and exit with status 4 (bhyve's "error"). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
