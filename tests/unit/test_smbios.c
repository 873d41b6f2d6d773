/*
 * Unit tests for boot/smbios.c, checked by a real reader: Debian's
 * dmidecode decodes the tables from a dump file (its --dump-bin layout:
 * the entry point at offset 0, the table at offset 32) and must find
 * bhyve's strings, the UUID as given, one processor per vCPU and the RAM
 * sizes, with no structure it calls invalid.  Without dmidecode only the
 * checksums and the UUID parser are checked (the test says so).
 * test-sources: boot/smbios.c
 * test-libs: -lcrypto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../boot/smbios.h"
#include "check.h"

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

/* Run dmidecode on a dump of the tables; its output in out. */
static bool decode(const struct smbios_config *cfg, bool v3, char *out, size_t outlen)
{
	static uint8_t table[16384];
	uint16_t count, maxsize;
	int len = smbios_build_table(cfg, table, sizeof(table), &count, &maxsize);
	if (len < 0)
		return false;
	char path[] = "/tmp/hyve-smbios.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		return false;
	uint8_t head[32] = { 0 };
	if (v3)
		smbios_entry_v3(head, 32, (uint32_t)len);
	else
		smbios_entry_v2(head, 32, (uint16_t)len, count, maxsize);
	bool ok = write(fd, head, 32) == 32 && write(fd, table, (size_t)len) == len;
	close(fd);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "dmidecode --from-dump %s 2>&1", path);
	FILE *p = ok ? popen(cmd, "r") : NULL;
	size_t n = p ? fread(out, 1, outlen - 1, p) : 0;
	out[n] = '\0';
	if (p)
		pclose(p);
	unlink(path);
	return ok && n > 0;
}

static int count_lines(const char *out, const char *needle)
{
	int n = 0;
	for (const char *p = out; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

int main(void)
{
	struct smbios_config cfg = { .ncpus = 3, .lowmem = 256ULL << 20, .highmem = 0,
	                             .cpuid_eax = 0x000a0f11, .cpuid_edx = 0x178bfbff };
	CHECK(smbios_parse_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c8", cfg.uuid) == 0 && cfg.uuid[0] == 0x6b &&
	          cfg.uuid[15] == 0xc8,
	      "a UUID in RFC 4122 text form parses");
	uint8_t junk[16];
	CHECK(smbios_parse_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c", junk) == -1 &&
	          smbios_parse_uuid("6ba7b810x9dad-11d1-80b4-00c04fd430c8", junk) == -1 &&
	          smbios_parse_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430cg", junk) == -1,
	      "malformed UUIDs are refused");
	uint8_t a[16], b[16], c[16];
	smbios_default_uuid("vm0", a);
	smbios_default_uuid("vm0", b);
	smbios_default_uuid("vm1", c);
	CHECK(memcmp(a, b, 16) == 0 && memcmp(a, c, 16) != 0 && (a[6] >> 4) == 3 && (a[8] & 0xc0) == 0x80,
	      "the default UUID is stable per VM name, differs between names, version 3, RFC 4122 variant");

	static uint8_t table[16384];
	uint16_t count, maxsize;
	int len = smbios_build_table(&cfg, table, sizeof(table), &count, &maxsize);
	CHECK(len > 0 && count == 11, "3 vCPUs, RAM below 4 GiB only: 11 structures (%d bytes, %u)", len, count);
	CHECK(smbios_build_table(&cfg, table, 100, &count, &maxsize) == -1, "a buffer too small is an error, not an overflow");
	uint8_t ep2[SMBIOS_EP2_LEN], ep3[SMBIOS_EP3_LEN];
	smbios_entry_v2(ep2, 0xf0040, 0x200, 11, 80);
	smbios_entry_v3(ep3, 0xf0040, 0x200);
	CHECK(sum(ep2, SMBIOS_EP2_LEN) == 0 && sum(ep2 + 0x10, 0x0f) == 0 && !memcmp(ep2, "_SM_", 4) &&
	          !memcmp(ep2 + 0x10, "_DMI_", 5),
	      "2.x entry point: both checksums sum to zero");
	CHECK(sum(ep3, SMBIOS_EP3_LEN) == 0 && !memcmp(ep3, "_SM3_", 5), "3.0 entry point: checksum sums to zero");

	if (system("command -v dmidecode >/dev/null 2>&1") != 0) {
		printf("ok - (skipped: dmidecode not installed; tests/install-deps.sh installs it)\n");
		return check_summary();
	}
	static char out[65536];
	for (int v3 = 0; v3 <= 1; v3++) {
		const char *ver = v3 ? "3.0" : "2.8";
		CHECK(decode(&cfg, v3, out, sizeof(out)), "dmidecode reads the SMBIOS %s dump", ver);
		CHECK(strstr(out, v3 ? "SMBIOS 3.0.0 present." : "SMBIOS 2.8 present."), "%s: dmidecode sees the version", ver);
		CHECK(!strstr(out, "Invalid") && !strstr(out, "invalid") && !strstr(out, "Wrong") &&
		          !strstr(out, "<OUT OF SPEC>") && !strstr(out, "Bad"),
		      "%s: nothing dmidecode calls invalid or out of spec", ver);
		CHECK(strstr(out, "\tVendor: BHYVE\n") && strstr(out, "\tVersion: 1.00\n") &&
		          strstr(out, "\tRelease Date: 03/14/2014\n"),
		      "%s: type 0 has bhyve's BIOS strings", ver);
		CHECK(strstr(out, "\tProduct Name: BHYVE\n") && strstr(out, "\tUUID: 6ba7b810-9dad-11d1-80b4-00c04fd430c8\n"),
		      "%s: type 1 has bhyve's product name and the UUID exactly as given", ver);
		CHECK(strstr(out, "Chassis Information") && strstr(out, "\tBoot-up State: Safe\n"), "%s: type 3", ver);
		CHECK(count_lines(out, "\tSocket Designation: CPU #") == 3 && strstr(out, "\tSocket Designation: CPU #2\n") &&
		          strstr(out, "\tCharacteristics:\n\t\t64-bit capable\n"),
		      "%s: one processor per vCPU", ver);
		CHECK(strstr(out, "\tMaximum Capacity: 256 MB\n") && strstr(out, "\tNumber Of Devices: 1\n") &&
		          strstr(out, "\tSize: 256 MB\n") && strstr(out, "\tRange Size: 256 MB\n"),
		      "%s: memory array, device and mapped range describe 256 MiB", ver);
		CHECK(strstr(out, "System Boot Information") && strstr(out, "\tStatus: No errors detected\n") &&
		          strstr(out, "End Of Table"),
		      "%s: boot status and end of table", ver);
		if (strstr(out, "Invalid") || strstr(out, "OUT OF SPEC"))
			fputs(out, stdout);
	}
	cfg.highmem = 5ULL << 30;
	cfg.lowmem = 3ULL << 30;
	CHECK(decode(&cfg, false, out, sizeof(out)) && strstr(out, "\tNumber Of Devices: 2\n") &&
	          strstr(out, "\tSize: 3 GB\n") && strstr(out, "\tSize: 5 GB\n") &&
	          strstr(out, "\tRange Size: 3 GB\n") && strstr(out, "\tRange Size: 5 GB\n") &&
	          strstr(out, "\tStarting Address: 0x0000000100000000") && strstr(out, "\tMaximum Capacity: 8 GB\n"),
	      "8 GiB across 4 GiB: two devices and ranges, the second at 4 GiB");
	return check_summary();
}
