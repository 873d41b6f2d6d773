/*
 * bhyve's framebuffer device with its RFB (VNC) server:
 *   -s SLOT,fbuf,tcp=[ADDR:]PORT|rfb=...|unix=PATH[,w=N][,h=N][,password=S][,wait][,vga=off|io|on]
 *      [,variant=auto|bhyve|bochs][,rom=PATH|off]
 * PCI 0xfb5d:0x40fb, display class.  BAR0 holds the mode registers in
 * bhyve's layout (fbsize u32, width u16, height u16, depth u16, refresh
 * u16, scanwidth u16); BAR1 is 16 MiB of framebuffer memory mapped
 * straight into the guest (a KVM memory slot that follows the BAR), so
 * drawing costs the guest no exits.  The picture is 32 bpp XRGB,
 * width x height, rows scanwidth pixels apart.  No legacy VGA ports or
 * memory: vga=on/io are accepted with a note.
 *
 * variant=bochs gives the same framebuffer QEMU's register interface
 * instead (its "secondary VGA" / bochs-display: PCI 1234:1111, display
 * class "other", BAR0 the framebuffer, BAR2 4 KiB of MMIO with the Bochs
 * VBE (DISPI) registers at 0x500), which UEFI firmware built for QEMU
 * drives: Debian's OVMF then has a Graphics Output Protocol on it, draws
 * its boot screens there, and an OS it boots finds the framebuffer through
 * GOP (efifb) or drives it itself (bochs-drm).  An EDID block at the
 * start of BAR2 (as QEMU's) makes w x h the preferred mode.  Under a
 * legacy BIOS the device has an expansion ROM with a VGA BIOS for it, as
 * QEMU's: by default SeaBIOS's own vgabios-bochs-display.bin from the boot
 * ROM's directory, or rom=PATH.  SeaBIOS runs it; it draws BIOS text
 * modes (INT 10h) into the framebuffer, so SeaBIOS, boot sectors and
 * bootloaders show on VNC.  variant=auto (the default)
 * picks bochs when a boot ROM is given: legacy BIOS, or UEFI firmware on
 * QEMU's chipset (lpc.chipset, boot/bootrom.c); bhyve's interface otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../core/config.h"
#include "../core/log.h"
#include "../core/netlisten.h"
#include "../boot/boot.h"
#include "../boot/bootrom.h"
#include "../core/snapshot.h"
#include "../vmm/vmm.h"
#include "atkbdc.h"
#include "edid.h"
#include "pci_emul.h"
#include "rfb.h"
#include "usb_emul.h"

#define FB_SIZE (16u << 20)
#define BOCHS_MMIO_SIZE 4096
#define DISPI_OFF       0x500      /* DISPI register i at DISPI_OFF + 2 * i */
enum { DISPI_ID, DISPI_XRES, DISPI_YRES, DISPI_BPP, DISPI_ENABLE, DISPI_BANK, DISPI_VIRT_WIDTH, DISPI_VIRT_HEIGHT,
       DISPI_X_OFFSET, DISPI_Y_OFFSET, DISPI_VIDEO_MEMORY_64K, DISPI_NREGS };
#define DISPI_ID5       0xb0c5
#define DISPI_ENABLED   0x01
#define DISPI_GETCAPS   0x02
#define REGS_SIZE 128
#define COLS_MAX 1920
#define ROWS_MAX 1200
#define COLS_MIN 640
#define ROWS_MIN 480
#define VGA_BIOS_DEFAULT "vgabios-bochs-display.bin"   /* SeaBIOS's, beside bios-256k.bin */
#define VGA_BIOS_MAX     (128u << 10)   /* of the 192 KiB option ROM area below 1 MiB */

struct fbuf {
	struct pci_devinst *pi;
	pthread_mutex_t mtx;              /* the registers */
	struct {
		uint32_t fbsize;
		uint16_t width, height, depth, refresh, scanwidth;
	} regs;
	uint32_t origin;                  /* byte offset of the top left pixel (bochs X/Y offset) */
	bool bochs;                       /* variant=bochs: QEMU's register interface */
	int fb_bar;                       /* the framebuffer's BAR: 1 (bhyve) or 0 (bochs) */
	uint16_t dispi[DISPI_NREGS];      /* bochs: the DISPI registers as written */
	uint8_t edid[EDID_BLOCK_SIZE];    /* bochs: at BAR2 offset 0 */
	uint8_t *fb;                      /* FB_SIZE bytes, shared with the guest */
	int slot;                         /* KVM memory slot, -1 until mapped */
	struct rfb_server *rfb;
	char name[64];
};

