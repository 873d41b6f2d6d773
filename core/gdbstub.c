/*
 * GDB remote stub: socket, breakpoints and run control (gdbstub.h).
 *
 * One thread serves one debugger at a time.  Stops are all-stop: a vCPU
 * that hits a breakpoint, finishes a step or trips a watchpoint records
 * the event and holds every vCPU (vcpus_debug_hold); the stub thread waits
 * until all are out of the guest, then reports.  Events several vCPUs hit
 * at once are kept and reported one by one: a resume with events still
 * pending reports the next one without running the guest.  A step runs
 * only the stepping vCPU; the others stay stopped (GDB's "scheduler-locking
 * step" behaviour, whatever GDB asked for the other threads).
 *
 * Breakpoints: Z0 patches INT3 into guest memory (at the guest-physical
 * address it had when inserted, so removing it needs no page walk) and
 * KVM_GUESTDBG_USE_SW_BP makes KVM report it; an INT3 of the guest's own
 * is handed back to the guest as #BP.  Z1-Z4 use the four debug
 * registers through KVM_GUESTDBG_USE_HW_BP (x86 has no read-only
 * watchpoint: Z3 watches reads and writes).  On emulating hosts an INT3 at
 * CPL0 comes back as an emulation failure instead; gdb_vcpu_emul_fail
 * turns the debugger's own into stops.  Detach or a vanished client
 * removes every breakpoint and lets the guest go on.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "exitcode.h"
#include "gdb_proto.h"
#include "gdbstub.h"
#include "log.h"
#include "netlisten.h"
#include "sandbox.h"
#include "vcpu_regs.h"
#include "vmstate.h"

#define MAX_SW_BP 256
#define NUM_HW_BP 4
#define DR6_BS (1u << 14)

struct sw_bp {
	uint64_t addr, gpa;
	uint8_t orig;
	int refs;
};

struct hw_bp {
	bool used;
	enum gdb_bp_type type;
	uint64_t addr, len;
};

static struct {
	struct hyve_vm *vm;
	int listen_fd, event_fd;
	pthread_t thread;
	atomic_bool attached;
	bool started;
	uint32_t extra_flags;             /* KVM_GUESTDBG_BLOCKIRQ when KVM has it */

	pthread_mutex_t mtx;              /* below: shared with the vCPU threads */
	int stepping;                     /* vCPU being single-stepped, -1 */
	bool has_event[HYVE_MAX_VCPUS];
	struct gdb_stop event[HYVE_MAX_VCPUS];
	struct sw_bp sw[MAX_SW_BP];
	int nsw;
	struct hw_bp hw[NUM_HW_BP];

	/* Stub thread only. */
	struct vcpu_regfile rf[HYVE_MAX_VCPUS];
	bool rf_valid[HYVE_MAX_VCPUS];
} g = { .listen_fd = -1, .event_fd = -1, .stepping = -1, .mtx = PTHREAD_MUTEX_INITIALIZER };

bool gdb_attached(void)
{
	return atomic_load(&g.attached);
}

/* Software breakpoints are INT3 bytes in guest RAM: they would be saved with it. */
static bool blocks_saving(char *err, size_t errlen)
{
	if (!gdb_attached())
		return false;
	snprintf(err, errlen, "a debugger is attached (-G): detach it first");
	return true;
}

/* ---- option and listening socket ---- */

int gdb_parse_option(const char *opt, char *err, size_t errlen)
{
	const char *p = opt, *port;
	char addr[256] = "";
	bool wait = false;
	if (*p == 'w') {
		wait = true;
		p++;
	}
	if (*p == '[') {   /* [IPv6]:PORT */
		const char *close = strchr(p, ']');
		if (!close || close[1] != ':' || (size_t)(close - p - 1) >= sizeof(addr)) {
			snprintf(err, errlen, "-G %s: expected [w][ADDRESS:]PORT", opt);
			return -1;
		}
		memcpy(addr, p + 1, (size_t)(close - p - 1));
		port = close + 2;
	} else if ((port = strrchr(p, ':')) != NULL) {
		if ((size_t)(port - p) >= sizeof(addr) || port == p) {
			snprintf(err, errlen, "-G %s: expected [w][ADDRESS:]PORT", opt);
			return -1;
		}
		memcpy(addr, p, (size_t)(port - p));
		port++;
	} else {
		port = p;
	}
	char *end;
	errno = 0;
	unsigned long n = strtoul(port, &end, 10);
	if (!*port || *end || errno || n == 0 || n > 65535) {
		snprintf(err, errlen, "-G %s: the port must be a number from 1 to 65535", opt);
		return -1;
	}
	char num[8];
	snprintf(num, sizeof(num), "%lu", n);
	set_config_value("gdb.port", num);
	if (addr[0])
		set_config_value("gdb.address", addr);
	if (wait)
		set_config_value("gdb.wait", "true");
	return 0;
}

