/*
 * Unit test for fbuf's variant=bochs (devices/fbuf.c): QEMU's register
 * interface as UEFI firmware built for QEMU drives it, with only the KVM
 * layer stubbed (tests/fuzz/nvme_stubs.c; the framebuffer is not mapped
 * into a guest here, so BAR 0 accesses go through the device).  The test
 * is the driver, in OVMF QemuVideoDxe's order: PCI ids and class, the
 * DISPI id, video memory, capabilities, a mode set (1280x800x32 with a
 * virtual width and a Y offset), pixels written through BAR 0, and Debian's
 * vncsnapshot as the client that must see that mode and those pixels.
 * Then refusals (too wide, other depths) and a checkpoint round trip.
 * The EDID block at BAR 2 offset 0 is judged by Debian's edid-decode; the
 * VGA BIOS given with rom= must be in the expansion ROM BAR, sized,
 * placed and enabled as SeaBIOS does it.
 * test-sources: tests/fuzz/nvme_stubs.c devices/edid.c devices/fbuf.c devices/rfb.c devices/pci_emul.c core/config.c core/snapshot.c core/init.c core/inout.c core/mmio.c core/netlisten.c
 * test-libs: -lz -lcrypto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "../../boot/boot.h"
#include "../../core/snapshot.h"
#include "../../devices/pci_emul.h"
#include "../fuzz/nvme_stubs.h"

#include "check.h"

/* What fbuf.c calls beyond the device framework: not under test here. */
void atkbdc_key(const uint8_t *codes, int n) { (void)codes; (void)n; }
void atkbdc_pointer(uint8_t buttons, int x, int y) { (void)buttons; (void)x; (void)y; }
int ps2_keysym_to_set2(uint32_t keysym, bool down, uint8_t out[8]) { (void)keysym; (void)down; (void)out; return 0; }
bool xhci_pointer_event(uint8_t b, int x, int y, int w, int h) { (void)b; (void)x; (void)y; (void)w; (void)h; return false; }
bool bootrom_configured(void) { return false; }
bool bootrom_chipset_i440fx(void) { return false; }
bool bootrom_is_uefi(void) { return false; }
void sandbox_thread_landlock(void) {}
static struct boot_display display;
void boot_set_display(const struct boot_display *d) { display = *d; }
int vm_map_devmem(struct vmctx *ctx, int *slot, uint64_t gpa, void *host, uint64_t len)
{
	(void)ctx; (void)slot; (void)gpa; (void)host; (void)len;
	return -1;   /* accesses go through the device's BAR handlers */
}

#define SLOT 29
static uint64_t fb, mmio;
static uint16_t dispi_rd(int i) { return (uint16_t)nh_mmio_read(mmio + 0x500 + 2 * (uint64_t)i, 2); }
static void dispi_wr(int i, uint16_t v) { nh_mmio_write(mmio + 0x500 + 2 * (uint64_t)i, 2, v); }
enum { ID, XRES, YRES, BPP, ENABLE, BANK, VIRT_WIDTH, VIRT_HEIGHT, X_OFFSET, Y_OFFSET, VIDEO_MEMORY_64K };

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int port = s >= 0 && !bind(s, (struct sockaddr *)&a, sizeof(a)) && !getsockname(s, (struct sockaddr *)&a, &l)
	           ? ntohs(a.sin_port) : 0;
	if (s >= 0)
		close(s);
	return port;
}