static struct fbuf *the_fbuf;   /* one per VM, as bhyve */

/* ---- the RFB server's view ---- */

static bool fb_snapshot(void *arg, uint32_t *dst, int *w, int *h)
{
	struct fbuf *f = arg;
	pthread_mutex_lock(&f->mtx);
	int fw = f->regs.width, fh = f->regs.height, stride = f->regs.scanwidth > fw ? f->regs.scanwidth : fw;
	uint64_t origin = f->origin;
	pthread_mutex_unlock(&f->mtx);
	bool same = dst && *w == fw && *h == fh;
	*w = fw;
	*h = fh;
	if (!same)
		return false;
	/* Rows past the 16 MiB window (a guest's nonsense scanwidth) read as black. */
	for (int y = 0; y < fh; y++) {
		uint64_t off = origin + (uint64_t)y * (uint64_t)stride * 4;
		if (off + (uint64_t)fw * 4 <= FB_SIZE)
			memcpy(dst + (size_t)y * (size_t)fw, f->fb + off, (size_t)fw * 4);
		else
			memset(dst + (size_t)y * (size_t)fw, 0, (size_t)fw * 4);
	}
	return true;
}

/* Keys go to the PS/2 keyboard (devices/atkbdc.c); the pointer to a USB
 * tablet the guest drives (devices/pci_xhci.c), else to the PS/2 mouse. */
static void fb_key(void *arg, bool down, uint32_t keysym)
{
	(void)arg;
	uint8_t codes[8];
	int n = ps2_keysym_to_set2(keysym, down, codes);
	if (n)
		atkbdc_key(codes, n);
}

static void fb_pointer(void *arg, uint8_t buttons, int x, int y)
{
	struct fbuf *f = arg;
	pthread_mutex_lock(&f->mtx);
	int w = f->regs.width, h = f->regs.height;
	pthread_mutex_unlock(&f->mtx);
	if (!xhci_pointer_event(buttons, x, y, w, h))
		atkbdc_pointer(buttons, x, y);
}

/* ---- BARs ---- */

/* BAR0's first 14 bytes, bhyve's layout; under f->mtx. */
static void regs_pack(const struct fbuf *f, uint8_t r[14])
{
	memcpy(r, &f->regs.fbsize, 4);
	memcpy(r + 4, &f->regs.width, 2);
	memcpy(r + 6, &f->regs.height, 2);
	memcpy(r + 8, &f->regs.depth, 2);
	memcpy(r + 10, &f->regs.refresh, 2);
	memcpy(r + 12, &f->regs.scanwidth, 2);
}

/*
 * A DISPI mode takes effect when it is enabled with 32 bits per pixel and
 * fits: the picture the VNC clients see follows it (under f->mtx).  Other
 * depths (palette, 15/16/24 bits) are not shown: the old picture stays.
 */
static void dispi_apply(struct fbuf *f)
{
	const uint16_t *d = f->dispi;
	if (!(d[DISPI_ENABLE] & DISPI_ENABLED) || d[DISPI_BPP] != 32)
		return;
	uint32_t w = d[DISPI_XRES], h = d[DISPI_YRES], vw = d[DISPI_VIRT_WIDTH] > w ? d[DISPI_VIRT_WIDTH] : w;
	uint64_t origin = ((uint64_t)d[DISPI_Y_OFFSET] * vw + d[DISPI_X_OFFSET]) * 4;
	if (w < 1 || h < 1 || w > COLS_MAX || h > ROWS_MAX || origin + ((uint64_t)(h - 1) * vw + w) * 4 > FB_SIZE)
		return;
	f->regs.width = (uint16_t)w;
	f->regs.height = (uint16_t)h;
	f->regs.scanwidth = (uint16_t)vw;
	f->origin = (uint32_t)origin;
}

static uint16_t dispi_read(struct fbuf *f, unsigned i)
{
	if (i >= DISPI_NREGS)
		return 0;
	if (f->dispi[DISPI_ENABLE] & DISPI_GETCAPS) {   /* the largest values it takes */
		if (i == DISPI_XRES)
			return COLS_MAX;
		if (i == DISPI_YRES)
			return ROWS_MAX;
		if (i == DISPI_BPP)
			return 32;
	}
	/* Drawable memory: the largest mode shown (1920x1200x4), so firmware
	 * lists no mode the VNC server could not show; the BAR is larger. */
	if (i == DISPI_VIDEO_MEMORY_64K)
		return (uint16_t)(((uint32_t)COLS_MAX * ROWS_MAX * 4 + 0xffff) >> 16);
	return f->dispi[i];
}

