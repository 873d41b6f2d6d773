/*
 * A small real VM for the fuzz targets that load device state (fuzz_ckpt.c,
 * fuzz_migration.c), with only the KVM layer stubbed (tests/fuzz/
 * fuzz_vm_stubs.c): guest RAM is two heap blocks; vCPU and in-kernel chip
 * state are accepted as KVM would take any well-sized blob; the event loop,
 * the control socket hooks, vCPU run control and logging are no-ops.
 *
 * The devices are real, built once from a fixed configuration by
 * init_run_all as hyve does:
 *   lpc (com1 to /dev/null), virtio-rnd at 0:3, virtio-9p at 0:4 (a share
 *   in a scratch directory, tag "fz"), virtio-console at 0:5 (port "fz" on
 *   a unix socket); 1 vCPU; 8 KiB low RAM and 4 KiB at 4 GiB.
 * Targets reset between inputs with config_clear() + fz_set_fixed_config()
 * and fz_load_baseline() (the devices' initial state saved at start-up).
 */
#ifndef HYVE_FUZZ_VM_STUBS_H
#define HYVE_FUZZ_VM_STUBS_H

#include <stdbool.h>
#include <stdint.h>

#include "../../core/vm.h"
#include "../../core/vmstate.h"

struct pci_devinst;

/* Guest RAM: two regions, as vm_mem_regions reports them (bench/mig_pipeline.c
 * builds with a larger region 0). */
#ifndef FZ_RAM0_SIZE
#define FZ_RAM0_SIZE 0x2000ULL
#endif
#define FZ_RAM1_BASE 0x100000000ULL
#define FZ_RAM1_SIZE 0x1000ULL
#define FZ_NREGIONS 2
extern uint8_t *fz_ram[FZ_NREGIONS];
extern const uint64_t fz_ram_gpa[FZ_NREGIONS], fz_ram_size[FZ_NREGIONS];

#define FZ_CTX ((struct vmctx *)0x1)
#define FZ_NCPUS 1
extern struct hyve_vm fz_vm;

/* The scratch directory (removed at exit), the 9p share and the console socket. */
extern char fz_tmpdir[64], fz_share[96], fz_share_file[128], fz_share_dir[128], fz_con_sock[128];

/* The CPUID leaves vm_get_supported_cpuid reports (what build_compat sends). */
extern const struct kvm_cpuid_entry2 fz_cpuid[];
extern const int fz_ncpuid;

/*
 * Build the VM: scratch directory /tmp/NAME.XXXXXX with the share, RAM,
 * main.c's core keys registered (for config_validate), the fixed
 * configuration, init_run_all.  Once per process.
 */
void fz_setup(const char *name);
/* The fixed configuration (into an empty tree), host-side keys included. */
void fz_set_fixed_config(void);
/*
 * The keys naming host resources (what -o gives when a foreign config is
 * not trusted).  -1 if the tree refuses one (a foreign config made
 * pci.0.4.0 a value, say): hyve's -o would fail there and it would exit.
 */
int fz_set_host_keys(void);
/* Save the devices' current state as the baseline / load it back (aborts if it does not load). */
void fz_save_baseline(void);
void fz_load_baseline(void);
/* The device in slot 0:SLOT.0, or NULL. */
struct pci_devinst *fz_slot(int slot);
/* A guest driver's write to the modern virtio BAR; the modern bring-up of
 * queue 0 with the rings at desc/avail/used (for the seed modes). */
void fz_vi_write(struct pci_devinst *pi, uint64_t off, int size, uint64_t val);
void fz_bring_up(struct pci_devinst *pi, uint16_t qsize, uint64_t desc, uint64_t avail, uint64_t used);
/* Abort if a restored PCI BAR does not fit its type (regress/ckpt/crash-io-bar-wrap). */
void fz_check_bars(void);

#endif
