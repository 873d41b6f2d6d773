/*
 * A VM with NVMe controllers and only the KVM layer stubbed, for
 * tests/unit/test_nvme.c and tests/fuzz/fuzz_nvme.c (tests/fuzz/
 * nvme_stubs.c).  The PCI bus and the nvme model are real and built by
 * init_run_all from the configuration nh_setup() is given, as hyve does;
 * blockif is real (io_uring or its threads) on image files.  Guest RAM is
 * two heap blocks: 4 MiB at 0 and 64 KiB at 4 GiB (anything else is not
 * RAM, for PRPs that point outside it).  MSIs (KVM_SIGNAL_MSI: the stub
 * host has no irqfds) and INTx line levels are recorded.  The main loop is
 * nh_poll(): it runs the callbacks of the fds blockif watches (io_uring
 * completions).
 */
#ifndef HYVE_NVME_STUBS_H
#define HYVE_NVME_STUBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pci_devinst;

#define NH_CTX ((struct vmctx *)0x2)
#define NH_RAM0_SIZE (4ull << 20)     /* default; nh_ram0_size before nh_setup() changes it */
#define NH_RAM1_BASE 0x100000000ull
#define NH_RAM1_SIZE (64ull << 10)
extern uint8_t *nh_ram[2];
extern uint64_t nh_ram0_size;

/* Host pointer of guest RAM [gpa, gpa+len); aborts outside RAM. */
void *nh_ptr(uint64_t gpa, size_t len);

/* Config assignments ("key=value", NULL-terminated), then init_run_all. */
void nh_setup(const char *const *kv);
struct pci_devinst *nh_slot(int slot);

/* Guest accesses: ECAM config space of 0:slot.0 and MMIO anywhere. */
void nh_cfg_write(int slot, int off, int bytes, uint32_t val);
uint32_t nh_cfg_read(int slot, int off, int bytes);
void nh_mmio_write(uint64_t addr, int size, uint64_t val);
uint64_t nh_mmio_read(uint64_t addr, int size);

/* Run ready main-loop callbacks (io_uring completions); how many ran. */
int nh_poll(void);

/* Interrupts seen: MSI data values in order (addr 0xfee00000 assumed), INTx levels per GSI. */
#define NH_MAX_MSI 4096
unsigned nh_msi_count(void);
uint32_t nh_msi_data(unsigned i);
void nh_msi_reset(void);
int nh_irq_level(int gsi);

/* A function's whole state (framework + model), as a checkpoint saves it,
 * with the model paused meanwhile; aborts if it cannot be saved. */
struct snap_buf;
void nh_save_state(struct pci_devinst *pi, struct snap_buf *sb);
/* Load what nh_save_state wrote (framework: its part too; else the
 * model's part alone); 0 or -1. */
int nh_load_state(struct pci_devinst *pi, const uint8_t *p, size_t n, bool framework);

/*
 * Operations the device fuzz targets share (operands from a
 * tests/fuzz/fuzz_input.h input):
 *   RAM write    u8 region (bit 0: high RAM), u24 offset, u8 len, bytes
 *   config write u8 offset, u8 size (1 << (n % 3)), u32 value
 *   checkpoint   u8 mode: 0 save the model and load it back (it must load),
 *                else load the next u16-length bytes as its state
 */
struct fuzz_input;
void nh_fuzz_ram_write(struct fuzz_input *in);
void nh_fuzz_cfg_write(struct fuzz_input *in, int slot);
void nh_fuzz_checkpoint(struct fuzz_input *in, struct pci_devinst *pi);
/* Before each input: the function's state from baseline (nh_save_state), RAM zeroed. */
void nh_fuzz_reset(struct pci_devinst *pi, const struct snap_buf *baseline);

/* The last error/warning line the devices logged ("" if none). */
const char *nh_last_log(void);
extern bool nh_verbose;

#endif