static void dispi_write(struct fbuf *f, unsigned i, uint16_t v)
{
	switch (i) {
	case DISPI_ID:   /* a driver announces the version it speaks; we answer ID5 */
	case DISPI_VIDEO_MEMORY_64K:
		return;
	case DISPI_XRES:
		if (v > COLS_MAX)
			return;   /* refused: the old value stays, as QEMU's checks do */
		break;
	case DISPI_YRES:
		if (v > ROWS_MAX)
			return;
		break;
	default:
		if (i >= DISPI_NREGS)
			return;
		break;
	}
	f->dispi[i] = v;
	if (i == DISPI_ENABLE && (v & DISPI_ENABLED) && !f->dispi[DISPI_VIRT_WIDTH])
		f->dispi[DISPI_VIRT_WIDTH] = f->dispi[DISPI_XRES];
	dispi_apply(f);
}

static uint64_t fbuf_barread(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size)
{
	(void)vcpu;
	struct fbuf *f = the_fbuf;
	(void)pi;
	uint64_t v = 0;
	if (baridx == f->fb_bar) {   /* only while the memory slot is being moved */
		if (off + (uint64_t)size <= FB_SIZE)
			memcpy(&v, f->fb + off, (size_t)size);
		return v;
	}
	if (f->bochs) {   /* BAR2: EDID, VGA ports (ignored), DISPI */
		if (off < EDID_BLOCK_SIZE) {
			size_t n = off + (uint64_t)size <= EDID_BLOCK_SIZE ? (size_t)size : EDID_BLOCK_SIZE - (size_t)off;
			memcpy(&v, f->edid + off, n);
		} else if (off >= DISPI_OFF && off < DISPI_OFF + 2 * DISPI_NREGS && !(off & 1) && size >= 2) {
			pthread_mutex_lock(&f->mtx);
			v = dispi_read(f, (unsigned)(off - DISPI_OFF) / 2);
			if (size >= 4)
				v |= (uint64_t)dispi_read(f, (unsigned)(off - DISPI_OFF) / 2 + 1) << 16;
			pthread_mutex_unlock(&f->mtx);
		}
		return v;
	}
	uint8_t regs[REGS_SIZE] = { 0 };
	pthread_mutex_lock(&f->mtx);
	regs_pack(f, regs);
	pthread_mutex_unlock(&f->mtx);
	if (off + (uint64_t)size <= REGS_SIZE)
		memcpy(&v, regs + off, (size_t)size);
	return v;
}

static void fbuf_barwrite(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off, int size, uint64_t val)
{
	(void)vcpu;
	(void)pi;
	struct fbuf *f = the_fbuf;
	if (baridx == f->fb_bar) {
		if (off + (uint64_t)size <= FB_SIZE)
			memcpy(f->fb + off, &val, (size_t)size);
		return;
	}
	if (f->bochs) {
		if (off >= DISPI_OFF && off < DISPI_OFF + 2 * DISPI_NREGS && !(off & 1) && size >= 2) {
			pthread_mutex_lock(&f->mtx);
			dispi_write(f, (unsigned)(off - DISPI_OFF) / 2, (uint16_t)val);
			if (size >= 4)
				dispi_write(f, (unsigned)(off - DISPI_OFF) / 2 + 1, (uint16_t)(val >> 16));
			pthread_mutex_unlock(&f->mtx);
		}
		return;
	}
	if (off + (uint64_t)size > REGS_SIZE)
		return;
	uint8_t regs[16];
	pthread_mutex_lock(&f->mtx);
	regs_pack(f, regs);
	if (off >= 4 && off + (uint64_t)size <= 14) {   /* fbsize is read-only */
		memcpy(regs + off, &val, (size_t)size);
		uint16_t w, h;
		memcpy(&w, regs + 4, 2);
		memcpy(&h, regs + 6, 2);
		/* A mode the window cannot hold is refused: the old one stays. */
		if (w >= 1 && h >= 1 && w <= COLS_MAX && h <= ROWS_MAX) {
			f->regs.width = w;
			f->regs.height = h;
		}
		memcpy(&f->regs.depth, regs + 8, 2);
		memcpy(&f->regs.refresh, regs + 10, 2);
		memcpy(&f->regs.scanwidth, regs + 12, 2);
	}
	pthread_mutex_unlock(&f->mtx);
}

