/*
 * Unit tests for devices/pflash.c (#included): the CFI flash under the
 * UEFI variable store, driven with the sequences OVMF's variable driver
 * (OvmfPkg QemuFlashFvbServicesRuntimeDxe, QemuFlash.c) issues, with the
 * answers QEMU's pflash_cfi01 gives it (the reference OVMF is built for):
 * the probe must say "flash" (not RAM, not ROM), programs and erases land
 * in the file, reads in command modes answer the status, and the memory
 * slot is there exactly in read-array mode.  OVMF itself running on it is
 * tests/test_firmware.sh's t_firmware_ovmf_*.
 * test-sources: core/snapshot.c
 */
#include "../../devices/pflash.c"

#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

/* ---- fakes of the core and the vmm layer ---- */

void logmsg(enum log_level lvl, const char *fmt, ...) { (void)lvl; (void)fmt; }
void fatal(const char *fmt, ...) { (void)fmt; abort(); }
static bool slot_mapped, slot_readonly;
static int slot_changes;
int vm_map_devmem(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size)
{
	(void)ctx; (void)hva; (void)size;
	if (*slot < 0)
		*slot = 12;
	slot_mapped = gpa != VM_DEVMEM_UNMAPPED;
	slot_readonly = false;
	slot_changes++;
	return 0;
}
int vm_map_devmem_readonly(struct vmctx *ctx, int *slot, uint64_t gpa, void *hva, uint64_t size)
{
	(void)ctx; (void)gpa; (void)hva; (void)size;
	if (*slot < 0)
		*slot = 12;
	slot_mapped = true;
	slot_readonly = true;
	slot_changes++;
	return 0;
}
static mmio_func_t handler;
int register_mmio(const struct mmio_range *mr)
{
	handler = mr->handler;
	return 0;
}

#define GPA 0xffc00000ull
#define SIZE (16 * PFLASH_BLOCK_SIZE)

static void wr(uint64_t off, uint8_t b)
{
	uint64_t v = b;
	handler(NULL, true, GPA + off, 1, &v, NULL);
}

/* A read as the guest sees it: from the slot when mapped, else an exit. */
static uint8_t rd(const uint8_t *mem, uint64_t off)
{
	if (slot_mapped)
		return mem[off];
	uint64_t v = 0;
	handler(NULL, false, GPA + off, 1, &v, NULL);
	return (uint8_t)v;
}

/* OVMF's QemuFlashDetected at off; returns what it would conclude. */
static const char *ovmf_probe(uint8_t *mem, uint64_t off)
{
	uint8_t orig = rd(mem, off);
	wr(off, 0x50);
	uint8_t probe = rd(mem, off);
	if (orig != 0x50 && probe == 0x50) {
		wr(off, orig);
		return "RAM";
	}
	wr(off, 0x70);
	probe = rd(mem, off);
	if (probe == orig)
		return "ROM";
	if (probe == 0x70) {
		wr(off, orig);
		return "RAM";
	}
	if (probe != 0x00)
		return "unknown";
	wr(off, 0x10);
	wr(off, orig);
	wr(off, 0x70);
	probe = rd(mem, off);
	wr(off, 0xff);
	return (probe & 0x10) ? "flash, write failed" : "flash";
}

/* QemuFlashWrite: 0x10 + byte for each, then 0xff on the last. */
static void ovmf_write(uint64_t off, const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		wr(off + i, 0x10);
		wr(off + i, (uint8_t)s[i]);
	}
	wr(off + n - 1, 0xff);
}

