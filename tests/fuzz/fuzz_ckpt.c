/*
 * libFuzzer target for the checkpoint file reader (core/checkpoint.c) and
 * everything restore does with the file: the header and section table
 * (checkpoint_open), the config section (config_from_string, then
 * config_validate and the typed getters, as hyve -r does before it builds
 * the VM), and checkpoint_restore: the memory descriptor checks, eager
 * ("copy") or lazy RAM restore, and vmstate_load with every section decoder
 * of a small VM — vCPU state, in-kernel chips, the PCI framework state,
 * the virtio transport (queue addresses checked against guest RAM) and the
 * models' own state (virtio-rnd, virtio-9p fids reopened in a scratch
 * share, virtio-console ports), the UART, RTC, ACPI PM and i8042 (not
 * pc-testdev: its 64 KiB page would be most of every input).
 *
 *   tests/fuzz/run.sh -t 60 ckpt
 *
 * Only the KVM layer is stubbed (vmm.h: vCPU and chip state are accepted
 * as KVM would take any well-sized blob; guest RAM is two heap blocks),
 * plus the event loop and control socket hooks the devices register with
 * (tests/fuzz/fuzz_vm_stubs.c, shared with fuzz_migration.c).
 * The devices are real and built once from a fixed configuration
 * (fz_set_fixed_config there) by init_run_all, as hyve does; the file's
 * own config section is parsed and validated but does not rebuild them.
 *
 * Input: byte 0 is a mode, the rest is the checkpoint file.
 *   bit 0: recompute every CRC (file header, each section header, each
 *          section's data; for "memory" its 4 KiB descriptor) before the
 *          file is read, so mutations reach the decoders instead of
 *          stopping at a checksum; clear, CRCs are checked as they are.
 *   bit 1: punch every all-zero 4 KiB page of the file into a hole (the
 *          writer's sparse RAM), which copy_region's SEEK_DATA walk skips.
 *   bit 2: (with core/config_trust.c) the file's host-side keys are
 *          trusted (snapshot.trust_config=true); clear, the harness gives
 *          them itself as -o options would.
 *   bit 3: after a successful restore, vmstate_resume() as hyve does
 *          next (devices look at the restored rings: virtio-rnd fills the
 *          buffers the file's RAM offers), then vmstate_quiesce().
 * The file goes to a memfd opened through /proc/self/fd/N.
 *
 * Properties checked besides the sanitizers: a lazily mapped RAM region
 * lies inside the file (a mapping past EOF would SIGBUS the guest); a
 * state that restore accepted can be saved and loaded again; the devices'
 * initial state (saved at start-up, loaded before each input) always loads.
 *
 * -DFUZZ_MAKE_SEEDS builds a main() that brings the same VM's devices up
 * (virtio-rnd queue enabled; virtio-9p queue enabled and a 9P session with
 * an attached root, a walked directory and an opened file), then writes
 * checkpoints with the real writer (checkpoint_save) as seed inputs
 * into a directory: tests/fuzz/run.sh --make-seeds ckpt refreshes
 * tests/fuzz/corpus/ckpt/.
 * -DFUZZ_STANDALONE builds a main() that replays input files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../../core/checkpoint.h"
#include "../../core/config.h"
#include "../../core/log.h"
#include "../../core/snapshot.h"
#include "../../core/vm.h"
#include "../../core/vmstate.h"
#include "../../devices/pci_emul.h"
#include "../../devices/virtio.h"
#include "../../vmm/vmm.h"
#if __has_include("../../core/config_trust.h")
#include "../../core/config_trust.h"
#define HAVE_CONFIG_TRUST 1   /* run.sh links core/config_trust.c when it exists */
#endif

#include "fuzz_vm_stubs.h"

/* ---- input handling ---- */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static uint32_t crc(const uint8_t *p, size_t n) { return (uint32_t)crc32_z(0, p, n); }

/* Walk the sections as the reader does and make every checksum right. */
static void fix_crcs(uint8_t *b, size_t n)
{
	if (n < 64)
		return;
	put32(b + 60, crc(b, 60));
	uint64_t off = get32(b + 12);
	for (int i = 0; i < 4096 && off <= n && n - off >= 64; i++) {
		uint8_t *s = b + off;
		uint64_t len = get64(s + 40), data = get64(s + 48);
		bool fits = data >= off + 64 && data <= n && len <= n - data;
		if (fits) {
			size_t clen = strncmp((char *)s, "memory", 32) == 0 ? (len >= 4096 ? 4096 : 0) : (size_t)len;
			put32(s + 56, crc(b + data, clen));
		}
		put32(s + 60, crc(s, 60));
		if (!fits || strncmp((char *)s, "end", 32) == 0)
			break;
		off = data + len;
	}
}

static int memfd = -1;
static char memfd_path[64];

