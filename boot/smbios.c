/*
 * SMBIOS table builder (see smbios.h).  Layouts and field meanings are
 * DSP0134's (3.x); the strings are bhyve's defaults so a guest sees what
 * it sees under bhyve.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "smbios.h"

/* A structure being written: formatted area, then its strings. */
struct sm_writer {
	uint8_t *buf;
	size_t size, off;
	bool overflow;
	uint16_t count, maxsize, handle;
	size_t start;     /* of the current structure */
	int nstrings;
};

static uint8_t *sm_begin(struct sm_writer *w, uint8_t type, uint8_t len)
{
	w->start = w->off;
	w->nstrings = 0;
	if (w->off + len + 2 > w->size) {
		w->overflow = true;
		return NULL;
	}
	uint8_t *p = w->buf + w->off;
	memset(p, 0, len);
	p[0] = type;
	p[1] = len;
	p[2] = (uint8_t)w->handle;
	p[3] = (uint8_t)(w->handle >> 8);
	w->handle++;
	w->off += len;
	return p;
}

/* Add a string; its number (1-based) for the formatted area. */
static uint8_t sm_string(struct sm_writer *w, const char *s)
{
	size_t n = strlen(s) + 1;
	if (w->overflow || w->off + n + 1 > w->size) {
		w->overflow = true;
		return 0;
	}
	memcpy(w->buf + w->off, s, n);
	w->off += n;
	return (uint8_t)++w->nstrings;
}