static void fbuf_baraddr(struct pci_devinst *pi, int baridx, bool decoded, uint64_t addr)
{
	struct fbuf *f = the_fbuf;
	if (baridx != f->fb_bar)
		return;
	if (vm_map_devmem(pi->pi_vmctx, &f->slot, decoded ? addr : VM_DEVMEM_UNMAPPED, f->fb, FB_SIZE))
		log_warn("fbuf: cannot map the framebuffer at %#llx: %s (accesses go through hyve)",
		         (unsigned long long)addr, strerror(errno));
}

/* ---- configuration ---- */

/* w= / h=: the default when unset; else min..max or an error. */
static int parse_size(const char *cfgpath, const char *key, int def, int min, int max, uint16_t *out, char *err,
                      size_t errlen)
{
	const char *v = get_config_valuef("%s.%s", cfgpath, key);
	if (!v) {
		*out = (uint16_t)def;
		return 0;
	}
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (*v == '\0' || *end || errno || n < min || n > max) {
		snprintf(err, errlen, "fbuf: %s=%s: expected %d to %d", key, v, min, max);
		return -1;
	}
	*out = (uint16_t)n;
	return 0;
}

/* tcp=/rfb= [ADDR:]PORT or [IPv6]:PORT (default address 127.0.0.1), or unix=PATH. */
struct listen_spec {
	char host[256], port[8];
	const char *unix_path;
};

static int parse_listen(const char *cfgpath, struct listen_spec *ls, char *err, size_t errlen)
{
	const char *tcp = get_config_valuef("%s.rfb", cfgpath);
	if (!tcp)
		tcp = get_config_valuef("%s.tcp", cfgpath);
	ls->unix_path = get_config_valuef("%s.unix", cfgpath);
	if ((tcp != NULL) == (ls->unix_path != NULL)) {
		snprintf(err, errlen, "fbuf: give tcp=[ADDR:]PORT (or rfb=) or unix=PATH for the VNC server, one of them");
		return -1;
	}
	if (ls->unix_path)
		return 0;
	snprintf(ls->host, sizeof(ls->host), "127.0.0.1");
	const char *port = tcp, *colon = tcp[0] == '[' ? strstr(tcp, "]:") : strrchr(tcp, ':');
	if (tcp[0] == '[' && colon) {
		snprintf(ls->host, sizeof(ls->host), "%.*s", (int)(colon - tcp - 1), tcp + 1);
		port = colon + 2;
	} else if (tcp[0] != '[' && colon) {
		snprintf(ls->host, sizeof(ls->host), "%.*s", (int)(colon - tcp), tcp);
		port = colon + 1;
	}
	bool bad_v6 = tcp[0] == '[' && !colon;   /* "[::1" without "]:PORT" */
	char *end;
	long p = strtol(port, &end, 10);
	if (bad_v6 || !*port || *end || p < 1 || p > 65535 || !ls->host[0]) {
		snprintf(err, errlen, "fbuf: tcp=%s: expected [ADDR:]PORT with a port from 1 to 65535", tcp);
		return -1;
	}
	snprintf(ls->port, sizeof(ls->port), "%ld", p);
	return 0;
}

/* ---- the VGA BIOS a legacy BIOS runs for the device ---- */

/* rom=PATH, else SeaBIOS's VGA BIOS for this interface beside a legacy
 * boot ROM (Debian installs both in /usr/share/seabios); NULL for none. */