/* Screenshot with vncsnapshot: its size and two pixels (RGB), or false. */
static bool shot(int port, int *w, int *h, uint32_t *top, uint32_t *bottom)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "timeout -k 5 60 vncsnapshot -quiet -allowblank -nojpeg -quality 100 127.0.0.1::%d /tmp/fbb.%d.jpg >/dev/null 2>&1 && "
	         "djpeg -pnm /tmp/fbb.%d.jpg >/tmp/fbb.%d.ppm", port, (int)getpid(), (int)getpid(), (int)getpid());
	if (system(cmd) != 0)
		return false;
	snprintf(cmd, sizeof(cmd), "/tmp/fbb.%d.ppm", (int)getpid());
	FILE *f = fopen(cmd, "rb");
	int maxv;
	bool ok = f && fscanf(f, "P6 %d %d %d", w, h, &maxv) == 3 && fgetc(f) != EOF;
	uint8_t *px = ok ? malloc((size_t)*w * (size_t)*h * 3) : NULL;
	ok = ok && px && fread(px, 3, (size_t)*w * (size_t)*h, f) == (size_t)*w * (size_t)*h;
	if (ok) {
		/* The first row (red when the Y offset is honoured, white if not) and three quarters down. */
		const uint8_t *t = px + (size_t)(*w / 2) * 3;
		const uint8_t *b = px + ((size_t)(3 * *h / 4) * (size_t)*w + (size_t)(*w / 2)) * 3;
		*top = (uint32_t)t[0] << 16 | (uint32_t)t[1] << 8 | t[2];
		*bottom = (uint32_t)b[0] << 16 | (uint32_t)b[1] << 8 | b[2];
	}
	free(px);
	if (f)
		fclose(f);
	snprintf(cmd, sizeof(cmd), "rm -f /tmp/fbb.%d.jpg /tmp/fbb.%d.ppm", (int)getpid(), (int)getpid());
	if (system(cmd) != 0)
		return false;
	return ok;
}

static bool near(uint32_t got, uint32_t want)
{
	for (int s = 0; s < 24; s += 8) {
		int d = (int)((got >> s) & 0xff) - (int)((want >> s) & 0xff);
		if (d < -24 || d > 24)
			return false;
	}
	return true;
}

