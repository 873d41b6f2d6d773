/*
 * GDB remote serial protocol: framing and command handling (interface in
 * gdb_proto.h).  Every number, length and thread id in a packet is
 * client-controlled: each is parsed with bounds and checked before use; a
 * malformed packet gets "E22" and changes nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gdb_proto.h"

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static const char hexdigits[] = "0123456789abcdef";

/* ---- framing ---- */

enum { R_IDLE, R_DATA, R_SUM1, R_SUM2 };

void gdb_reader_init(struct gdb_reader *r)
{
	memset(r, 0, sizeof(*r));
}

enum gdb_input gdb_reader_feed(struct gdb_reader *r, uint8_t b)
{
	switch (r->state) {
	case R_IDLE:
		if (b == '$') {
			r->state = R_DATA;
			r->len = 0;
			r->sum = 0;
			r->overflow = false;
		} else if (b == 0x03) {
			return GDB_IN_INTERRUPT;
		} else if (b == '+') {
			return GDB_IN_ACK;
		} else if (b == '-') {
			return GDB_IN_NACK;
		}
		return GDB_IN_NONE;   /* noise between packets */
	case R_DATA:
		if (b == '#') {
			r->state = R_SUM1;
		} else if (b == '$') {
			r->len = 0;       /* a new packet: the client gave up on the last one */
			r->sum = 0;
			r->overflow = false;
		} else {
			r->sum = (uint8_t)(r->sum + b);
			if (r->len < GDB_PACKET_MAX)
				r->buf[r->len++] = (char)b;
			else
				r->overflow = true;
		}
		return GDB_IN_NONE;
	case R_SUM1: {
		int v = hexval(b);
		if (v < 0) {
			r->state = R_IDLE;
			return GDB_IN_BAD;
		}
		r->got = (uint8_t)(v << 4);
		r->state = R_SUM2;
		return GDB_IN_NONE;
	}
	default: {
		int v = hexval(b);
		r->state = R_IDLE;
		if (v < 0 || r->overflow || (uint8_t)(r->got | v) != r->sum)
			return GDB_IN_BAD;
		r->buf[r->len] = '\0';
		return GDB_IN_PACKET;
	}
	}
}

size_t gdb_frame(const char *payload, size_t len, char *out)
{
	size_t o = 0;
	uint8_t sum = 0;
	out[o++] = '$';
	for (size_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)payload[i];
		if (c == '#' || c == '$' || c == '}' || c == '*') {
			out[o++] = '}';
			sum = (uint8_t)(sum + '}');
			c ^= 0x20;
		}
		out[o++] = (char)c;
		sum = (uint8_t)(sum + c);
	}
	out[o++] = '#';
	out[o++] = hexdigits[sum >> 4];
	out[o++] = hexdigits[sum & 15];
	out[o] = '\0';
	return o;
}

/* ---- parsing helpers: p moves over what was read, never past end ---- */

static bool parse_hex(const char **p, const char *end, uint64_t *v)
{
	const char *q = *p;
	uint64_t x = 0;
	int n = 0;
	while (q < end && hexval(*q) >= 0) {
		if (++n > 16)
			return false;
		x = (x << 4) | (uint64_t)hexval(*q++);
	}
	if (n == 0)
		return false;
	*v = x;
	*p = q;
	return true;
}

static bool expect(const char **p, const char *end, char c)
{
	if (*p < end && **p == c) {
		(*p)++;
		return true;
	}
	return false;
}

/* A thread id: hex N, "-1" (all), "0" (any), or "pPID.TID".  Out: vCPU index, -1 all, -2 any. */
static bool parse_tid(const struct gdb_session *s, const char **p, const char *end, int *cpu)
{
	uint64_t v;
	if (expect(p, end, 'p')) {
		if (expect(p, end, '-')) {
			if (!expect(p, end, '1'))
				return false;
		} else if (!parse_hex(p, end, &v)) {
			return false;
		}
		if (!expect(p, end, '.'))
			return false;
	}
	if (expect(p, end, '-')) {
		if (!expect(p, end, '1'))
			return false;
		*cpu = -1;
		return true;
	}
	if (!parse_hex(p, end, &v))
		return false;
	if (v == 0) {
		*cpu = -2;
		return true;
	}
	if (v > (uint64_t)s->ops->ncpus)
		return false;
	*cpu = (int)v - 1;
	return true;
}

