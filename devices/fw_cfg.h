/*
 * QEMU's firmware configuration interface (fw_cfg), the one SeaBIOS, OVMF
 * and bhyve's qemu_fwcfg speak: a 16-bit selector at I/O 0x510, a byte-wide
 * data port at 0x511 and the DMA address register at 0x514 (big-endian,
 * writing its low half at 0x518 starts the transfer).  Items are fixed keys
 * (signature, CPU count, RAM size, ...) and named files listed in the file
 * directory (key 0x19).
 *
 * Other code adds files before the guest runs (ACPI tables, e820, boot
 * order); the contents never change while the VM runs, so a checkpoint
 * keeps only the selector, offset and DMA address (the items are rebuilt
 * from the configuration on restore).
 */
#ifndef HYVE_FW_CFG_H
#define HYVE_FW_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FW_CFG_PORT_SEL    0x510
#define FW_CFG_PORT_DATA   0x511
#define FW_CFG_PORT_DMA    0x514

/* Fixed keys (QEMU's docs/specs/fw_cfg.rst). */
#define FW_CFG_SIGNATURE   0x0000
#define FW_CFG_ID          0x0001
#define FW_CFG_UUID        0x0002
#define FW_CFG_RAM_SIZE    0x0003
#define FW_CFG_NOGRAPHIC   0x0004
#define FW_CFG_NB_CPUS     0x0005
#define FW_CFG_BOOT_MENU   0x000e
#define FW_CFG_MAX_CPUS    0x000f
#define FW_CFG_KERNEL_ADDR 0x0007
#define FW_CFG_KERNEL_SIZE 0x0008
#define FW_CFG_KERNEL_CMDLINE 0x0009
#define FW_CFG_INITRD_ADDR 0x000a
#define FW_CFG_INITRD_SIZE 0x000b
#define FW_CFG_KERNEL_DATA 0x0011
#define FW_CFG_INITRD_DATA 0x0012
#define FW_CFG_CMDLINE_ADDR 0x0013
#define FW_CFG_CMDLINE_SIZE 0x0014
#define FW_CFG_CMDLINE_DATA 0x0015
#define FW_CFG_SETUP_ADDR  0x0016
#define FW_CFG_SETUP_SIZE  0x0017
#define FW_CFG_SETUP_DATA  0x0018
#define FW_CFG_FILE_DIR    0x0019
#define FW_CFG_FILE_FIRST  0x0020
#define FW_CFG_FILE_MAX    0x1000   /* file keys 0x20 .. 0x101f */

#define FW_CFG_NAME_LEN    56       /* including the terminating NUL */

/* True when the VM has a fw_cfg device (lpc.fwcfg=qemu, the default with an lpc). */
bool fw_cfg_enabled(void);

/*
 * Add a named file, copying len bytes of data.  -1 if fw_cfg is off, the
 * name is empty, too long or taken, or memory runs out; err says which.
 */
int fw_cfg_add_file(const char *name, const void *data, size_t len, char *err, size_t errlen);
/* Same for a fixed key (replaces an earlier value). */
int fw_cfg_set_item(uint16_t key, const void *data, size_t len, char *err, size_t errlen);

/*
 * QEMU's ACPI table-loader script (etc/table-loader): commands of 128
 * bytes that SeaBIOS and OVMF run to place fw_cfg files in guest memory
 * and link them.  The builder appends commands; fw_cfg_loader_file() adds
 * the script as a file.
 */
enum fw_cfg_zone { FW_CFG_ZONE_HIGH = 1, FW_CFG_ZONE_FSEG = 2 };
struct fw_cfg_loader;
struct fw_cfg_loader *fw_cfg_loader_new(void);
void fw_cfg_loader_free(struct fw_cfg_loader *l);
int fw_cfg_loader_allocate(struct fw_cfg_loader *l, const char *file, uint32_t align, enum fw_cfg_zone zone);
/* dest[offset..offset+size) (little-endian) += guest address of src file. */
int fw_cfg_loader_add_pointer(struct fw_cfg_loader *l, const char *dest, const char *src, uint32_t offset,
                              uint8_t size);
/* file[offset] = checksum making file[start..start+length) sum to zero. */
int fw_cfg_loader_add_checksum(struct fw_cfg_loader *l, const char *file, uint32_t offset, uint32_t start,
                               uint32_t length);
const uint8_t *fw_cfg_loader_data(const struct fw_cfg_loader *l, size_t *len);

#endif
