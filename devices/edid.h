/*
 * EDID 1.4 base block (VESA E-EDID): what a monitor tells the graphics
 * driver about itself.  fbuf's bochs variant shows one at the start of its
 * MMIO BAR, as QEMU's bochs-display does, so that SeaBIOS's VGA BIOS, OVMF
 * and Linux's bochs-drm take the configured w x h as the preferred mode.
 */
#ifndef HYVE_EDID_H
#define HYVE_EDID_H

#include <stdint.h>

#define EDID_BLOCK_SIZE 128

/* One base block, no extensions: preferred (native) mode width x height at
 * 60 Hz, 32 bits per pixel, monitor name "hyve". */
void edid_build(uint8_t out[EDID_BLOCK_SIZE], uint16_t width, uint16_t height);

#endif
