/*
 * EDID 1.4 base block for a virtual monitor (edid.h).  Layout from VESA
 * E-EDID release A rev. 2: header, vendor/product, basic display
 * parameters, sRGB chromaticity, one detailed timing (the preferred mode)
 * with CVT reduced-blanking numbers at 60 Hz, a name and a range-limits
 * descriptor, checksum.
 */
#include <string.h>

#include "edid.h"

#define REFRESH_HZ 60
#define DPI        96     /* physical size reported: what a desktop assumes anyway */

/* CVT reduced blanking (v1): fixed horizontal blanking, vertical blanking of at least 460 us. */
#define H_FRONT   48
#define H_SYNC    32
#define H_BLANK   160
#define V_FRONT   3
#define V_SYNC    6       /* "other" aspect ratio: any w x h */
#define V_BLANK_MIN_NS 460000u

static void put_descriptor_text(uint8_t *d, uint8_t tag, const char *text)
{
	memset(d, 0, 18);
	d[3] = tag;
	size_t n = strlen(text);
	for (size_t i = 0; i < 13; i++)
		d[5 + i] = i < n ? (uint8_t)text[i] : i == n ? '\n' : ' ';
}

/* Chromaticity coordinate as the 10-bit binary fraction EDID stores. */
static unsigned chroma(unsigned x10000) { return (x10000 * 1024 + 5000) / 10000; }

void edid_build(uint8_t e[EDID_BLOCK_SIZE], uint16_t width, uint16_t height)
{
	memset(e, 0, EDID_BLOCK_SIZE);
	static const uint8_t header[8] = { 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00 };
	memcpy(e, header, sizeof(header));
	/* Manufacturer "HYV": three 5-bit letters (A = 1), big-endian. */
	uint16_t mfg = (uint16_t)(('H' - 'A' + 1) << 10 | ('Y' - 'A' + 1) << 5 | ('V' - 'A' + 1));
	e[8] = (uint8_t)(mfg >> 8);
	e[9] = (uint8_t)mfg;
	e[10] = 0x01;                 /* product code 1, little-endian; serial number 0 */
	e[16] = 0;                    /* week unknown */
	e[17] = 2026 - 1990;          /* model year */
	e[18] = 1;                    /* EDID 1.4 */
	e[19] = 4;
	e[20] = 0x80 | 0x20;          /* digital input, 8 bits per colour, interface not defined */
	unsigned w_mm = (unsigned)width * 254 / (DPI * 10), h_mm = (unsigned)height * 254 / (DPI * 10);
	e[21] = (uint8_t)((w_mm + 5) / 10);   /* screen size in cm */
	e[22] = (uint8_t)((h_mm + 5) / 10);
	e[23] = 120;                  /* gamma 2.2: (2.2 - 1) * 100 */
	e[24] = 0x04 | 0x02;          /* sRGB is the default colour space; preferred timing is native */
	/* sRGB primaries and D65 white point: low 2 bits packed in 25-26, high 8 bits in 27-34. */
	unsigned c[8] = { chroma(6400), chroma(3300), chroma(3000), chroma(6000),
	                  chroma(1500), chroma(600),  chroma(3127), chroma(3290) };
	e[25] = (uint8_t)((c[0] & 3) << 6 | (c[1] & 3) << 4 | (c[2] & 3) << 2 | (c[3] & 3));
	e[26] = (uint8_t)((c[4] & 3) << 6 | (c[5] & 3) << 4 | (c[6] & 3) << 2 | (c[7] & 3));
	for (int i = 0; i < 8; i++)
		e[27 + i] = (uint8_t)(c[i] >> 2);
	/* No established timings (35-37); standard timings unused (01 01). */
	for (int i = 38; i < 54; i++)
		e[i] = 0x01;

	/* Detailed timing 1, the preferred mode. */
	unsigned htotal = width + H_BLANK;
	/* Lines of vertical blanking: 460 us worth at the line rate of a 60 Hz frame. */
	unsigned long long frame_ns = 1000000000ull / REFRESH_HZ;
	unsigned long long line_ns = (frame_ns - V_BLANK_MIN_NS) / height;
	unsigned vblank = (unsigned)((V_BLANK_MIN_NS + line_ns - 1) / line_ns) + 1;
	if (vblank < V_FRONT + V_SYNC + 6)
		vblank = V_FRONT + V_SYNC + 6;
	unsigned vtotal = height + vblank;
	unsigned clock = (unsigned)(((unsigned long long)htotal * vtotal * REFRESH_HZ + 9999) / 10000);   /* 10 kHz */
	uint8_t *d = e + 54;
	d[0] = (uint8_t)clock;
	d[1] = (uint8_t)(clock >> 8);
	d[2] = (uint8_t)width;
	d[3] = H_BLANK & 0xff;
	d[4] = (uint8_t)((width >> 8) << 4 | (H_BLANK >> 8));
	d[5] = (uint8_t)height;
	d[6] = (uint8_t)vblank;
	d[7] = (uint8_t)((height >> 8) << 4 | (vblank >> 8));
	d[8] = H_FRONT;
	d[9] = H_SYNC;
	d[10] = (uint8_t)(V_FRONT << 4 | V_SYNC);
	d[11] = 0;                    /* high bits of the sync numbers: all small */
	d[12] = (uint8_t)w_mm;
	d[13] = (uint8_t)h_mm;
	d[14] = (uint8_t)((w_mm >> 8) << 4 | (h_mm >> 8));
	d[17] = 0x18 | 0x02;          /* digital separate sync: +hsync -vsync (reduced blanking) */

	put_descriptor_text(e + 72, 0xfc, "hyve");   /* monitor name */
	/* Range limits: 50-75 Hz, 20-160 kHz, 200 MHz; "range limits only" (no GTF/CVT formula). */
	d = e + 90;
	d[3] = 0xfd;
	d[5] = 50;
	d[6] = 75;
	d[7] = 20;
	d[8] = 160;
	d[9] = 20;
	d[10] = 0x01;
	d[11] = '\n';
	memset(d + 12, ' ', 6);
	e[108 + 3] = 0x10;            /* dummy descriptor */

	uint8_t sum = 0;
	for (int i = 0; i < EDID_BLOCK_SIZE - 1; i++)
		sum = (uint8_t)(sum + e[i]);
	e[EDID_BLOCK_SIZE - 1] = (uint8_t)(0x100 - sum);
}
