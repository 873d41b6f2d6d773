/*
 * Boot ROM (bhyve's -l bootrom,ROMFILE[,VARSFILE]): instead of a kernel
 * loaded by hyve, the vCPUs start at the x86 reset vector in firmware.
 *
 *   4 GiB - rom_size          the ROM, a read-only memory slot (KVM turns
 *                             guest writes into MMIO exits, dropped here)
 *   below it, vars_size       the variable store: a CFI flash part over
 *                             the file mapped shared (devices/pflash.c),
 *                             as QEMU's second pflash drive, which is what
 *                             OVMF's variable driver programs; what the
 *                             firmware writes is in the file
 *   1 MiB - min(256K, rom)    a copy of the ROM's end in RAM (segments
 *                             C to F), where real-mode firmware runs.  A
 *                             PC chipset shows only the last 128 KiB there
 *                             and the firmware copies the rest itself once
 *                             it has unlocked the shadow RAM (PAM); hyve's
 *                             host bridge has no PAM, so the copy is made
 *                             here: SeaBIOS's 256 KiB build links its code
 *                             from 0xc0000 up and, finding no bridge it
 *                             knows, runs from what is there
 *
 * The ROM file is opened read-only and never written.  fw_cfg carries the
 * rest of the machine (devices/fw_cfg.c): e820, ACPI, boot order.
 */
#include "bootrom.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/mmio.h"
#include "../devices/fw_cfg.h"
#include "../devices/pflash.h"
#include "../vmm/vmm.h"
#include "fwcfg_linux.h"

#define FOUR_GIB        0x100000000ULL
#define ROM_MAX         (16ULL << 20)   /* the flash window below 4 GiB */
#define ROM_ALIGN       4096ULL
#define LOW_COPY_MAX    (256ULL << 10)   /* 0xc0000 - 1 MiB */

bool bootrom_configured(void)
{
	return get_config_value("lpc.bootrom") != NULL;
}

bool bootrom_chipset_i440fx(void)
{
	const char *chipset = get_config_value("lpc.chipset");
	if (chipset && strcmp(chipset, "auto") != 0)
		return strcmp(chipset, "i440fx") == 0;
	return bootrom_is_uefi();
}

bool bootrom_is_uefi(void)
{
	const char *rom = get_config_value("lpc.bootrom");
	if (!rom)
		return false;
	/* A UEFI ROM starts with a PI firmware volume: "_FVH" at offset 40. */
	uint8_t hdr[44];
	int fd = open(rom, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;   /* bootrom_check says why */
	bool uefi = pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) && memcmp(hdr + 40, "_FVH", 4) == 0;
	close(fd);
	return uefi;
}

void bootrom_add_chipset_devices(void)
{
	if (!bootrom_chipset_i440fx())
		return;
	const char *hb = get_config_value("pci.0.0.0.device");
	if (hb && strcmp(hb, "hostbridge") == 0) {
		if (!get_config_value("pci.0.0.0.vendor"))
			set_config_value("pci.0.0.0.vendor", "0x8086");
		if (!get_config_value("pci.0.0.0.devid"))
			set_config_value("pci.0.0.0.devid", "0x1237");   /* 82441FX */
	}
	const char *pm = get_config_value("pci.0.1.3.device");
	if (!pm)
		set_config_value("pci.0.1.3.device", "piix4-pm");
	else if (strcmp(pm, "piix4-pm") != 0)
		log_warn("lpc.chipset=i440fx: slot 1:3 holds %s, so UEFI firmware finds no PIIX4 PM function there", pm);
}

/* Size of a regular file, or -1 with a reason. */
static long long file_size(const char *what, const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s %s: not a regular file", what, path);
		return -1;
	}
	return (long long)st.st_size;
}

