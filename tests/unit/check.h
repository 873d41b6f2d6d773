/*
 * The unit tests' check: CHECK(cond, fmt, ...) prints "ok - MSG" or
 * "FAIL - MSG (file:line)" (tests/run.sh shows the lines that are not ok)
 * and counts; check_summary() prints the counts and gives the exit status.
 * Output goes to check_fd, which a test that redirects stdout (dup2) keeps
 * pointing at the real one.
 */
#ifndef HYVE_UNIT_CHECK_H
#define HYVE_UNIT_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

static int check_fd = STDOUT_FILENO;
static int nchecks, nfailed;

static void check_at(bool ok, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5), unused));
static void check_at(bool ok, const char *file, int line, const char *fmt, ...)
{
	char msg[640];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	nchecks++;
	if (ok) {
		dprintf(check_fd, "ok - %s\n", msg);
	} else {
		nfailed++;
		dprintf(check_fd, "FAIL - %s (%s:%d)\n", msg, file, line);
	}
}
#define CHECK(cond, ...) check_at((cond), __FILE__, __LINE__, __VA_ARGS__)

static int __attribute__((unused)) check_summary(void)
{
	dprintf(check_fd, "%d checks, %d failed\n", nchecks, nfailed);
	return nfailed ? 1 : 0;
}

#endif