static size_t put_hex(char *out, size_t room, const uint8_t *b, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n && o + 2 < room; i++) {
		out[o++] = hexdigits[b[i] >> 4];
		out[o++] = hexdigits[b[i] & 15];
	}
	out[o] = '\0';
	return o;
}

static bool get_hex_bytes(const char *p, size_t nhex, uint8_t *out)
{
	if (nhex % 2)
		return false;
	for (size_t i = 0; i < nhex / 2; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

#define REPLY(...) (snprintf(reply, GDB_PACKET_MAX, __VA_ARGS__), GDB_REPLY)

/* ---- commands ---- */

void gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *opaque)
{
	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->opaque = opaque;
	s->last.kind = GDB_STOP_SIGNAL;
	s->last.signal = 5;
}

void gdb_stop_reply(struct gdb_session *s, const struct gdb_stop *st, char *reply, size_t n)
{
	s->last = *st;
	if (st->kind == GDB_STOP_EXITED) {
		snprintf(reply, n, "W%02x", (unsigned)st->status & 0xff);
		return;
	}
	int cpu = st->cpu >= 0 && st->cpu < s->ops->ncpus ? st->cpu : 0;
	/* The stopped vCPU becomes GDB's current thread, as GDB assumes. */
	s->g_cpu = s->c_cpu = cpu;
	static const char *const wname[] = { [GDB_WP_WRITE] = "watch", [GDB_WP_READ] = "rwatch", [GDB_WP_ACCESS] = "awatch" };
	char why[64] = "";
	switch (st->kind) {
	case GDB_STOP_SWBREAK: snprintf(why, sizeof(why), "swbreak:;"); break;
	case GDB_STOP_HWBREAK: snprintf(why, sizeof(why), "hwbreak:;"); break;
	case GDB_STOP_WATCH:
		if (st->wtype >= GDB_WP_WRITE && st->wtype <= GDB_WP_ACCESS)
			snprintf(why, sizeof(why), "%s:%llx;", wname[st->wtype], (unsigned long long)st->addr);
		break;
	default: break;
	}
	int sig = st->kind == GDB_STOP_SIGNAL ? st->signal & 0xff : 5;
	snprintf(reply, n, "T%02xthread:%x;%s", (unsigned)sig, (unsigned)cpu + 1, why);
}

static enum gdb_action read_all_regs(struct gdb_session *s, char *reply)
{
	uint8_t val[64];
	size_t o = 0;
	for (int n = 0;; n++) {
		int size = s->ops->reg_read(s->opaque, s->g_cpu, n, val);
		if (size == 0)
			break;
		if (size < 0) {
			/* Unavailable: "xx" per byte; the size is the one the description gives. */
			size = s->ops->reg_read(s->opaque, -1, n, val);
			if (size <= 0)
				return REPLY("E01");
			if (o + 2 * (size_t)size >= GDB_PACKET_MAX)
				return REPLY("E01");
			memset(reply + o, 'x', 2 * (size_t)size);
			o += 2 * (size_t)size;
			continue;
		}
		if (size > (int)sizeof(val) || o + 2 * (size_t)size >= GDB_PACKET_MAX)
			return REPLY("E01");
		o += put_hex(reply + o, GDB_PACKET_MAX - o, val, (size_t)size);
	}
	reply[o] = '\0';
	return GDB_REPLY;
}

static enum gdb_action write_all_regs(struct gdb_session *s, const char *p, const char *end, char *reply)
{
	uint8_t cur[64], val[64];
	for (int n = 0; p < end; n++) {
		int size = s->ops->reg_read(s->opaque, s->g_cpu, n, cur);
		if (size == 0)
			break;
		if (size < 0 || size > (int)sizeof(cur))
			return REPLY("E01");
		if ((size_t)(end - p) < 2 * (size_t)size)
			break;   /* GDB may send fewer registers than we describe */
		if (p[0] == 'x') {   /* left unavailable */
			p += 2 * size;
			continue;
		}
		if (!get_hex_bytes(p, 2 * (size_t)size, val))
			return REPLY("E22");
		p += 2 * size;
		/* Only what changed: a segment selector or control register is
		 * not rewritten because GDB sent the whole file back. */
		if (memcmp(cur, val, (size_t)size) && s->ops->reg_write(s->opaque, s->g_cpu, n, val, size))
			return REPLY("E01");
	}
	return REPLY("OK");
}

static enum gdb_action mem_packet(struct gdb_session *s, char kind, const char *p, const char *end, char *reply)
{
	uint64_t addr, len;
	static uint8_t buf[GDB_MEM_MAX];
	if (!parse_hex(&p, end, &addr) || !expect(&p, end, ',') || !parse_hex(&p, end, &len))
		return REPLY("E22");
	if (kind == 'm') {
		if (p != end)
			return REPLY("E22");
		if (len > GDB_MEM_MAX)
			len = GDB_MEM_MAX;   /* GDB reads the rest with the next packet */
		if (len == 0)
			return REPLY("%s", "");
		size_t got = s->ops->mem_read(s->opaque, s->g_cpu, addr, buf, (size_t)len);
		if (got == 0)
			return REPLY("E14");
		put_hex(reply, GDB_PACKET_MAX, buf, got);
		return GDB_REPLY;
	}
	if (!expect(&p, end, ':') || len > GDB_MEM_MAX)
		return REPLY("E22");
	size_t n = 0;
	if (kind == 'M') {
		if ((size_t)(end - p) != 2 * len || !get_hex_bytes(p, 2 * (size_t)len, buf))
			return REPLY("E22");
		n = (size_t)len;
	} else {   /* X: binary, '}' escapes the next byte */
		while (p < end && n < GDB_MEM_MAX) {
			uint8_t c = (uint8_t)*p++;
			if (c == '}') {
				if (p == end)
					return REPLY("E22");
				c = (uint8_t)(*p++ ^ 0x20);
			}
			buf[n++] = c;
		}
		if (p != end || n != len)
			return REPLY("E22");
	}
	if (n == 0)
		return REPLY("OK");   /* GDB's probe for X support */
	if (s->ops->mem_write(s->opaque, s->g_cpu, addr, buf, n) != n)
		return REPLY("E14");
	return REPLY("OK");
}

static enum gdb_action bp_packet(struct gdb_session *s, bool insert, const char *p, const char *end, char *reply)
{
	uint64_t type, addr, kind;
	if (!parse_hex(&p, end, &type) || !expect(&p, end, ',') || !parse_hex(&p, end, &addr) ||
	    !expect(&p, end, ',') || !parse_hex(&p, end, &kind))
		return REPLY("E22");
	/* Conditions and commands (";X...") are GDB-side evaluation hints: not offered, ignored. */
	if (type > GDB_WP_ACCESS)
		return REPLY("%s", "");
	int rc = insert ? s->ops->bp_insert(s->opaque, s->g_cpu, (enum gdb_bp_type)type, addr, kind)
	                : s->ops->bp_remove(s->opaque, s->g_cpu, (enum gdb_bp_type)type, addr, kind);
	if (rc == 0)
		return REPLY("OK");
	return REPLY("E%02x", errno > 0 && errno < 256 ? errno : 1);
}

/* vCont;ACTION[:TID];... -> run[] (the leftmost action naming a vCPU wins). */
static enum gdb_action vcont(struct gdb_session *s, const char *p, const char *end, char *reply)
{
	enum gdb_run run[256];
	bool set[256];
	int n = s->ops->ncpus;
	if (n < 1 || n > 256)
		return REPLY("E22");
	memset(set, 0, sizeof(set));
	while (p < end) {
		if (!expect(&p, end, ';') || p == end)
			return REPLY("E22");
		char a = *p++;
		uint64_t sig;
		enum gdb_run r;
		if (a == 'c' || a == 's') {
			r = a == 'c' ? GDB_RUN_CONTINUE : GDB_RUN_STEP;
		} else if (a == 'C' || a == 'S') {
			/* Signals have no meaning for a VM: continue/step without one. */
			if (!parse_hex(&p, end, &sig))
				return REPLY("E22");
			r = a == 'C' ? GDB_RUN_CONTINUE : GDB_RUN_STEP;
		} else {
			return REPLY("%s", "");   /* 't', 'r': not offered */
		}
		int cpu = -1;
		if (expect(&p, end, ':') && !parse_tid(s, &p, end, &cpu))
			return REPLY("E22");
		for (int i = 0; i < n; i++) {
			if ((cpu < 0 || cpu == i) && !set[i]) {
				run[i] = r;
				set[i] = true;
			}
		}
	}
	for (int i = 0; i < n; i++)
		if (!set[i])
			run[i] = GDB_RUN_STOP;
	s->ops->resume(s->opaque, run);
	return GDB_RESUMED;
}

/* Plain c/s/C/S: the Hc thread (or the last stopped one) continues or steps; the others continue. */
static enum gdb_action resume_simple(struct gdb_session *s, bool step, const char *p, const char *end, char *reply)
{
	enum gdb_run run[256];
	uint64_t v;
	int n = s->ops->ncpus;
	if (n < 1 || n > 256)
		return REPLY("E22");
	if (p < end && !parse_hex(&p, end, &v))   /* signal or address: ignored */
		return REPLY("E22");
	for (int i = 0; i < n; i++)
		run[i] = GDB_RUN_CONTINUE;
	if (step)
		run[s->c_cpu] = GDB_RUN_STEP;
	s->ops->resume(s->opaque, run);
	return GDB_RESUMED;
}

static bool starts(const char *pkt, const char *end, const char *prefix)
{
	size_t n = strlen(prefix);
	return (size_t)(end - pkt) >= n && memcmp(pkt, prefix, n) == 0;
}

static enum gdb_action xfer_features(struct gdb_session *s, const char *p, const char *end, char *reply)
{
	uint64_t off, len;
	const char *annex = "target.xml:";
	if (!starts(p, end, annex))
		return REPLY("E00");
	p += strlen(annex);
	if (!parse_hex(&p, end, &off) || !expect(&p, end, ',') || !parse_hex(&p, end, &len) || p != end)
		return REPLY("E22");
	const char *xml = s->ops->target_xml;
	size_t total = strlen(xml);
	if (off >= total)
		return REPLY("l");
	/* Framing may double a character: keep the payload within half the packet. */
	size_t n = total - (size_t)off;
	if (n > len)
		n = (size_t)len;
	if (n > GDB_PACKET_MAX / 2 - 2)
		n = GDB_PACKET_MAX / 2 - 2;
	reply[0] = off + n < total ? 'm' : 'l';
	memcpy(reply + 1, xml + off, n);
	reply[n + 1] = '\0';
	return GDB_REPLY;
}

static enum gdb_action query(struct gdb_session *s, const char *pkt, const char *end, char *reply)
{
	if (starts(pkt, end, "qSupported"))
		return REPLY("PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+",
		             GDB_PACKET_MAX);
	if (starts(pkt, end, "qXfer:features:read:"))
		return xfer_features(s, pkt + strlen("qXfer:features:read:"), end, reply);
	if (starts(pkt, end, "qfThreadInfo")) {
		size_t o = (size_t)snprintf(reply, GDB_PACKET_MAX, "m");
		for (int i = 0; i < s->ops->ncpus && o < GDB_PACKET_MAX - 20; i++)
			o += (size_t)snprintf(reply + o, GDB_PACKET_MAX - o, "%s%x", i ? "," : "", (unsigned)i + 1);
		return GDB_REPLY;
	}
	if (starts(pkt, end, "qsThreadInfo"))
		return REPLY("l");
	if (end - pkt == 2 && starts(pkt, end, "qC"))
		return REPLY("QC%x", (unsigned)s->g_cpu + 1);
	if (starts(pkt, end, "qAttached"))
		return REPLY("1");   /* attached to a running VM: detach, not kill, on quit */
	if (starts(pkt, end, "qThreadExtraInfo,")) {
		const char *p = pkt + strlen("qThreadExtraInfo,");
		int cpu;
		if (!parse_tid(s, &p, end, &cpu) || cpu < 0 || p != end)
			return REPLY("E22");
		char text[32];
		int n = snprintf(text, sizeof(text), "vCPU %d", cpu);
		put_hex(reply, GDB_PACKET_MAX, (const uint8_t *)text, (size_t)n);
		return GDB_REPLY;
	}
	if (starts(pkt, end, "qSymbol"))
		return REPLY("OK");
	return REPLY("%s", "");
}

enum gdb_action gdb_handle_packet(struct gdb_session *s, const char *pkt, size_t len, char *reply)
{
	const char *end = pkt + len, *p = pkt + 1;
	uint64_t n;
	int cpu;
	reply[0] = '\0';
	if (len == 0)
		return GDB_REPLY;
	switch (pkt[0]) {
	case '?': {
		struct gdb_stop st = s->last;
		gdb_stop_reply(s, &st, reply, GDB_PACKET_MAX);
		return GDB_REPLY;
	}
	case 'g':
		return read_all_regs(s, reply);
	case 'G':
		return write_all_regs(s, p, end, reply);
	case 'p': {
		uint8_t val[64];
		if (!parse_hex(&p, end, &n) || p != end || n > 1024)
			return REPLY("E22");
		int size = s->ops->reg_read(s->opaque, s->g_cpu, (int)n, val);
		if (size <= 0 || size > (int)sizeof(val))
			return REPLY("E%02x", size == 0 ? 0x16 : 1);
		put_hex(reply, GDB_PACKET_MAX, val, (size_t)size);
		return GDB_REPLY;
	}
	case 'P': {
		uint8_t cur[64], val[64];
		if (!parse_hex(&p, end, &n) || !expect(&p, end, '=') || n > 1024)
			return REPLY("E22");
		int size = s->ops->reg_read(s->opaque, s->g_cpu, (int)n, cur);
		if (size <= 0 || size > (int)sizeof(cur))
			return REPLY("E%02x", size == 0 ? 0x16 : 1);
		if ((size_t)(end - p) != 2 * (size_t)size || !get_hex_bytes(p, 2 * (size_t)size, val))
			return REPLY("E22");
		return REPLY(s->ops->reg_write(s->opaque, s->g_cpu, (int)n, val, size) ? "E01" : "OK");
	}
	case 'm': case 'M': case 'X':
		return mem_packet(s, pkt[0], p, end, reply);
	case 'Z': case 'z':
		return bp_packet(s, pkt[0] == 'Z', p, end, reply);
	case 'c': case 'C': case 's': case 'S':
		return resume_simple(s, pkt[0] == 's' || pkt[0] == 'S', p, end, reply);
	case 'H':
		if (p == end || (*p != 'g' && *p != 'c'))
			return REPLY("E22");
		p++;
		if (!parse_tid(s, &p, end, &cpu) || p != end)
			return REPLY("E22");
		if (cpu >= 0) {
			if (pkt[1] == 'g')
				s->g_cpu = cpu;
			else
				s->c_cpu = cpu;
		}
		return REPLY("OK");
	case 'T':
		if (!parse_tid(s, &p, end, &cpu) || p != end || cpu < 0)
			return REPLY("E22");
		return REPLY("OK");
	case 'D':
		s->ops->detach(s->opaque);
		snprintf(reply, GDB_PACKET_MAX, "OK");
		return GDB_DETACHED;
	case 'k':
		s->ops->kill(s->opaque);
		return GDB_KILLED;
	case 'q':
		return query(s, pkt, end, reply);
	case 'Q':
		if (starts(pkt, end, "QStartNoAckMode") && len == strlen("QStartNoAckMode")) {
			s->no_ack = true;
			return REPLY("OK");
		}
		return REPLY("%s", "");
	case 'v':
		if (len == 6 && starts(pkt, end, "vCont?"))
			return REPLY("vCont;c;C;s;S");
		if (starts(pkt, end, "vCont;"))
			return vcont(s, pkt + 5, end, reply);
		if (starts(pkt, end, "vKill")) {
			s->ops->kill(s->opaque);
			snprintf(reply, GDB_PACKET_MAX, "OK");
			return GDB_DETACHED;
		}
		return REPLY("%s", "");
	default:
		return REPLY("%s", "");
	}
}