int bootrom_check(char *err, size_t errlen)
{
	const char *rom = get_config_value("lpc.bootrom");
	const char *vars = get_config_value("lpc.bootvars");
	if (!rom) {
		if (vars) {
			snprintf(err, errlen, "lpc.bootvars needs a boot ROM (lpc.bootrom, -l bootrom,ROM,VARS)");
			return -1;
		}
		return 0;
	}
	long long rs = file_size("boot ROM", rom, err, errlen);
	if (rs < 0)
		return -1;
	if (rs == 0 || rs % ROM_ALIGN || (unsigned long long)rs > ROM_MAX) {
		snprintf(err, errlen, "boot ROM %s: %lld bytes; a ROM is a multiple of 4 KiB, at most 16 MiB", rom, rs);
		return -1;
	}
	if (vars) {
		long long vs = file_size("boot variable store", vars, err, errlen);
		if (vs < 0)
			return -1;
		if (vs == 0 || vs % ROM_ALIGN || (unsigned long long)(rs + vs) > ROM_MAX) {
			snprintf(err, errlen,
			         "boot variable store %s: %lld bytes; it is a multiple of 4 KiB and fits with the "
			         "%lld-byte ROM in 16 MiB (for OVMF, a copy of the OVMF_VARS file that matches the code file)",
			         vars, vs, rs);
			return -1;
		}
		if (access(vars, R_OK | W_OK) != 0) {
			snprintf(err, errlen, "boot variable store %s: %s (hyve writes the firmware's variables there)", vars,
			         strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Guest writes to the read-only ROM: dropped, as on a real flash part in read mode. */
static int rom_write(struct vcpu *vcpu, bool write, uint64_t addr, int size, uint64_t *val, void *arg)
{
	(void)vcpu; (void)addr; (void)size; (void)arg;
	if (!write)
		*val = ~0ULL;   /* not reached: reads come from the memory slot */
	return 0;
}

static void *map_file(const char *path, int flags, size_t len, bool shared, char *err, size_t errlen)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	void *p = mmap(NULL, len, shared ? PROT_READ | PROT_WRITE : PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(err, errlen, "%s: mmap: %s", path, strerror(e));
		return NULL;
	}
	return p;
}

struct text {
	char buf[256 * 64];
	size_t len;
	bool full;
};

static void text_add(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_add(struct text *t, const char *fmt, ...)
{
	if (t->full)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->buf + t->len, sizeof(t->buf) - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(t->buf) - t->len)
		t->full = true;
	else
		t->len += (size_t)n;
}

/* bootorder: one OpenFirmware-style path per line, most preferred first. */
static int add_bootorder(char *err, size_t errlen)
{
	struct dev { int slot, func; unsigned long long index; } devs[256];
	int n = 0;
	for (int s = 0; s < 32; s++)
		for (int f = 0; f < 8; f++) {
			const char *bi = get_config_valuef("pci.0.%d.%d.bootindex", s, f);
			if (bi && n < 256)
				devs[n++] = (struct dev){ s, f, strtoull(bi, NULL, 0) };
		}
	bool kernel = get_config_value("boot.kernel") != NULL;
	if (!n && !kernel)
		return 0;   /* SeaBIOS's own order: CD, then disks in slot order */
	for (int i = 1; i < n; i++)   /* stable insertion sort by index */
		for (int j = i; j > 0 && devs[j].index < devs[j - 1].index; j--) {
			struct dev t = devs[j];
			devs[j] = devs[j - 1];
			devs[j - 1] = t;
		}
	static struct text t;
	t.len = 0;
	t.full = false;
	if (kernel)   /* boot.kernel: the Linux loader ROM first, as QEMU's -kernel */
		text_add(&t, "%s\n", FWCFG_LINUX_BOOTORDER);
	for (int i = 0; i < n; i++) {
		const char *model = get_config_valuef("pci.0.%d.%d.device", devs[i].slot, devs[i].func);
		char pci[32];
		if (devs[i].func)
			snprintf(pci, sizeof(pci), "/pci@i0cf8/*@%x,%x", devs[i].slot, devs[i].func);
		else
			snprintf(pci, sizeof(pci), "/pci@i0cf8/*@%x", devs[i].slot);
		/* AHCI: every port of the controller, in port order. */
		if (model && strcmp(model, "ahci") == 0) {
			for (int p = 0; p < 32; p++)
				if (get_config_valuef("pci.0.%d.%d.port.%d.path", devs[i].slot, devs[i].func, p))
					text_add(&t, "%s/drive@%x/disk@0\n", pci, p);
		} else {
			text_add(&t, "%s\n", pci);
		}
	}
	if (t.full) {
		snprintf(err, errlen, "bootorder: more boot devices than fit in %zu bytes", sizeof(t.buf));
		return -1;
	}
	return fw_cfg_add_file("bootorder", t.buf, t.len + 1, err, errlen);   /* NUL-terminated, as QEMU */
}

int bootrom_load(struct vmctx *ctx, char *err, size_t errlen)
{
	const char *rom = get_config_value("lpc.bootrom");
	const char *vars = get_config_value("lpc.bootvars");
	if (bootrom_check(err, errlen))
		return -1;
	if (!fw_cfg_enabled()) {
		snprintf(err, errlen, "a boot ROM needs the fw_cfg device (lpc.fwcfg=qemu and an lpc device, -s 31,lpc)");
		return -1;
	}
	char why[256];
	long long rs = file_size("boot ROM", rom, err, errlen);
	if (rs < 0)
		return -1;
	uint8_t *img = map_file(rom, O_RDONLY, (size_t)rs, false, why, sizeof(why));
	if (!img) {
		snprintf(err, errlen, "boot ROM %s", why);
		return -1;
	}
	uint64_t rom_gpa = FOUR_GIB - (uint64_t)rs;
	if (vm_map_firmware(ctx, rom_gpa, img, (uint64_t)rs, true)) {
		snprintf(err, errlen, "boot ROM %s: cannot map it read-only: %s", rom, strerror(errno));
		return -1;
	}
	struct mmio_range mr = { "bootrom", rom_gpa, (uint64_t)rs, rom_write, NULL };
	if (register_mmio(&mr)) {
		snprintf(err, errlen, "boot ROM %s: [%#llx, 4 GiB) is taken by a device", rom, (unsigned long long)rom_gpa);
		return -1;
	}
	size_t low = (size_t)rs < LOW_COPY_MAX ? (size_t)rs : LOW_COPY_MAX;
	if (vm_copy_to_guest(ctx, 0x100000 - low, img + rs - (long long)low, low)) {
		snprintf(err, errlen, "boot ROM %s: guest RAM does not cover the BIOS area below 1 MiB", rom);
		return -1;
	}
	if (vars) {
		long long vs = file_size("boot variable store", vars, err, errlen);
		if (vs < 0)
			return -1;
		uint8_t *v = map_file(vars, O_RDWR, (size_t)vs, true, why, sizeof(why));
		if (!v) {
			snprintf(err, errlen, "boot variable store %s", why);
			return -1;
		}
		if (pflash_attach(ctx, rom_gpa - (uint64_t)vs, v, (uint64_t)vs, why, sizeof(why))) {
			snprintf(err, errlen, "boot variable store %s: %s", vars, why);
			return -1;
		}
	}
	log_debug("boot ROM %s: %lld bytes at %#llx%s", rom, rs, (unsigned long long)rom_gpa,
	          vars ? ", variable store below it" : "");
	if (get_config_value("boot.kernel") && fwcfg_linux_add(ctx, err, errlen))
		return -1;
	return add_bootorder(err, errlen);
}
