/*
 * A CFI flash part (Intel/Sharp command set, as QEMU's pflash_cfi01) over
 * a host mapping: the UEFI variable store of -l bootrom,ROM,VARS.  Reads in
 * read-array mode come straight from a read-only memory slot; every write
 * exits and is a flash command.
 */
#ifndef HYVE_PFLASH_H
#define HYVE_PFLASH_H

#include <stddef.h>
#include <stdint.h>

struct vmctx;

/* Erase block: what OVMF's PcdOvmfFirmwareBlockSize and QEMU's pc flash use. */
#define PFLASH_BLOCK_SIZE 4096u

/*
 * Put the flash at [gpa, gpa + size) over mem (size a multiple of the
 * block; mem a MAP_SHARED file mapping, so programs reach the file).
 * One per VM.  -1 with err on failure.
 */
int pflash_attach(struct vmctx *ctx, uint64_t gpa, uint8_t *mem, uint64_t size, char *err, size_t errlen);

#endif
