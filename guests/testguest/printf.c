/*
 * Small printf.  Formatting happens into a stack buffer first and the whole
 * line is written under a spinlock, so lines from different CPUs (or from a
 * CPL3 loop and the kernel) do not interleave.
 */
#include "kernel.h"
#include <stdarg.h>

struct sink {
	char *buf;
	size_t pos, cap;
};

static void put(struct sink *s, char c)
{
	if (s->pos + 1 < s->cap)
		s->buf[s->pos] = c;
	s->pos++;
}

static void put_num(struct sink *s, u64 v, int base, bool neg, int width,
		    char pad, bool left, bool upper)
{
	char tmp[24];
	int n = 0, len;
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	len = n + (neg ? 1 : 0);
	if (left)
		pad = ' ';
	if (neg && pad == '0')	/* sign goes before zero padding */
		put(s, '-');
	if (!left)
		for (int i = len; i < width; i++)
			put(s, pad);
	if (neg && pad != '0')
		put(s, '-');
	while (n)
		put(s, tmp[--n]);
	if (left)
		for (int i = len; i < width; i++)
			put(s, ' ');
}

static void vformat(struct sink *s, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			put(s, *fmt);
			continue;
		}
		fmt++;
		bool left = false;
		char pad = ' ';
		int width = 0, lng = 0;
		for (;; fmt++) {
			if (*fmt == '-')
				left = true;
			else if (*fmt == '0')
				pad = '0';
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng++;
			fmt++;
		}
		switch (*fmt) {
		case 'd': {
			s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);
			put_num(s, v < 0 ? -(u64)v : (u64)v, 10, v < 0, width, pad, left, false);
			break;
		}
		case 'u':
			put_num(s, lng ? va_arg(ap, u64) : va_arg(ap, u32), 10, false, width, pad, left, false);
			break;
		case 'x':
		case 'X':
			put_num(s, lng ? va_arg(ap, u64) : va_arg(ap, u32), 16, false, width, pad, left, *fmt == 'X');
			break;
		case 'p':
			put(s, '0');
			put(s, 'x');
			put_num(s, (u64)va_arg(ap, void *), 16, false, width, pad, left, false);
			break;
		case 'c':
			put(s, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);
			int len;
			if (!str)
				str = "(null)";
			len = (int)strlen(str);
			if (!left)
				for (int i = len; i < width; i++)
					put(s, ' ');
			while (*str)
				put(s, *str++);
			if (left)
				for (int i = len; i < width; i++)
					put(s, ' ');
			break;
		}
		case '%':
			put(s, '%');
			break;
		default:
			put(s, '%');
			put(s, *fmt);
			if (!*fmt)
				return;
		}
	}
}

int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap)
{
	struct sink s = { buf, 0, n };
	vformat(&s, fmt, ap);
	if (n)
		buf[s.pos < n ? s.pos : n - 1] = 0;
	return (int)s.pos;
}

int snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return r;
}

static spinlock_t console_lock;

void puts_nolock(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

int printf(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	spin_lock(&console_lock);
	puts_nolock(buf);
	spin_unlock(&console_lock);
	return r;
}

/* For fatal paths that may interrupt a lock holder. */
int printf_nolock(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	puts_nolock(buf);
	return r;
}