static void sm_end(struct sm_writer *w)
{
	if (w->overflow)
		return;
	/* No strings: two NULs; else one more NUL after the last string's. */
	size_t tail = w->nstrings ? 1 : 2;
	if (w->off + tail > w->size) {
		w->overflow = true;
		return;
	}
	memset(w->buf + w->off, 0, tail);
	w->off += tail;
	size_t len = w->off - w->start;
	if (len > w->maxsize)
		w->maxsize = (uint16_t)len;
	w->count++;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

int smbios_build_table(const struct smbios_config *cfg, uint8_t *buf, size_t size, uint16_t *count,
                       uint16_t *maxsize)
{
	struct sm_writer w = { .buf = buf, .size = size, .handle = 0 };
	uint8_t *p;

	/* Type 0, BIOS information (2.4+ layout). */
	if ((p = sm_begin(&w, 0, 0x18))) {
		p[4] = sm_string(&w, "BHYVE");
		p[5] = sm_string(&w, "1.00");
		put16(p + 6, 0xf000);              /* starting segment */
		p[8] = sm_string(&w, "03/14/2014");
		p[9] = 0;                          /* ROM size: 64 KiB */
		/* PCI, shadowing, boot from CD, selectable boot, EDD */
		put64(p + 0x0a, (1u << 7) | (1u << 12) | (1u << 15) | (1u << 16) | (1u << 19));
		p[0x12] = 0x01;                    /* ACPI */
		p[0x13] = 0x04 | 0x10;             /* targeted content distribution, virtual machine */
		p[0x14] = 0;
		p[0x15] = 0;
		p[0x16] = 0xff;                    /* no embedded controller */
		p[0x17] = 0xff;
		sm_end(&w);
	}
	/* Type 1, system information. */
	uint16_t sys_handle = w.handle;
	(void)sys_handle;
	if ((p = sm_begin(&w, 1, 0x1b))) {
		p[4] = sm_string(&w, " ");
		p[5] = sm_string(&w, "BHYVE");
		p[6] = sm_string(&w, "1.0");
		p[7] = sm_string(&w, "None");
		/* The UUID's first three fields little-endian (SMBIOS 2.6+). */
		const uint8_t *u = cfg->uuid;
		uint8_t *d = p + 8;
		d[0] = u[3]; d[1] = u[2]; d[2] = u[1]; d[3] = u[0];
		d[4] = u[5]; d[5] = u[4];
		d[6] = u[7]; d[7] = u[6];
		memcpy(d + 8, u + 8, 8);
		p[0x18] = 6;                       /* woken by the power switch */
		p[0x19] = sm_string(&w, "None");
		p[0x1a] = sm_string(&w, " ");
		sm_end(&w);
	}
	/* Type 3, chassis. */
	if ((p = sm_begin(&w, 3, 0x16))) {
		p[4] = sm_string(&w, " ");
		p[5] = 0x02;                       /* unknown */
		p[6] = sm_string(&w, "1.0");
		p[7] = sm_string(&w, "None");
		p[8] = sm_string(&w, "None");
		p[9] = p[0x0a] = p[0x0b] = 0x03;   /* boot-up, power supply, thermal: safe */
		p[0x0c] = 0x03;                    /* security: none */
		p[0x15] = sm_string(&w, "None");
		sm_end(&w);
	}
	/* Type 4, one processor per vCPU. */
	for (int i = 0; i < cfg->ncpus; i++) {
		char socket[32];
		snprintf(socket, sizeof(socket), "CPU #%d", i);
		if (!(p = sm_begin(&w, 4, 0x2a)))
			break;
		p[4] = sm_string(&w, socket);
		p[5] = 0x03;                       /* central processor */
		p[6] = 0xfe;                       /* family: see family 2 */
		p[7] = sm_string(&w, " ");
		put32(p + 8, cfg->cpuid_eax);
		put32(p + 0x0c, cfg->cpuid_edx);
		p[0x10] = sm_string(&w, " ");
		p[0x18] = 0x41;                    /* socket populated, CPU enabled */
		p[0x19] = 0x01;                    /* upgrade: other */
		put16(p + 0x1a, 0xffff);           /* no cache information */
		put16(p + 0x1c, 0xffff);
		put16(p + 0x1e, 0xffff);
		p[0x20] = sm_string(&w, "None");
		p[0x21] = sm_string(&w, "None");
		p[0x22] = sm_string(&w, "None");
		p[0x23] = p[0x24] = p[0x25] = 1;   /* one core, enabled, one thread */
		put16(p + 0x26, 0x0004);           /* 64-bit capable */
		put16(p + 0x28, 0x0001);           /* family 2: other */
		sm_end(&w);
	}
	/* Type 16, the memory array; 17, one device per RAM range; 19, their addresses. */
	int ndev = cfg->highmem ? 2 : 1;
	uint16_t array = w.handle;
	if ((p = sm_begin(&w, 16, 0x17))) {
		p[4] = 0x03;                       /* system board */
		p[5] = 0x03;                       /* system memory */
		p[6] = 0x03;                       /* no error correction */
		put32(p + 7, 0x80000000u);         /* see extended capacity */
		put16(p + 0x0b, 0xfffe);           /* no error information */
		put16(p + 0x0d, (uint16_t)ndev);
		put64(p + 0x0f, cfg->lowmem + cfg->highmem);
		sm_end(&w);
	}
	uint64_t range[2][2] = { { 0, cfg->lowmem }, { 0x100000000ULL, cfg->highmem } };
	for (int i = 0; i < ndev; i++) {
		if (!(p = sm_begin(&w, 17, 0x28)))
			break;
		put16(p + 4, array);
		put16(p + 6, 0xfffe);
		put16(p + 8, 64);                  /* total and data width */
		put16(p + 0x0a, 64);
		uint64_t mib = range[i][1] >> 20;
		if (mib < 0x7fff) {
			put16(p + 0x0c, (uint16_t)mib);
		} else {
			put16(p + 0x0c, 0x7fff);       /* see extended size */
			put32(p + 0x1c, (uint32_t)mib);
		}
		p[0x0e] = 0x09;                    /* DIMM */
		p[0x10] = sm_string(&w, i ? "DIMM 1" : "DIMM 0");
		p[0x11] = sm_string(&w, " ");
		p[0x12] = 0x07;                    /* RAM */
		put16(p + 0x13, 0x0004);           /* type detail: unknown */
		p[0x17] = sm_string(&w, " ");
		p[0x18] = sm_string(&w, "None");
		p[0x19] = sm_string(&w, "None");
		p[0x1a] = sm_string(&w, "None");
		sm_end(&w);
	}
	for (int i = 0; i < ndev; i++) {
		if (!(p = sm_begin(&w, 19, 0x1f)))
			break;
		put32(p + 4, 0xffffffffu);         /* see extended addresses */
		put32(p + 8, 0xffffffffu);
		put16(p + 0x0c, array);
		p[0x0e] = 1;
		put64(p + 0x0f, range[i][0]);
		put64(p + 0x17, range[i][0] + range[i][1] - 1);
		sm_end(&w);
	}
	/* Type 32, boot status: no errors. */
	if ((p = sm_begin(&w, 32, 0x0b)))
		sm_end(&w);
	/* Type 127, end of table. */
	if ((p = sm_begin(&w, 127, 4)))
		sm_end(&w);
	if (w.overflow)
		return -1;
	*count = w.count;
	*maxsize = w.maxsize;
	return (int)w.off;
}

static uint8_t checksum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	while (n--)
		s = (uint8_t)(s + *p++);
	return (uint8_t)-s;
}