/* ---- breakpoints ---- */

static struct sw_bp *find_sw(uint64_t addr)
{
	for (int i = 0; i < g.nsw; i++)
		if (g.sw[i].addr == addr)
			return &g.sw[i];
	return NULL;
}

static int sw_insert(int cpu, uint64_t addr)
{
	struct sw_bp *bp = find_sw(addr);
	if (bp) {
		bp->refs++;
		return 0;
	}
	if (g.nsw == MAX_SW_BP) {
		errno = ENOSPC;
		return -1;
	}
	uint64_t gpa;
	if (vcpu_translate(g.vm->vcpu[cpu], addr, &gpa))
		return -1;
	uint8_t *p = vm_map_gpa(g.vm->ctx, gpa, 1);
	if (!p) {
		errno = EFAULT;
		return -1;
	}
	bp = &g.sw[g.nsw++];
	bp->addr = addr;
	bp->gpa = gpa;
	bp->orig = *p;
	bp->refs = 1;
	*p = 0xcc;
	vm_mark_dirty(g.vm->ctx, gpa, 1);
	return 0;
}

static void sw_restore(struct sw_bp *bp)
{
	uint8_t *p = vm_map_gpa(g.vm->ctx, bp->gpa, 1);
	/* Only our INT3: the guest may have rewritten the byte since. */
	if (p && *p == 0xcc) {
		*p = bp->orig;
		vm_mark_dirty(g.vm->ctx, bp->gpa, 1);
	}
	*bp = g.sw[--g.nsw];
}

static int sw_remove(uint64_t addr)
{
	struct sw_bp *bp = find_sw(addr);
	if (!bp) {
		errno = ENOENT;
		return -1;
	}
	if (--bp->refs == 0)
		sw_restore(bp);
	return 0;
}

static int hw_insert(enum gdb_bp_type type, uint64_t addr, uint64_t len)
{
	if (type == GDB_BP_HW)
		len = 1;
	if ((len != 1 && len != 2 && len != 4 && len != 8) || (addr & (len - 1))) {
		errno = EINVAL;
		return -1;
	}
	for (int i = 0; i < NUM_HW_BP; i++) {
		if (!g.hw[i].used) {
			g.hw[i] = (struct hw_bp){ true, type, addr, len };
			return 0;
		}
	}
	errno = ENOSPC;
	return -1;
}

static int hw_remove(enum gdb_bp_type type, uint64_t addr, uint64_t len)
{
	if (type == GDB_BP_HW)
		len = 1;
	for (int i = 0; i < NUM_HW_BP; i++) {
		if (g.hw[i].used && g.hw[i].type == type && g.hw[i].addr == addr && g.hw[i].len == len) {
			g.hw[i].used = false;
			return 0;
		}
	}
	errno = ENOENT;
	return -1;
}

/* DR7 for the hardware breakpoints: global enable, R/W and LEN fields per slot. */
static uint64_t hw_dr7(uint64_t dr[4])
{
	uint64_t dr7 = 0x600;   /* GE, and bit 10 which reads as one */
	for (int i = 0; i < NUM_HW_BP; i++) {
		dr[i] = 0;
		if (!g.hw[i].used)
			continue;
		static const uint8_t lenbits[9] = { [1] = 0, [2] = 1, [4] = 3, [8] = 2 };
		uint64_t rw = g.hw[i].type == GDB_BP_HW ? 0 : g.hw[i].type == GDB_WP_WRITE ? 1 : 3;
		uint64_t ln = g.hw[i].type == GDB_BP_HW ? 0 : lenbits[g.hw[i].len];
		dr[i] = g.hw[i].addr;
		dr7 |= 2ULL << (2 * i);
		dr7 |= (rw | ln << 2) << (16 + 4 * i);
	}
	return dr7;
}