int main(void)
{
	if (system("command -v vncsnapshot >/dev/null && command -v djpeg >/dev/null") != 0) {
		printf("SKIP: vncsnapshot or djpeg missing (tests/install-deps.sh installs them)\n");
		return 77;
	}
	int port = free_port();
	char listen[64], romkey[128], rompath[64];
	snprintf(listen, sizeof(listen), "pci.0.29.0.tcp=127.0.0.1:%d", port);
	/* A stand-in VGA BIOS: 5000 bytes with the option ROM signature and a pattern. */
	uint8_t rom[5000];
	for (size_t i = 0; i < sizeof(rom); i++)
		rom[i] = (uint8_t)(i * 7 + 3);
	rom[0] = 0x55;
	rom[1] = 0xaa;
	snprintf(rompath, sizeof(rompath), "/tmp/fbb-rom.%d", (int)getpid());
	FILE *rf = fopen(rompath, "wb");
	if (!rf || fwrite(rom, 1, sizeof(rom), rf) != sizeof(rom) || fclose(rf)) {
		printf("FAIL - cannot write %s\n", rompath);
		return 1;
	}
	snprintf(romkey, sizeof(romkey), "pci.0.29.0.rom=%s", rompath);
	const char *kv[] = { "name=fbbochs", "pci.0.29.0.device=fbuf", listen, "pci.0.29.0.variant=bochs",
	                     "pci.0.29.0.w=800", "pci.0.29.0.h=600", romkey, NULL };
	nh_setup(kv);
	unlink(rompath);
	struct pci_devinst *pi = nh_slot(SLOT);
	if (!pi) {
		printf("FAIL - no fbuf in slot 29\n");
		return 1;
	}
	CHECK(nh_cfg_read(SLOT, 0, 4) == 0x11111234 && nh_cfg_read(SLOT, 0x08, 4) >> 8 == 0x038000,
	      "QEMU's ids 1234:1111, display class \"other\" (no VGA ports needed)");
	fb = pi->pi_bar[0].addr;
	mmio = pi->pi_bar[2].addr;
	CHECK(pi->pi_bar[0].size == 16u << 20 && pi->pi_bar[2].size == 4096 && display.base == fb,
	      "BAR 0: 16 MiB framebuffer (also the boot display), BAR 2: 4 KiB of registers");
	/* The expansion ROM as SeaBIOS's map_pcirom handles it: size, place, enable, read, disable. */
	uint32_t preset = nh_cfg_read(SLOT, 0x30, 4);
	CHECK(preset != 0 && !(preset & 1), "rom=: an expansion ROM, placed (%#x) and disabled after reset", preset);
	nh_cfg_write(SLOT, 0x30, 4, 0xfffffffe);
	CHECK(nh_cfg_read(SLOT, 0x30, 4) == 0xffffe000, "its size reads back as 8 KiB (%#x): 5000 bytes rounded up",
	      nh_cfg_read(SLOT, 0x30, 4));
	uint64_t romaddr = 0xd0000000;
	nh_cfg_write(SLOT, 0x30, 4, (uint32_t)romaddr | 1);
	bool same = true;
	for (uint64_t i = 0; i < sizeof(rom); i += 4) {
		uint32_t v = (uint32_t)nh_mmio_read(romaddr + i, 4);
		for (uint64_t k = 0; k < 4 && i + k < sizeof(rom); k++)
			same = same && (uint8_t)(v >> (8 * k)) == rom[i + k];
	}
	CHECK(same && nh_mmio_read(romaddr + sizeof(rom), 1) == 0xff, "enabled: the ROM reads back as the file, 0xff after it");
	nh_mmio_write(romaddr, 4, 0);
	CHECK(nh_mmio_read(romaddr, 2) == 0xaa55, "it is read-only");
	nh_cfg_write(SLOT, 0x04, 2, (uint16_t)(nh_cfg_read(SLOT, 0x04, 2) & ~2u));
	CHECK(nh_mmio_read(romaddr, 2) != 0xaa55, "memory decoding off: the ROM is gone");
	nh_cfg_write(SLOT, 0x04, 2, (uint16_t)(nh_cfg_read(SLOT, 0x04, 2) | 2u));
	CHECK(nh_mmio_read(romaddr, 2) == 0xaa55, "memory decoding back on: the ROM is back");
	nh_cfg_write(SLOT, 0x30, 4, preset);
	CHECK(nh_mmio_read(romaddr, 2) != 0xaa55 && nh_mmio_read(preset, 2) != 0xaa55, "disabled again: not decoded");
	/* EDID at BAR 2 offset 0, read as a driver does (SeaBIOS's VGA BIOS: bytes; Linux: 32-bit words). */
	uint8_t edid[128];
	for (int i = 0; i < 128; i += 4) {
		uint32_t v = (uint32_t)nh_mmio_read(mmio + (uint64_t)i, 4);
		memcpy(edid + i, &v, 4);
	}
	CHECK(nh_mmio_read(mmio + 54 + 2, 1) == edid[56], "EDID bytes read alike at any width");
	char edpath[64], cmd[256];
	snprintf(edpath, sizeof(edpath), "/tmp/fbb-edid.%d", (int)getpid());
	FILE *ef = fopen(edpath, "wb");
	bool wrote = ef && fwrite(edid, 1, sizeof(edid), ef) == sizeof(edid);
	if (ef)
		fclose(ef);
	if (!wrote || system("command -v edid-decode >/dev/null") != 0) {
		CHECK(false, "edid-decode (Debian's) is needed to judge the EDID block (tests/install-deps.sh installs it)");
	} else {
		snprintf(cmd, sizeof(cmd), "edid-decode --check %s 2>&1 | grep -q 'EDID conformity: PASS'", edpath);
		CHECK(system(cmd) == 0, "edid-decode --check: the EDID block conforms");
		snprintf(cmd, sizeof(cmd), "edid-decode %s 2>&1 | grep -Eq 'DTD 1: +800x600 +60\\.'", edpath);
		CHECK(system(cmd) == 0, "edid-decode: the preferred mode (DTD 1) is w x h = 800x600 at 60 Hz");
	}
	unlink(edpath);
	CHECK((dispi_rd(ID) & 0xfff0) == 0xb0c0 && dispi_rd(ID) == 0xb0c5, "DISPI id B0C5 (firmware checks B0Cx)");
	CHECK(dispi_rd(VIDEO_MEMORY_64K) * 65536u >= 1920u * 1200 * 4 && dispi_rd(VIDEO_MEMORY_64K) * 65536u < 2048u * 1200 * 4,
	      "video memory: 1920x1200x4 and no more (%u x 64 KiB)", dispi_rd(VIDEO_MEMORY_64K));
	dispi_wr(ENABLE, 0x02);
	CHECK(dispi_rd(XRES) == 1920 && dispi_rd(YRES) == 1200 && dispi_rd(BPP) == 32, "GETCAPS: 1920x1200x32 at most");
	/* QemuVideoDxe's InitializeBochsGraphicsMode, 1280x800, with a virtual width and the picture 8 rows down. */
	dispi_wr(ENABLE, 0);
	dispi_wr(BANK, 0);
	dispi_wr(X_OFFSET, 0);
	dispi_wr(Y_OFFSET, 8);
	dispi_wr(BPP, 32);
	dispi_wr(XRES, 1280);
	dispi_wr(VIRT_WIDTH, 1344);
	dispi_wr(YRES, 800);
	dispi_wr(VIRT_HEIGHT, 808);
	dispi_wr(ENABLE, 0x41);
	CHECK(dispi_rd(XRES) == 1280 && dispi_rd(YRES) == 800 && dispi_rd(ENABLE) == 0x41, "mode 1280x800x32 enabled");
	for (uint64_t y = 0; y < 808; y++)   /* rows 8.. hold the picture: top half red, bottom half blue */
		for (uint64_t x = 0; x < 1344; x += 2) {
			uint64_t px = y < 8 ? 0x00ffffff : y < 8 + 400 ? 0x00ff0000 : 0x000000ff;
			nh_mmio_write(fb + (y * 1344 + x) * 4, 8, px | px << 32);
		}
	int w = 0, h = 0;
	uint32_t top = 0, bottom = 0;
	bool ok = shot(port, &w, &h, &top, &bottom);
	CHECK(ok && w == 1280 && h == 800 && near(top, 0xff0000) && near(bottom, 0x0000ff),
	      "vncsnapshot sees 1280x800 (%dx%d), red above, blue below (%06x, %06x): the mode, its stride and offset",
	      w, h, top, bottom);
	dispi_wr(XRES, 4096);
	CHECK(dispi_rd(XRES) == 1280, "a width the screen cannot show is refused, the old one stays");
	dispi_wr(ENABLE, 0);
	dispi_wr(BPP, 8);
	dispi_wr(XRES, 640);
	dispi_wr(YRES, 480);
	dispi_wr(ENABLE, 0x41);
	ok = shot(port, &w, &h, &top, &bottom);
	CHECK(ok && w == 1280 && h == 800, "an 8-bit palette mode is not shown: the picture stays 1280x800 (%dx%d)", w, h);
	/* Checkpoint: the registers and the picture come back. */
	dispi_wr(ENABLE, 0);
	dispi_wr(BPP, 32);
	dispi_wr(XRES, 1280);
	dispi_wr(YRES, 800);
	dispi_wr(ENABLE, 0x41);
	struct snap_buf sb;
	char err[256] = "";
	sb_init(&sb);
	int rc = pi->pi_d->pe_snapshot(pi, &sb, err, sizeof(err));
	CHECK(rc == 0 && !sb.failed && sb.len > 1280u * 800 * 4, "state saved with the picture (%zu bytes)", sb.len);
	dispi_wr(ENABLE, 0);
	dispi_wr(XRES, 640);
	struct snap_rd rd;
	sr_init(&rd, sb.data, sb.len);
	CHECK(pi->pi_d->pe_restore(pi, &rd, 2, err, sizeof(err)) == 0 && dispi_rd(XRES) == 1280 && dispi_rd(ENABLE) == 0x41,
	      "restored: the mode registers as saved%s%s", err[0] ? ": " : "", err);
	ok = shot(port, &w, &h, &top, &bottom);
	CHECK(ok && w == 1280 && h == 800 && near(top, 0xff0000), "the restored picture (%dx%d, %06x)", w, h, top);
	sr_init(&rd, sb.data, sb.len / 2);
	CHECK(pi->pi_d->pe_restore(pi, &rd, 2, err, sizeof(err)) != 0, "a truncated state is refused: %s", err);
	sb_free(&sb);
	return check_summary();
}