int main(void)
{
	char path[] = "/tmp/hyve-pflash-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, SIZE))
		return 2;
	uint8_t *mem = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		return 2;
	memset(mem, 0xff, SIZE);
	memcpy(mem + 40, "_FVH", 4);   /* what OVMF_VARS starts with */

	char err[200];
	CHECK(pflash_attach((struct vmctx *)1, GPA, mem, SIZE, err, sizeof(err)) == 0, "attach");
	CHECK(slot_mapped && slot_readonly, "read-array mode: the store is a read-only memory slot");
	CHECK(pflash_attach((struct vmctx *)1, GPA, mem, SIZE, err, sizeof(err)) == -1, "a second flash is refused");

	/* OVMF picks the first byte that is none of 0x50/0x70/0x00: offset 0 (0xff). */
	int before = slot_changes;
	CHECK(strcmp(ovmf_probe(mem, 0), "flash") == 0, "OVMF's probe concludes: flash (%s)", ovmf_probe(mem, 0));
	CHECK(mem[0] == 0xff, "the probe's write put the original byte back (%#x)", mem[0]);
	CHECK(slot_mapped && slot_readonly, "after the probe the slot is back");
	CHECK(slot_changes > before, "status reads took the slot away (%d changes)", slot_changes - before);

	/* A variable write, then read back from the slot. */
	before = slot_changes;
	ovmf_write(4096 + 100, "hyve-variable");
	CHECK(memcmp(mem + 4096 + 100, "hyve-variable", 13) == 0, "programmed bytes are in the file's mapping");
	CHECK(slot_mapped && rd(mem, 4096 + 100) == 'h', "read-array mode again after 0xff");
	CHECK(slot_changes - before == 2, "a write sequence costs one unmap and one map (%d)", slot_changes - before);

	/* Status reads while programming: the slot is away and reads answer status. */
	wr(200, 0x10);
	CHECK(!slot_mapped, "program setup leaves read-array mode (slot unmapped)");
	CHECK(rd(mem, 8000) == 0x80 || rd(mem, 8000) == 0x00, "a read in program mode answers the status");
	wr(200, 0x5a);
	CHECK(mem[200] == 0x5a, "the data byte is programmed");
	CHECK((rd(mem, 200) & 0x80) == 0x80, "status ready after the program");
	wr(200, 0xff);

	/* Block erase: 0x20, 0xd0 anywhere in the block, 0xff. */
	memset(mem + 2 * PFLASH_BLOCK_SIZE, 0x11, PFLASH_BLOCK_SIZE);
	mem[3 * PFLASH_BLOCK_SIZE] = 0x22;
	wr(2 * PFLASH_BLOCK_SIZE + 77, 0x20);
	wr(2 * PFLASH_BLOCK_SIZE + 77, 0xd0);
	CHECK((rd(mem, 2 * PFLASH_BLOCK_SIZE) & 0x80) == 0x80, "status ready after the erase");
	wr(2 * PFLASH_BLOCK_SIZE, 0xff);
	bool erased = true;
	for (unsigned i = 0; i < PFLASH_BLOCK_SIZE; i++)
		erased &= mem[2 * PFLASH_BLOCK_SIZE + i] == 0xff;
	CHECK(erased, "the whole 4 KiB block reads 0xff");
	CHECK(mem[3 * PFLASH_BLOCK_SIZE] == 0x22, "the next block is untouched");

	/* An erase without its confirm: nothing erased, an error in the status. */
	wr(3 * PFLASH_BLOCK_SIZE, 0x20);
	wr(3 * PFLASH_BLOCK_SIZE, 0x10);
	CHECK(mem[3 * PFLASH_BLOCK_SIZE] == 0x22, "an unconfirmed erase erases nothing");
	CHECK((rd(mem, 0) & 0x30) == 0x30, "and sets the command-sequence error bits");
	wr(0, 0x50);
	CHECK(slot_mapped, "clear status returns to read-array mode");
	wr(0, 0x70);
	CHECK(rd(mem, 0) == 0x00, "clear status cleared every bit (what OVMF's probe expects)");
	wr(0, 0xff);

	/* Identify and CFI query, unknown commands. */
	wr(0, 0x90);
	CHECK(rd(mem, 0) == 0x89, "read ID: manufacturer");
	wr(0, 0x98);
	CHECK(rd(mem, 0x10) == 'Q' && rd(mem, 0x11) == 'R' && rd(mem, 0x12) == 'Y', "CFI query: QRY");
	wr(0, 0xe8);
	CHECK(slot_mapped && rd(mem, 40) == '_', "an unsupported command goes back to read-array mode");

	/* Nonsense from the guest: widths and addresses at the edges. */
	uint64_t v = 0x10;
	CHECK(handler(NULL, true, GPA + SIZE - 1, 8, &v, NULL) == 0, "an 8-byte write at the last byte is taken");
	v = 0x1122334455667788ull;
	handler(NULL, true, GPA + SIZE - 1, 8, &v, NULL);
	CHECK(mem[SIZE - 1] == 0x88, "and programs only the byte inside the store");
	v = 0xff;
	handler(NULL, true, GPA + SIZE - 1, 1, &v, NULL);
	v = 0;
	CHECK(handler(NULL, false, GPA + SIZE, 4, &v, NULL) == 0 && v == ~0ULL, "a read past the end answers all ones");

	/* Checkpoint: mode and status round-trip; the slot follows the mode. */
	wr(0, 0x70);
	uint8_t saved_status = rd(mem, 0);
	struct snap_buf sb;
	sb_init(&sb);
	CHECK(pflash_save(NULL, &sb, err, sizeof(err)) == 0, "save in status mode");
	wr(0, 0xff);
	struct snap_rd sr;
	sr_init(&sr, sb.data, sb.len);
	CHECK(pflash_load(NULL, &sr, 1, err, sizeof(err)) == 0 && !slot_mapped && rd(mem, 0) == saved_status,
	      "load: status mode again, slot away");
	uint8_t bad[] = { 9, 0 };
	struct snap_rd br;
	sr_init(&br, bad, sizeof(bad));
	CHECK(pflash_load(NULL, &br, 1, err, sizeof(err)) == -1 && strstr(err, "not valid"), "a bad mode is refused: %s", err);
	uint8_t shortbuf[] = { 0 };
	struct snap_rd sh;
	sr_init(&sh, shortbuf, sizeof(shortbuf));
	CHECK(pflash_load(NULL, &sh, 1, err, sizeof(err)) == -1, "a short section is refused");
	wr(0, 0xff);
	sb_free(&sb);

	/* What reached the file (the quiesce syncs it). */
	pflash_quiesce(NULL);
	char back[13];
	CHECK(pread(fd, back, sizeof(back), 4096 + 100) == (ssize_t)sizeof(back) && memcmp(back, "hyve-variable", 13) == 0,
	      "the file holds the programmed variable");
	munmap(mem, SIZE);
	close(fd);
	unlink(path);
	return check_summary();
}