static const char *vga_bios_path(const char *cfgpath, bool bochs, char *buf, size_t len)
{
	const char *rom = get_config_valuef("%s.rom", cfgpath);
	if (rom)
		return strcmp(rom, "off") ? rom : NULL;
	const char *boot = get_config_value("lpc.bootrom");
	if (!bochs || !boot || bootrom_is_uefi())
		return NULL;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", boot);
	snprintf(buf, len, "%s/%s", dirname(dir), VGA_BIOS_DEFAULT);
	return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The whole file, which must look like a PCI option ROM (55 AA) that fits below 1 MiB. */
static uint8_t *read_vga_bios(const char *path, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "fbuf: rom=%s: %s", path, strerror(errno));
		return NULL;
	}
	uint8_t *buf = malloc(VGA_BIOS_MAX + 1);
	size_t n = 0;
	ssize_t r = 1;
	while (buf && n <= VGA_BIOS_MAX && (r = read(fd, buf + n, VGA_BIOS_MAX + 1 - n)) > 0)
		n += (size_t)r;
	int saved = errno;
	close(fd);
	if (!buf || r < 0) {
		snprintf(err, errlen, "fbuf: rom=%s: %s", path, buf ? strerror(saved) : "out of memory");
	} else if (n > VGA_BIOS_MAX) {
		snprintf(err, errlen, "fbuf: rom=%s: larger than %u KiB, no room for it below 1 MiB", path,
		         VGA_BIOS_MAX >> 10);
	} else if (n < 512 || buf[0] != 0x55 || buf[1] != 0xaa) {
		snprintf(err, errlen, "fbuf: rom=%s: not an option ROM (no 55 AA signature)", path);
	} else {
		*len = n;
		return buf;
	}
	free(buf);
	return NULL;
}

/* The VGA BIOS in the device's expansion ROM, where SeaBIOS looks for a
 * display's (QEMU's romfile= likewise).  1 when there is one, 0 when
 * there is none to give, -1 on an error. */
static int add_vga_bios(struct fbuf *f, const char *cfgpath)
{
	char buf[PATH_MAX], err[512];
	const char *path = vga_bios_path(cfgpath, f->bochs, buf, sizeof(buf));
	if (!path)
		return 0;
	size_t len;
	uint8_t *rom = read_vga_bios(path, &len, err, sizeof(err));
	if (!rom) {
		log_err("%s", err);
		return -1;
	}
	int rc = pci_emul_alloc_rom(f->pi, rom, len);
	free(rom);
	return rc ? -1 : 1;
}

/* Everything -s can get wrong, checked when it is parsed (exit 4 before any VM exists). */
static int check_config(const char *cfgpath, uint16_t *w, uint16_t *h, struct listen_spec *ls, bool *wait, char *err,
                        size_t errlen)
{
	if (parse_size(cfgpath, "w", 1024, COLS_MIN, COLS_MAX, w, err, errlen) ||
	    parse_size(cfgpath, "h", 768, ROWS_MIN, ROWS_MAX, h, err, errlen) || parse_listen(cfgpath, ls, err, errlen))
		return -1;
	const char *vga = get_config_valuef("%s.vga", cfgpath);
	if (vga && strcmp(vga, "off") && strcmp(vga, "io") && strcmp(vga, "on")) {
		snprintf(err, errlen, "fbuf: vga=%s: expected off, io or on", vga);
		return -1;
	}
	const char *variant = get_config_valuef("%s.variant", cfgpath);
	if (variant && strcmp(variant, "auto") && strcmp(variant, "bhyve") && strcmp(variant, "bochs")) {
		snprintf(err, errlen, "fbuf: variant=%s: expected auto, bhyve or bochs", variant);
		return -1;
	}
	const char *rom = get_config_valuef("%s.rom", cfgpath);
	if (rom && strcmp(rom, "off")) {
		size_t len;
		uint8_t *data = read_vga_bios(rom, &len, err, errlen);
		if (!data)
			return -1;
		free(data);
	}
	const char *wv = get_config_valuef("%s.wait", cfgpath);
	*wait = false;
	if (wv && config_parse_bool(wv, wait)) {
		snprintf(err, errlen, "fbuf: wait=%s: expected true or false", wv);
		return -1;
	}
	return 0;
}

static int fbuf_legacy_config(const char *cfgpath, const char *opts, char *err, size_t errlen)
{
	uint16_t w, h;
	struct listen_spec ls;
	bool wait;
	if (pci_parse_options(cfgpath, opts, NULL, err, errlen))
		return -1;
	return check_config(cfgpath, &w, &h, &ls, &wait, err, errlen);
}