/* Guest debug state of every vCPU for the next run; step: the vCPU to single-step, or -1. */
static int apply_guest_debug(int step)
{
	uint64_t dr[4];
	uint64_t dr7 = hw_dr7(dr);
	bool any_hw = dr7 != 0x600;
	for (int i = 0; i < g.vm->ncpus; i++) {
		uint32_t flags = 0;
		if (atomic_load(&g.attached)) {
			flags = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
			if (any_hw)
				flags |= KVM_GUESTDBG_USE_HW_BP;
			if (i == step)
				flags |= KVM_GUESTDBG_SINGLESTEP | g.extra_flags;
		}
		if (vcpu_set_guest_debug(g.vm->vcpu[i], flags, dr, any_hw ? dr7 : 0)) {
			log_warn("gdb: vCPU %d: KVM_SET_GUEST_DEBUG: %s", i, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* ---- events from vCPU threads ---- */

static void record_stop(int cpu, const struct gdb_stop *ev)
{
	pthread_mutex_lock(&g.mtx);
	g.event[cpu] = *ev;
	g.event[cpu].cpu = cpu;
	g.has_event[cpu] = true;
	if (g.stepping == cpu)
		g.stepping = -1;
	pthread_mutex_unlock(&g.mtx);
	vcpus_debug_hold(g.vm, true, -1);
	uint64_t one = 1;
	(void)!write(g.event_fd, &one, sizeof(one));
}

int gdb_vcpu_debug_exit(struct vcpu *vcpu, const struct vm_exit *vme)
{
	int cpu = vcpu_id(vcpu);
	struct gdb_stop ev = { .kind = GDB_STOP_SIGNAL, .signal = 5 };
	log_debug("gdb: vCPU %d: debug exit, exception %u pc %#llx dr6 %#llx", cpu, vme->u.debug.exception,
	          (unsigned long long)vme->u.debug.pc, (unsigned long long)vme->u.debug.dr6);
	if (vme->u.debug.exception == 3) {
		pthread_mutex_lock(&g.mtx);
		bool ours = atomic_load(&g.attached) && find_sw(vme->u.debug.pc) != NULL;
		pthread_mutex_unlock(&g.mtx);
		if (!ours) {
			/* The guest's own INT3: deliver the #BP it expects, after the instruction (a trap). */
			struct kvm_regs r;
			if (vcpu_get_regs(vcpu, &r))
				return -1;
			r.rip++;
			return vcpu_set_regs(vcpu, &r) || vcpu_inject_exception(vcpu, 3, false, 0) ? -1 : 0;
		}
		ev.kind = GDB_STOP_SWBREAK;
	} else if (vme->u.debug.exception == 1) {
		uint64_t dr6 = vme->u.debug.dr6;
		pthread_mutex_lock(&g.mtx);
		for (int i = 0; i < NUM_HW_BP; i++) {
			if ((dr6 & (1u << i)) && g.hw[i].used) {
				ev.kind = g.hw[i].type == GDB_BP_HW ? GDB_STOP_HWBREAK : GDB_STOP_WATCH;
				ev.wtype = g.hw[i].type;
				ev.addr = g.hw[i].addr;
				break;
			}
		}
		pthread_mutex_unlock(&g.mtx);
		if (ev.kind == GDB_STOP_SIGNAL && !(dr6 & DR6_BS) && !atomic_load(&g.attached))
			return -1;
	} else {
		return -1;
	}
	if (!atomic_load(&g.attached))
		return 0;   /* a late stop after detach: let the vCPU go on */
	record_stop(cpu, &ev);
	return 0;
}

bool gdb_vcpu_emul_fail(struct vcpu *vcpu, const struct vm_exit *vme)
{
	if (!atomic_load(&g.attached) || vme->u.emul.insn_len < 1 || vme->u.emul.insn[0] != 0xcc)
		return false;
	struct kvm_regs r;
	struct kvm_sregs s;
	if (vcpu_get_regs(vcpu, &r) || vcpu_get_sregs(vcpu, &s))
		return false;
	pthread_mutex_lock(&g.mtx);
	bool ours = find_sw(s.cs.base + r.rip) != NULL;
	pthread_mutex_unlock(&g.mtx);
	if (!ours)
		return false;
	struct gdb_stop ev = { .kind = GDB_STOP_SWBREAK, .signal = 5 };
	record_stop(vcpu_id(vcpu), &ev);
	return true;
}

/* ---- the target for gdb_proto.c (stub thread, VM stopped) ---- */

static struct vcpu_regfile *regfile(int cpu)
{
	if (!g.rf_valid[cpu]) {
		if (vcpu_regfile_read(g.vm->vcpu[cpu], &g.rf[cpu]))
			return NULL;
		g.rf_valid[cpu] = true;
	}
	return &g.rf[cpu];
}

static int t_reg_read(void *o, int cpu, int n, uint8_t *val)
{
	(void)o;
	if (cpu < 0)
		return vcpu_reg_size(n);
	if (vcpu_reg_size(n) == 0)
		return 0;
	struct vcpu_regfile *rf = regfile(cpu);
	return rf ? vcpu_reg_get(rf, n, val) : -1;
}

static int t_reg_write(void *o, int cpu, int n, const uint8_t *val, int size)
{
	(void)o;
	struct vcpu_regfile *rf = regfile(cpu);
	if (!rf || size != vcpu_reg_size(n) || vcpu_reg_set(rf, n, val))
		return -1;
	if (vcpu_regfile_write(g.vm->vcpu[cpu], rf)) {
		g.rf_valid[cpu] = false;   /* KVM refused: show what it has */
		return -1;
	}
	return 0;
}

static size_t t_mem_read(void *o, int cpu, uint64_t addr, uint8_t *buf, size_t len)
{
	(void)o;
	return vcpu_mem_read(g.vm->vcpu[cpu], addr, buf, len);
}

static size_t t_mem_write(void *o, int cpu, uint64_t addr, const uint8_t *buf, size_t len)
{
	(void)o;
	return vcpu_mem_write(g.vm->vcpu[cpu], addr, buf, len);
}

static int t_bp_insert(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind)
{
	(void)o;
	pthread_mutex_lock(&g.mtx);
	int rc = type == GDB_BP_SW ? sw_insert(cpu, addr) : hw_insert(type, addr, kind);
	pthread_mutex_unlock(&g.mtx);
	return rc;
}

static int t_bp_remove(void *o, int cpu, enum gdb_bp_type type, uint64_t addr, uint64_t kind)
{
	(void)o;
	(void)cpu;
	pthread_mutex_lock(&g.mtx);
	int rc = type == GDB_BP_SW ? sw_remove(addr) : hw_remove(type, addr, kind);
	pthread_mutex_unlock(&g.mtx);
	return rc;
}

static void t_resume(void *o, const enum gdb_run *run)
{
	(void)o;
	uint64_t one = 1;
	pthread_mutex_lock(&g.mtx);
	for (int i = 0; i < g.vm->ncpus; i++) {
		if (g.has_event[i]) {
			/* A stop already happened: report it without running. */
			pthread_mutex_unlock(&g.mtx);
			(void)!write(g.event_fd, &one, sizeof(one));
			return;
		}
	}
	int step = -1;
	for (int i = 0; i < g.vm->ncpus && step < 0; i++)
		if (run[i] == GDB_RUN_STEP)
			step = i;
	g.stepping = step;
	pthread_mutex_unlock(&g.mtx);
	memset(g.rf_valid, 0, sizeof(g.rf_valid));
	apply_guest_debug(step);
	vcpus_debug_hold(g.vm, step >= 0, step);
}

/* Remove what the debugger put into the guest and let it run. */
static void release_guest(void)
{
	pthread_mutex_lock(&g.mtx);
	while (g.nsw)
		sw_restore(&g.sw[g.nsw - 1]);
	memset(g.hw, 0, sizeof(g.hw));
	memset(g.has_event, 0, sizeof(g.has_event));
	g.stepping = -1;
	pthread_mutex_unlock(&g.mtx);
	atomic_store(&g.attached, false);
	apply_guest_debug(-1);
	memset(g.rf_valid, 0, sizeof(g.rf_valid));
	vcpus_debug_hold(g.vm, false, -1);
}

static void t_detach(void *o)
{
	(void)o;
	/* The stub thread releases the guest once the reply is out. */
}

static void t_kill(void *o)
{
	(void)o;
	log_info("gdb: kill requested by the debugger");
	vm_request_exit(HYVE_EXIT_POWEROFF);
}

static struct gdb_target_ops target_ops = {
	.reg_read = t_reg_read,
	.reg_write = t_reg_write,
	.mem_read = t_mem_read,
	.mem_write = t_mem_write,
	.bp_insert = t_bp_insert,
	.bp_remove = t_bp_remove,
	.resume = t_resume,
	.detach = t_detach,
	.kill = t_kill,
	.target_xml = vcpu_target_xml,
};

/* ---- the stub thread ---- */

struct client {
	int fd;
	struct gdb_session s;
	struct gdb_reader r;
	bool running;             /* resumed: a stop reply is owed */
	char last[2 * GDB_PACKET_MAX + 8];   /* last framed reply, for '-' */
	size_t last_len;
	char reply[GDB_PACKET_MAX + 1];
};

static bool send_packet(struct client *c, const char *payload)
{
	c->last_len = gdb_frame(payload, strlen(payload), c->last);
	return net_send_all(c->fd, c->last, c->last_len);
}

/* The VM stopped (or an event was waiting): pick the event to report. */
static bool report_stop(struct client *c)
{
	struct gdb_stop st;
	bool found = false;
	pthread_mutex_lock(&g.mtx);
	for (int i = 0; i < g.vm->ncpus && !found; i++) {
		if (g.has_event[i]) {
			st = g.event[i];
			g.has_event[i] = false;
			found = true;
		}
	}
	pthread_mutex_unlock(&g.mtx);
	if (!found)
		return true;   /* not yet: a spurious wakeup */
	vcpus_debug_wait_parked(g.vm, -1);
	memset(g.rf_valid, 0, sizeof(g.rf_valid));
	c->running = false;
	gdb_stop_reply(&c->s, &st, c->reply, sizeof(c->reply));
	return send_packet(c, c->reply);
}

static void stop_all(void)
{
	vcpus_debug_hold(g.vm, true, -1);
	vcpus_debug_wait_parked(g.vm, -1);
	memset(g.rf_valid, 0, sizeof(g.rf_valid));
	pthread_mutex_lock(&g.mtx);
	g.stepping = -1;
	pthread_mutex_unlock(&g.mtx);
}

/* One debugger session; returns when it detaches, vanishes or the VM ends. */
static void serve(struct client *c)
{
	char buf[4096];
	for (;;) {
		struct pollfd pf[2] = { { c->fd, POLLIN, 0 }, { g.event_fd, POLLIN, 0 } };
		int n = poll(pf, 2, 200);
		int status = vm_exit_requested();
		if (status >= 0) {
			if (c->running) {
				struct gdb_stop st = { .kind = GDB_STOP_EXITED, .status = status };
				gdb_stop_reply(&c->s, &st, c->reply, sizeof(c->reply));
				send_packet(c, c->reply);
			}
			return;
		}
		if (n <= 0)
			continue;
		if (pf[1].revents & POLLIN) {
			uint64_t v;
			(void)!read(g.event_fd, &v, sizeof(v));
			if (c->running && !report_stop(c))
				return;
		}
		if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
		if (got <= 0) {
			if (got < 0 && errno == EINTR)
				continue;
			log_info("gdb: the debugger disconnected");
			return;
		}
		for (ssize_t i = 0; i < got; i++) {
			switch (gdb_reader_feed(&c->r, (uint8_t)buf[i])) {
			case GDB_IN_PACKET: {
				if (!c->s.no_ack && !net_send_all(c->fd, "+", 1))
					return;
				if (c->running) {
					/* All-stop: nothing but ^C is meaningful while the VM runs. */
					if (!send_packet(c, "E01"))
						return;
					break;
				}
				/* Registers are fetched once per packet: hyvectl --set-REG may change them in between. */
				memset(g.rf_valid, 0, sizeof(g.rf_valid));
				enum gdb_action a = gdb_handle_packet(&c->s, c->r.buf, c->r.len, c->reply);
				if (a == GDB_KILLED)
					return;
				if (a == GDB_RESUMED) {
					c->running = true;
					break;
				}
				if (!send_packet(c, c->reply) || a == GDB_DETACHED)
					return;
				break;
			}
			case GDB_IN_BAD:
				if (!c->s.no_ack && !net_send_all(c->fd, "-", 1))
					return;
				break;
			case GDB_IN_NACK:
				if (c->last_len && !net_send_all(c->fd, c->last, c->last_len))
					return;
				break;
			case GDB_IN_INTERRUPT:
				if (c->running) {
					stop_all();
					struct gdb_stop st = { .kind = GDB_STOP_SIGNAL, .signal = 2, .cpu = c->s.c_cpu };
					c->running = false;
					gdb_stop_reply(&c->s, &st, c->reply, sizeof(c->reply));
					if (!send_packet(c, c->reply))
						return;
				}
				break;
			default:
				break;
			}
		}
	}
}

static void *stub_thread(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "hyve-gdb");
	/* Before the first peer: what a debugger (or anyone reaching the port) sends is parsed under the role. */
	sandbox_thread_role(SANDBOX_ROLE_LISTENER);
	static struct client c;
	while (vm_exit_requested() < 0) {
		struct pollfd pf = { g.listen_fd, POLLIN, 0 };
		if (poll(&pf, 1, 200) <= 0)
			continue;
		int fd = accept4(g.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct timeval tv = { 10, 0 };   /* a client that stops reading its replies */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		log_info("gdb: debugger connected");
		/* Stopped while attached: the guest is where GDB first sees it. */
		atomic_store(&g.attached, true);
		stop_all();
		apply_guest_debug(-1);
		memset(&c, 0, sizeof(c));
		c.fd = fd;
		gdb_reader_init(&c.r);
		gdb_session_init(&c.s, &target_ops, NULL);
		serve(&c);
		close(fd);
		if (vm_exit_requested() >= 0)
			break;
		release_guest();
		log_info("gdb: debugger detached, the guest goes on");
	}
	return NULL;
}

static const char *listen_addr(void)
{
	const char *addr = get_config_value("gdb.address");
	return addr && addr[0] ? addr : "127.0.0.1";
}

int gdb_listen(char *err, size_t errlen)
{
	const char *port = get_config_value("gdb.port");
	if (!port || strcmp(port, "0") == 0)
		return 0;
	char why[400];
	g.listen_fd = net_listen_tcp(listen_addr(), port, 1, why, sizeof(why));
	if (g.listen_fd < 0)
		snprintf(err, errlen, "-G: %s", why);
	return g.listen_fd < 0 ? -1 : 0;
}

int gdb_start(struct hyve_vm *vm)
{
	if (g.listen_fd < 0)
		return 0;
	const char *port = get_config_value("gdb.port"), *addr = listen_addr();
	g.vm = vm;
	target_ops.ncpus = vm->ncpus;
	vmstate_add_blocker(blocks_saving);
	g.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g.event_fd < 0) {
		log_err("gdb: eventfd: %s", strerror(errno));
		return -1;
	}
	if (vm_guest_debug_flags(vm->ctx) & KVM_GUESTDBG_BLOCKIRQ)
		g.extra_flags = KVM_GUESTDBG_BLOCKIRQ;   /* a step does not wander into an interrupt handler */
	bool wait = get_config_bool_default("gdb.wait", false);
	if (wait)
		vcpus_debug_hold(vm, true, -1);   /* before the first instruction */
	int rc = pthread_create(&g.thread, NULL, stub_thread, NULL);
	if (rc) {
		log_err("gdb: cannot start the stub thread: %s", strerror(rc));
		return -1;
	}
	g.started = true;
	log_info("gdb: listening on %s port %s%s", addr, port, wait ? "; the guest waits for the debugger" : "");
	return 0;
}

void gdb_stop(void)
{
	/* The stub notices the exit within a poll period and tells a waiting GDB ("W"). */
	if (g.started)
		pthread_join(g.thread, NULL);
	g.started = false;
}
