#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "exitcode.h"
#include "log.h"

int log_level_max = LOG_INFO;

static void vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	/* One fprintf per line under flockfile so vCPU threads don't interleave. */
	static const char *const prefix[] = { "error: ", "warning: ", "", "debug: " };
	flockfile(stderr);
	fprintf(stderr, "hyve: %s", prefix[lvl]);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

void logmsg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;
	if ((int)lvl > log_level_max)
		return;
	va_start(ap, fmt);
	vlog(lvl, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap);
	va_end(ap);
	exit(HYVE_EXIT_ERROR);
}