static int fbuf_init(struct pci_devinst *pi, const char *cfgpath)
{
	if (the_fbuf) {
		log_err("fbuf: only one framebuffer per VM (as bhyve)");
		return -1;
	}
	struct fbuf *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	pthread_mutex_init(&f->mtx, NULL);
	f->pi = pi;
	f->slot = -1;
	f->regs.fbsize = FB_SIZE;
	f->regs.depth = 32;
	struct listen_spec ls;
	bool wait;
	char err[512];
	if (check_config(cfgpath, &f->regs.width, &f->regs.height, &ls, &wait, err, sizeof(err))) {
		log_err("%s", err);
		free(f);
		return -1;
	}
	f->regs.scanwidth = f->regs.width;
	f->fb = mmap(NULL, FB_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (f->fb == MAP_FAILED) {
		log_err("fbuf: cannot allocate the framebuffer: %s", strerror(errno));
		free(f);
		return -1;
	}
	const char *variant = get_config_valuef("%s.variant", cfgpath);
	f->bochs = variant && strcmp(variant, "auto")
	           ? strcmp(variant, "bochs") == 0
	           : bootrom_configured() && (bootrom_chipset_i440fx() || !bootrom_is_uefi());
	f->fb_bar = f->bochs ? 0 : 1;
	/* Before the BARs: allocating one decodes it, which maps the framebuffer (fbuf_baraddr). */
	the_fbuf = f;
	int rc;
	if (f->bochs) {
		pci_set_cfgdata16(pi, PCIR_VENDOR, 0x1234);   /* QEMU's VGA ids, as its bochs-display */
		pci_set_cfgdata16(pi, PCIR_DEVICE, 0x1111);
		pci_set_cfgdata8(pi, PCIR_REVID, 0x02);
		pci_set_cfgdata16(pi, PCIR_SUBVEND, 0x1af4);
		pci_set_cfgdata16(pi, PCIR_SUBDEV, 0x1100);
		pci_set_cfgdata8(pi, PCIR_CLASS, 0x03);      /* display controller */
		pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x80);   /* other: no legacy VGA ports or memory */
		f->dispi[DISPI_ID] = DISPI_ID5;
		f->dispi[DISPI_XRES] = f->regs.width;
		f->dispi[DISPI_YRES] = f->regs.height;
		f->dispi[DISPI_BPP] = 32;
		edid_build(f->edid, f->regs.width, f->regs.height);
		rc = pci_emul_alloc_bar(pi, 0, PCIBAR_MEM32, FB_SIZE) ||
		     pci_emul_alloc_bar(pi, 2, PCIBAR_MEM32, BOCHS_MMIO_SIZE);
	} else {
		pci_set_cfgdata16(pi, PCIR_VENDOR, 0xfb5d);   /* bhyve's */
		pci_set_cfgdata16(pi, PCIR_DEVICE, 0x40fb);
		pci_set_cfgdata8(pi, PCIR_CLASS, 0x03);      /* display controller */
		pci_set_cfgdata8(pi, PCIR_SUBCLASS, 0x00);   /* VGA-compatible */
		rc = pci_emul_alloc_bar(pi, 0, PCIBAR_MEM32, REGS_SIZE) || pci_emul_alloc_bar(pi, 1, PCIBAR_MEM32, FB_SIZE);
	}
	if (rc) {
		log_err("fbuf: no room for its BARs");
		return -1;
	}
	int vga_bios = add_vga_bios(f, cfgpath);
	if (vga_bios < 0)
		return -1;
	const char *vga = get_config_valuef("%s.vga", cfgpath);
	if (vga && strcmp(vga, "off"))
		log_info("note: fbuf vga=%s: no legacy VGA ports or memory; %s", vga,
		         vga_bios ? "the VGA BIOS draws BIOS text modes into the framebuffer" : "the linear framebuffer only");
	/* A directly booted Linux gets it as its boot framebuffer (screen_info). */
	struct boot_display d = { .base = pi->pi_bar[f->fb_bar].addr, .size = FB_SIZE, .width = f->regs.width,
	                          .height = f->regs.height, .stride = (uint32_t)f->regs.width * 4 };
	boot_set_display(&d);
	int lfd = ls.unix_path ? net_listen_unix(ls.unix_path, 8, err, sizeof(err))
	                       : net_listen_tcp(ls.host, ls.port, 8, err, sizeof(err));
	if (lfd < 0) {
		log_err("fbuf: VNC server: %s", err);
		return -1;
	}
	snprintf(f->name, sizeof(f->name), "hyve %s", get_config_value("name") ? get_config_value("name") : "");
	struct rfb_source src = { .snapshot = fb_snapshot, .key = fb_key, .pointer = fb_pointer, .arg = f, .name = f->name };
	const char *password = get_config_valuef("%s.password", cfgpath);
	if (password && strlen(password) > 8)
		log_warn("fbuf: VNC authentication uses the first 8 characters of the password");
	f->rfb = rfb_start(lfd, password && password[0] ? password : NULL, &src, err, sizeof(err));
	if (!f->rfb) {
		log_err("fbuf: %s", err);
		return -1;
	}
	if (wait) {
		log_info("fbuf: waiting for a VNC client before the guest starts");
		rfb_wait_first_client(f->rfb);
	}
	return 0;
}

