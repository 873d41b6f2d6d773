/*
 * test=fwcfg: the fw_cfg device as firmware reads it (QEMU's interface,
 * devices/fw_cfg.c): the signature and ID through the byte-wide data
 * port, the DMA register's own signature, the CPU count and RAM size
 * keys, the file directory and etc/e820 through DMA, and the DMA error
 * bit for a buffer outside RAM and for a write.  cpus=N on the command
 * line is the count the VM was started with.
 */
#include "kernel.h"
#include "tests.h"

#define SEL 0x510
#define DATA 0x511
#define DMA 0x514
#define CTL_ERROR 1u
#define CTL_READ 2u
#define CTL_SELECT 8u
#define CTL_WRITE 0x10u

static u32 bswap32(u32 v) { return __builtin_bswap32(v); }
static u16 bswap16(u16 v) { return __builtin_bswap16(v); }

struct dma_desc { u32 control, length; u64 address; } __attribute__((packed, aligned(16)));
static struct dma_desc desc;
static u8 buf[8192] __attribute__((aligned(16)));

static void pio_read(u16 key, void *dst, u32 len)
{
	outw(SEL, key);
	for (u32 i = 0; i < len; i++)
		((u8 *)dst)[i] = inb(DATA);
}

/* One DMA transfer; returns the control word the device left (0 = done). */
static u32 dma(u32 control, u64 addr, u32 len)
{
	desc.control = bswap32(control);
	desc.length = bswap32(len);
	desc.address = __builtin_bswap64(addr);
	u64 d = (u64)&desc;
	outl(DMA, bswap32((u32)(d >> 32)));
	outl(DMA + 4, bswap32((u32)d));
	__asm__ __volatile__("" ::: "memory");   /* the device wrote desc.control */
	return bswap32(desc.control);
}

static void t_fwcfg(void)
{
	char sig[5] = { 0 };
	pio_read(0x0000, sig, 4);
	if (memcmp(sig, "QEMU", 4))
		test_fail("fwcfg", "signature '%s', expected QEMU", sig);
	u32 id;
	pio_read(0x0001, &id, 4);
	if (!(id & 2))
		test_fail("fwcfg", "ID 0x%x has no DMA bit", id);
	u32 dsig = inl(DMA);
	if (memcmp(&dsig, "QEMU", 4))
		test_fail("fwcfg", "DMA register reads 0x%x, expected 'QEMU'", dsig);
	u16 cpus;
	pio_read(0x0005, &cpus, 2);
	u64 want;
	if (cmdline_get_u64("cpus", &want) && cpus != want)
		test_fail("fwcfg", "NB_CPUS %u, expected %lu", cpus, (unsigned long)want);
	u64 ram;
	pio_read(0x0003, &ram, 8);

	/* The file directory: be32 count, 64-byte entries. */
	u32 c = dma(CTL_SELECT | CTL_READ | (0x19u << 16), (u64)buf, sizeof(buf));
	if (c)
		test_fail("fwcfg", "DMA read of the file directory: control 0x%x", c);
	u32 nfiles = bswap32(*(u32 *)buf);
	u16 e820_key = 0;
	u32 e820_len = 0;
	for (u32 i = 0; i < nfiles && 4 + 64 * (i + 1) <= sizeof(buf); i++) {
		u8 *e = buf + 4 + 64 * i;
		if (strcmp((char *)e + 8, "etc/e820") == 0) {
			e820_len = bswap32(*(u32 *)e);
			e820_key = bswap16(*(u16 *)(e + 4));
		}
	}
	if (!e820_key || !e820_len || e820_len % 20 || e820_len > sizeof(buf))
		test_fail("fwcfg", "%u files, etc/e820 key 0x%x size %u", nfiles, e820_key, e820_len);
	memset(buf, 0xaa, sizeof(buf));
	c = dma(CTL_SELECT | CTL_READ | ((u32)e820_key << 16), (u64)buf, e820_len + 8);
	if (c)
		test_fail("fwcfg", "DMA read of etc/e820: control 0x%x", c);
	u64 ram_sum = 0;
	for (u32 off = 0; off < e820_len; off += 20) {
		u64 a, l;
		u32 t;
		memcpy(&a, buf + off, 8);
		memcpy(&l, buf + off + 8, 8);
		memcpy(&t, buf + off + 16, 4);
		if (t == 1)
			ram_sum += l;
		if (off == 0 && (a != 0 || t != 1))
			test_fail("fwcfg", "first e820 entry 0x%lx type %u, expected RAM at 0", (unsigned long)a, t);
	}
	for (u32 i = e820_len; i < e820_len + 8; i++)
		if (buf[i] != 0)
			test_fail("fwcfg", "DMA read past the end of etc/e820 gave 0x%x, expected zeros", buf[i]);
	if (ram_sum > ram || ram - ram_sum > (1u << 20))
		test_fail("fwcfg", "e820 RAM %lu bytes vs RAM_SIZE %lu", (unsigned long)ram_sum, (unsigned long)ram);

	/* Nonsense gets the error bit, never a write anywhere. */
	c = dma(CTL_SELECT | CTL_READ, 0xfff000000000ull, 16);
	if (!(c & CTL_ERROR))
		test_fail("fwcfg", "DMA into unmapped memory: control 0x%x, expected the error bit", c);
	c = dma(CTL_SELECT | CTL_WRITE, (u64)buf, 4);
	if (!(c & CTL_ERROR))
		test_fail("fwcfg", "DMA write to the signature: control 0x%x, expected the error bit", c);

	printf("fwcfg: signature QEMU, id 0x%x, cpus %u, ram %lu MiB, %u files, e820 %u entries\n", id, cpus,
	       (unsigned long)(ram >> 20), nfiles, e820_len / 20);
	test_pass("fwcfg");
}
GUEST_TEST(fwcfg, t_fwcfg);