static void write_file(const uint8_t *d, size_t n, bool holes)
{
	if (memfd < 0) {
		memfd = memfd_create("fuzz_ckpt", MFD_CLOEXEC);
		if (memfd < 0)
			abort();
		snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
	}
	if (ftruncate(memfd, 0) || (n && pwrite(memfd, d, n, 0) != (ssize_t)n))
		abort();
	if (!holes)
		return;
	static const uint8_t zero[4096];
	for (size_t p = 0; p + 4096 <= n; p += 4096)
		if (memcmp(d + p, zero, 4096) == 0)
			fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)p, 4096);
}

static volatile uint64_t sink;
static bool verbose;   /* FUZZ_VERBOSE=1: say how far each input got */

/* What hyve -r does with the configuration before it builds the VM. */
static void check_file_config(void)
{
	char err[512];
	if (config_validate(err, sizeof(err))) {
		if (verbose)
			fprintf(stderr, "ckpt: %s\n", err);
		return;
	}
	/* Validated: the typed getters must not fail (they would exit). */
	sink += get_config_uint_default("cpus", 1) + get_config_uint_default("log.level", 2) +
	        get_config_size_default("memory.size", 0) + get_config_bool_default("memory.wired", false) +
	        get_config_bool_default("lpc.pc-testdev", false);
	size_t n;
	const char **c = config_children("pci.0", &n);
	if (c) {
		for (size_t i = 0; i < n; i++)
			free((void *)c[i]);
		free(c);
	}
	char *s = config_to_string(&n);
	if (!s)
		abort();
	/* What was serialized loads back (a checkpoint of a restored VM). */
	config_clear();
	if (config_from_string(s, n, err, sizeof(err))) {
		fprintf(stderr, "config of a valid checkpoint does not reload: %s\n", err);
		abort();
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	if (!fz_ram[0]) {
		fz_setup("fuzz_ckpt");
		fz_save_baseline();
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	}
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	size_t n = size - 1;
	uint8_t *file = malloc(n ? n : 1);
	if (!file)
		abort();
	memcpy(file, data + 1, n);
	if (mode & 1)
		fix_crcs(file, n);
	write_file(file, n, mode & 2);
	free(file);

	config_clear();
	const char *stage = "open";
	if (checkpoint_open(memfd_path, err, sizeof(err)) == 0) {
#ifdef HAVE_CONFIG_TRUST
		/* hyve -r: host-side keys held back, then trusted or given locally. */
		int hrc = config_hold_host_keys("checkpoint", err, sizeof(err));
		if (!(mode & 4) && fz_set_host_keys() && verbose)
			fprintf(stderr, "ckpt: the harness's -o host keys do not fit the file's config\n");
		if (config_release_host_keys(mode & 4, "snapshot.trust_config", err, sizeof(err)) == 0 && hrc == 0)
			check_file_config();
		else if (verbose)
			fprintf(stderr, "ckpt: host keys: %s\n", err);
#else
		check_file_config();
#endif
		stage = "restore";
		if (checkpoint_restore(&fz_vm, err, sizeof(err)) == 0) {
			fz_check_bars();   /* regress/ckpt/crash-io-bar-wrap */
			struct vm_sections again = { 0 };
			if (vmstate_save(&fz_vm, &again, err, sizeof(err)) || vmstate_load(&fz_vm, &again, err, sizeof(err))) {
				fprintf(stderr, "restored state does not save and load again: %s\n", err);
				abort();
			}
			vm_sections_free(&again);
			if (mode & 8) {
				vmstate_resume();
				vmstate_quiesce();
			}
			stage = NULL;
		}
	}
	if (verbose)
		fprintf(stderr, "ckpt: %s%s%s\n", stage ? stage : "restored", stage ? ": " : "", stage ? err : "");
	config_clear();
	fz_set_fixed_config();
	fz_load_baseline();
	return 0;
}

#ifdef FUZZ_MAKE_SEEDS
/* ---- seeds: the devices brought up by a "driver", saved by checkpoint_save ---- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/*
 * RAM0 (8 KiB): virtio-rnd's 16-entry queue at 0x0/0x100/0x140 with a
 * buffer at 0x300; virtio-9p's at 0x400/0x500/0x540, a request at 0x600
 * and a reply buffer at 0x1000.  9P goes over it synchronously: each
 * message waits for the worker's reply.
 */
#define QR_DESC 0x000
#define QR_AVAIL 0x100
#define QR_USED 0x140
#define QR_BUF 0x300
#define Q9_DESC 0x400
#define Q9_AVAIL 0x500
#define Q9_USED 0x540
#define Q9_REQ 0x600
#define Q9_REP 0x1000
#define QSIZE 16
static uint16_t p9_avail;

static void p9_msg(struct pci_devinst *pi, uint8_t type, const uint8_t *body, size_t blen)
{
	uint8_t *r = fz_ram[0];
	uint32_t len = (uint32_t)(7 + blen);
	put32(r + Q9_REQ, len);
	r[Q9_REQ + 4] = type;
	put16(r + Q9_REQ + 5, 1);
	memcpy(r + Q9_REQ + 7, body, blen);
	struct vring_desc d[2] = {
		{ Q9_REQ, len, VRING_DESC_F_NEXT, 1 },
		{ Q9_REP, 0x1000, VRING_DESC_F_WRITE, 0 },
	};
	memcpy(r + Q9_DESC, d, sizeof(d));
	put16(r + Q9_AVAIL + 4 + 2 * (p9_avail % QSIZE), 0);
	p9_avail++;
	__atomic_store_n((uint16_t *)(r + Q9_AVAIL + 2), p9_avail, __ATOMIC_RELEASE);
	fz_vi_write(pi, VI_NOTIFY_OFF, 2, 0);
	for (int i = 0; i < 2000 && __atomic_load_n((uint16_t *)(r + Q9_USED + 2), __ATOMIC_ACQUIRE) != p9_avail; i++)
		usleep(1000);
	if (get16(r + Q9_USED + 2) != p9_avail || r[Q9_REP + 4] != type + 1)
		fatal("9P message %u: no reply or an error (type %u)", type, r[Q9_REP + 4]);
}

static size_t s9(uint8_t *b, const char *s)
{
	put16(b, (uint16_t)strlen(s));
	memcpy(b + 2, s, strlen(s));
	return 2 + strlen(s);
}

static void p9_session(struct pci_devinst *pi)
{
	uint8_t b[128];
	size_t n;
	fz_bring_up(pi, QSIZE, Q9_DESC, Q9_AVAIL, Q9_USED);
	put32(b, 8192);                 /* Tversion msize */
	n = 4 + s9(b + 4, "9P2000.L");
	p9_msg(pi, 100, b, n);
	put32(b, 0);                    /* Tattach fid 0, afid NOFID, uname, aname, n_uname */
	put32(b + 4, 0xffffffffu);
	n = 8 + s9(b + 8, "");
	n += s9(b + n, "");
	put32(b + n, 0);
	p9_msg(pi, 104, b, n + 4);
	put32(b, 0);                    /* Twalk 0 -> 1 "f" */
	put32(b + 4, 1);
	put16(b + 8, 1);
	n = 10 + s9(b + 10, "f");
	p9_msg(pi, 110, b, n);
	put32(b, 1);                    /* Tlopen fid 1 O_RDONLY */
	put32(b + 4, 0);
	p9_msg(pi, 12, b, 8);
	put32(b, 0);                    /* Twalk 0 -> 2 "d" */
	put32(b + 4, 2);
	put16(b + 8, 1);
	n = 10 + s9(b + 10, "d");
	p9_msg(pi, 110, b, n);
}

static void emit(const char *dir, const char *name, uint8_t mode)
{
	char tmp[256], path[512], err[512];
	snprintf(tmp, sizeof(tmp), "%s/ckpt", fz_tmpdir);
	if (checkpoint_save(&fz_vm, tmp, false, err, sizeof(err)))
		fatal("checkpoint_save: %s", err);
	FILE *in = fopen(tmp, "rb");
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *out = fopen(path, "wb");
	if (!in || !out)
		abort();
	fputc(mode, out);
	int c;
	while ((c = fgetc(in)) != EOF)
		fputc(c, out);
	fclose(in);
	fclose(out);
	unlink(tmp);
	/* The seed must restore (fatal here, not a fuzzer finding later). */
	FILE *chk = fopen(path, "rb");
	static uint8_t buf[1 << 20];
	size_t n = fread(buf, 1, sizeof(buf), chk);
	fclose(chk);
	write_file(buf + 1, n - 1, false);
	config_clear();
	if (checkpoint_open(memfd_path, err, sizeof(err)) || checkpoint_restore(&fz_vm, err, sizeof(err)))
		fatal("seed %s does not restore: %s", name, err);
	printf("%s: %zu bytes\n", path, n);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	fz_setup("fuzz_ckpt");
	if (!fz_slot(3) || !fz_slot(4) || !fz_slot(5) || !fz_slot(31))
		fatal("devices missing");
	emit(dir, "seed-initial", 1);
	/* virtio-rnd: one buffer posted, not yet taken. */
	struct vring_desc d = { QR_BUF, 64, VRING_DESC_F_WRITE, 0 };
	memcpy(fz_ram[0] + QR_DESC, &d, sizeof(d));
	put16(fz_ram[0] + QR_AVAIL + 2, 1);
	fz_bring_up(fz_slot(3), QSIZE, QR_DESC, QR_AVAIL, QR_USED);
	/* virtio-9p: a session with fids 0 (root), 1 (open file), 2 (directory). */
	p9_session(fz_slot(4));
	memset(fz_ram[1], 0x5a, 16);
	config_clear();
	fz_set_fixed_config();
	emit(dir, "seed-running", 13);
	config_clear();
	fz_set_fixed_config();
	set_config_value("snapshot.restore_memory", "copy");
	emit(dir, "seed-copy-holes", 7);
	config_clear();
	fz_set_fixed_config();
	emit(dir, "seed-raw-crc", 0);
	return 0;
}
#endif

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		if (!f)
			continue;
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
		printf("%s: ok\n", argv[i]);
	}
	return 0;
}
#endif