/* ---- checkpoint: the registers and the visible picture ---- */

static int fbuf_snapshot(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen)
{
	struct fbuf *f = the_fbuf;
	if (pci_emul_save_state(pi, out)) {
		snprintf(err, errlen, "fbuf: out of memory");
		return -1;
	}
	pthread_mutex_lock(&f->mtx);
	sb_u16(out, f->regs.width);
	sb_u16(out, f->regs.height);
	sb_u16(out, f->regs.depth);
	sb_u16(out, f->regs.refresh);
	sb_u16(out, f->regs.scanwidth);
	sb_bool(out, f->bochs);
	sb_u32(out, f->origin);
	for (int i = 0; i < DISPI_NREGS; i++)
		sb_u16(out, f->dispi[i]);
	uint64_t used = f->origin + (uint64_t)(f->regs.scanwidth > f->regs.width ? f->regs.scanwidth : f->regs.width) *
	                f->regs.height * 4;
	pthread_mutex_unlock(&f->mtx);
	if (used > FB_SIZE)
		used = FB_SIZE;
	sb_u32(out, (uint32_t)used);
	sb_put(out, f->fb, (size_t)used);
	return 0;
}

static int fbuf_restore(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen)
{
	struct fbuf *f = the_fbuf;
	if ((version != 1 && version != 2) || pci_emul_load_state(pi, in, err, errlen))
		return -1;
	uint16_t w = sr_u16(in), h = sr_u16(in), depth = sr_u16(in), refresh = sr_u16(in), scan = sr_u16(in);
	bool bochs = false;   /* version 1: bhyve's interface only */
	uint32_t origin = 0;
	uint16_t dispi[DISPI_NREGS] = { 0 };
	if (version >= 2) {
		bochs = sr_bool(in);
		origin = sr_u32(in);
		for (int i = 0; i < DISPI_NREGS; i++)
			dispi[i] = sr_u16(in);
	}
	if (sr_ok(in) && bochs != f->bochs) {
		snprintf(err, errlen, "fbuf: saved with variant=%s, configured as variant=%s (give variant=%s in -s)",
		         bochs ? "bochs" : "bhyve", f->bochs ? "bochs" : "bhyve", bochs ? "bochs" : "bhyve");
		return -1;
	}
	uint32_t used = sr_u32(in);
	if (!sr_ok(in) || used > FB_SIZE || origin >= FB_SIZE || w < 1 || h < 1 || w > COLS_MAX || h > ROWS_MAX ||
	    !sr_get(in, f->fb, used)) {
		snprintf(err, errlen, "fbuf state is not valid");
		return -1;
	}
	pthread_mutex_lock(&f->mtx);
	f->origin = origin;
	if (f->bochs)
		memcpy(f->dispi, dispi, sizeof(dispi));
	f->regs.width = w;
	f->regs.height = h;
	f->regs.depth = depth;
	f->regs.refresh = refresh;
	f->regs.scanwidth = scan;
	pthread_mutex_unlock(&f->mtx);
	return 0;
}

static const char *const fbuf_options[] = { "tcp", "rfb", "unix", "w", "h", "password", "wait", "vga", "variant", "rom",
	                                      NULL };

static const struct pci_devemu pci_de_fbuf = {
	.pe_emu = "fbuf",
	.pe_help = "framebuffer with a VNC server: tcp=[ADDR:]PORT|unix=PATH[,w=N,h=N,password=S,wait]",
	.pe_options = fbuf_options,
	.pe_legacy_config = fbuf_legacy_config,
	.pe_init = fbuf_init,
	.pe_barread = fbuf_barread,
	.pe_barwrite = fbuf_barwrite,
	.pe_baraddr = fbuf_baraddr,
	.pe_snapshot_version = 2,
	.pe_snapshot = fbuf_snapshot,
	.pe_restore = fbuf_restore,
};
PCI_EMUL_REGISTER(pci_de_fbuf)
