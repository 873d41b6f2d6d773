/* The i8042's PS/2 keyboard and mouse, fed by the VNC server (devices/fbuf.c). */
#ifndef HYVE_ATKBDC_H
#define HYVE_ATKBDC_H

#include <stdbool.h>
#include <stdint.h>

/* Scancode set 2 bytes from the keyboard (a make or break sequence). */
void atkbdc_key(const uint8_t *codes, int n);
/* An absolute pointer position and RFB button mask: relative PS/2 packets. */
void atkbdc_pointer(uint8_t buttons, int x, int y);
/* X keysym -> set 2 sequence for a press or release; 0 if the key is unknown. */
int ps2_keysym_to_set2(uint32_t keysym, bool down, uint8_t out[8]);

#endif
