/*
 * USB devices behind the xHCI controller (devices/pci_xhci.c), bhyve's
 * usb_emul.h trimmed: a device answers control requests on endpoint 0 and
 * hands IN data for its other endpoints when it has some.  The controller
 * owns every lock and all guest memory; a device is plain state.
 */
#ifndef HYVE_USB_EMUL_H
#define HYVE_USB_EMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct snap_buf;
struct snap_rd;

/* The 8-byte SETUP packet of a control transfer. */
struct usb_setup {
	uint8_t type;      /* bmRequestType: 0x80 = device to host */
	uint8_t request;   /* bRequest */
	uint16_t value, index, length;
};

/* Port speed IDs of xHCI's default protocol speed table. */
enum { USB_SPEED_FULL = 1, USB_SPEED_LOW = 2, USB_SPEED_HIGH = 3, USB_SPEED_SUPER = 4 };

struct usb_devemu {
	const char *ue_name;   /* slot.N.device= value */
	int ue_speed;          /* USB_SPEED_*: USB_SPEED_SUPER plugs into a USB 3 port */
	void *(*ue_init)(void);
	void (*ue_free)(void *sc);
	/*
	 * A control request; data holds setup->length bytes (OUT: what the
	 * host sent).  Returns the bytes of IN data written to data (at most
	 * setup->length), 0 for OUT, -1 to STALL.
	 */
	int (*ue_request)(void *sc, const struct usb_setup *setup, uint8_t *data);
	/* IN data for endpoint ep (1..15): up to len bytes; 0: nothing (NAK). */
	int (*ue_data_in)(void *sc, int ep, uint8_t *buf, int len);
	/* Bus reset: back to the default state, unconfigured. */
	void (*ue_reset)(void *sc);
	/*
	 * An absolute pointer event from the VNC server: RFB button mask,
	 * position in a w x h screen.  Returns true if the guest has the
	 * device configured (the event is its to report).  May be NULL.
	 */
	bool (*ue_pointer)(void *sc, uint8_t buttons, int x, int y, int w, int h);
	void (*ue_save)(void *sc, struct snap_buf *out);
	bool (*ue_load)(void *sc, struct snap_rd *in);
};

extern const struct usb_devemu usb_tablet_emu;

/*
 * Pointer events go to the USB tablets of every xHCI controller; false if
 * no guest driver has one configured (the caller then uses PS/2).
 */
bool xhci_pointer_event(uint8_t buttons, int x, int y, int w, int h);

#endif