void smbios_entry_v2(uint8_t ep[SMBIOS_EP2_LEN], uint32_t table_addr, uint16_t len, uint16_t count,
                     uint16_t maxsize)
{
	memset(ep, 0, SMBIOS_EP2_LEN);
	memcpy(ep, "_SM_", 4);
	ep[5] = SMBIOS_EP2_LEN;
	ep[6] = 2;                  /* version 2.8 */
	ep[7] = 8;
	put16(ep + 8, maxsize);
	memcpy(ep + 0x10, "_DMI_", 5);
	put16(ep + 0x16, len);
	put32(ep + 0x18, table_addr);
	put16(ep + 0x1c, count);
	ep[0x1e] = 0x28;            /* BCD revision 2.8 */
	ep[0x15] = checksum(ep + 0x10, 0x0f);
	ep[4] = checksum(ep, SMBIOS_EP2_LEN);
}

void smbios_entry_v3(uint8_t ep[SMBIOS_EP3_LEN], uint64_t table_addr, uint32_t len)
{
	memset(ep, 0, SMBIOS_EP3_LEN);
	memcpy(ep, "_SM3_", 5);
	ep[6] = SMBIOS_EP3_LEN;
	ep[7] = 3;                  /* version 3.0.0 */
	ep[8] = 0;
	ep[9] = 0;
	ep[0x0a] = 1;               /* entry point revision: 3.0 */
	put32(ep + 0x0c, len);
	put64(ep + 0x10, table_addr);
	ep[5] = checksum(ep, SMBIOS_EP3_LEN);
}

int smbios_parse_uuid(const char *s, uint8_t out[16])
{
	if (strlen(s) != 36)
		return -1;
	for (int i = 0, o = 0; i < 36;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i++] != '-')
				return -1;
			continue;
		}
		if (!isxdigit((unsigned char)s[i]) || !isxdigit((unsigned char)s[i + 1]))
			return -1;
		char hex[3] = { s[i], s[i + 1], 0 };
		out[o++] = (uint8_t)strtoul(hex, NULL, 16);
		i += 2;
	}
	return 0;
}

void smbios_default_uuid(const char *vmname, uint8_t out[16])
{
	char host[256] = "";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	gethostname(host, sizeof(host) - 1);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (c && EVP_DigestInit_ex(c, EVP_md5(), NULL) && EVP_DigestUpdate(c, vmname, strlen(vmname)) &&
	    EVP_DigestUpdate(c, host, strlen(host)) && EVP_DigestFinal_ex(c, md, &mdlen) && mdlen >= 16) {
		memcpy(out, md, 16);
	} else {
		/* No MD5 (a FIPS-only OpenSSL): FNV-1a of the same input, spread over 16 bytes. */
		uint64_t h = 0xcbf29ce484222325ULL;
		for (const char *p = vmname; *p; p++)
			h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
		for (const char *p = host; *p; p++)
			h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
		for (int i = 0; i < 16; i++, h = h * 0x100000001b3ULL + 1)
			out[i] = (uint8_t)(h >> 56);
	}
	EVP_MD_CTX_free(c);
	out[6] = (uint8_t)((out[6] & 0x0f) | 0x30);   /* version 3: name-based, MD5 */
	out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
}
