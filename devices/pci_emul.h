/*
 * PCI device emulation framework (bhyve's pci_emul.h, trimmed).
 *
 * A device model is a struct pci_devemu registered from its own file with
 * PCI_EMUL_REGISTER().  Instances come from config keys
 *   pci.<bus>.<slot>.<func>.device=<model>   (+ model options beside it)
 * written by -s or -k.  The framework owns config space, BAR placement and
 * decoding, INTx routing and MSI/MSI-X delivery; the model fills its ids and
 * capabilities at init and handles BAR accesses.
 */
#ifndef HYVE_PCI_EMUL_H
#define HYVE_PCI_EMUL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/config.h"

struct vmctx;
struct vcpu;
struct pci_devinst;
struct snap_buf;
struct snap_rd;

#define PCI_MAX_BARS 6
#define PCI_ROM_IDX  PCI_MAX_BARS   /* pi_bar[] index of the expansion ROM BAR */
#define PCI_CFG_SIZE 4096

enum pcibar_type { PCIBAR_NONE, PCIBAR_IO, PCIBAR_MEM32, PCIBAR_MEM64, PCIBAR_MEMHI64 };

struct pcibar {
	enum pcibar_type type;
	uint64_t addr;
	uint64_t size;
	bool registered;   /* currently decoded (in the PIO/MMIO tables) */
};

struct pci_devemu {
	const char *pe_emu;          /* model name used by -s */
	const char *pe_help;         /* one line for -s help */
	/* Option keys accepted beside .device (NULL-terminated), for validation. */
	const char *const *pe_options;
	/*
	 * Answers config cycles even without a function 0 in its slot: a
	 * chipset function that firmware addresses directly (piix4-pm at 1:3),
	 * invisible to a guest that enumerates the bus.
	 */
	bool pe_standalone_func;
	/*
	 * Turn the "-s slot,model,OPTS" tail into config keys under cfgpath.
	 * NULL: OPTS is a comma list of key=value (bare key means key=true).
	 */
	int (*pe_legacy_config)(const char *cfgpath, const char *opts, char *err, size_t errlen);
	int (*pe_init)(struct pci_devinst *pi, const char *cfgpath);
	/* Config space hooks: return 0 if handled, 1 for default behaviour. */
	int (*pe_cfgwrite)(struct pci_devinst *pi, int off, int bytes, uint32_t val);
	int (*pe_cfgread)(struct pci_devinst *pi, int off, int bytes, uint32_t *val);
	void (*pe_barwrite)(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off,
	                    int size, uint64_t val);
	uint64_t (*pe_barread)(struct vcpu *vcpu, struct pci_devinst *pi, int baridx, uint64_t off,
	                       int size);
	/* A BAR started (decoded) or stopped being decoded at addr: lets a
	 * model move what KVM handles for it (ioeventfds).  May be NULL. */
	void (*pe_baraddr)(struct pci_devinst *pi, int baridx, bool decoded, uint64_t addr);
	/*
	 * Checkpoint (core/snapshot.h).  The framework saves config space,
	 * BAR placement, INTx and MSI/MSI-X state itself; these hooks save the
	 * model's own state.  pe_snapshot == NULL: the model cannot be
	 * checkpointed and a checkpoint fails naming it.  pe_restore runs after
	 * pe_init on a freshly configured instance and after the framework
	 * state is back.  pe_pause stops taking new requests and waits for
	 * in-flight I/O (called with every vCPU already stopped); pe_resume
	 * undoes it.
	 */
	uint32_t pe_snapshot_version;
	int (*pe_snapshot)(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen);
	int (*pe_restore)(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err,
	                  size_t errlen);
	void (*pe_pause)(struct pci_devinst *pi);
	void (*pe_resume)(struct pci_devinst *pi);
};

struct pci_devinst {
	const struct pci_devemu *pi_d;
	struct vmctx *pi_vmctx;
	uint8_t pi_bus, pi_slot, pi_func;
	char pi_name[32];
	uint8_t pi_cfg[PCI_CFG_SIZE];
	struct pcibar pi_bar[PCI_MAX_BARS + 1];   /* +1: the expansion ROM (PCI_ROM_IDX) */
	uint8_t *pi_rom;         /* its contents, pi_bar[PCI_ROM_IDX].size bytes; NULL: none */
	int pi_capend;           /* end of the last capability added */
	int pi_lintr_pin;        /* 0 none, 1..4 = INTA..INTD */
	int pi_lintr_gsi;
	bool pi_lintr_asserted;
	struct {
		int capoff;
		bool enabled;
		int table_bar, pba_bar;
		uint32_t table_off, pba_off;
		int table_count;
		struct msix_entry { uint64_t addr; uint32_t data; uint32_t ctrl; } *table;
		uint64_t *pba;
		/* Per vector: the irqfd that raises it (made on first use; gsi -1
		 * not yet, -2 unavailable) and whether the route must be rewritten
		 * because the guest changed the address/data since. */
		struct msix_irqfd { int fd; int gsi; bool stale; } *irqfd;
		bool function_mask;
	} pi_msix;
	struct {
		int capoff;
		bool enabled;
		uint64_t addr;
		uint16_t data;
		int maxmsgnum;
	} pi_msi;
	pthread_mutex_t pi_lock;
	void *pi_arg;            /* the model's softc */
};

void pci_emul_register(const struct pci_devemu *pe);
const struct pci_devemu *pci_emul_find(const char *name);
#define PCI_EMUL_REGISTER(pe)                                                  \
	static void __attribute__((constructor)) pe##_register(void)           \
	{ pci_emul_register(&pe); }

/* Config space accessors for models. */
static inline void pci_set_cfgdata8(struct pci_devinst *pi, int off, uint8_t v) { pi->pi_cfg[off] = v; }
static inline void pci_set_cfgdata16(struct pci_devinst *pi, int off, uint16_t v) { pi->pi_cfg[off] = (uint8_t)v; pi->pi_cfg[off + 1] = (uint8_t)(v >> 8); }
static inline void pci_set_cfgdata32(struct pci_devinst *pi, int off, uint32_t v) { pci_set_cfgdata16(pi, off, (uint16_t)v); pci_set_cfgdata16(pi, off + 2, (uint16_t)(v >> 16)); }
static inline uint8_t pci_get_cfgdata8(const struct pci_devinst *pi, int off) { return pi->pi_cfg[off]; }
static inline uint16_t pci_get_cfgdata16(const struct pci_devinst *pi, int off) { return (uint16_t)(pi->pi_cfg[off] | pi->pi_cfg[off + 1] << 8); }
static inline uint32_t pci_get_cfgdata32(const struct pci_devinst *pi, int off) { return pci_get_cfgdata16(pi, off) | (uint32_t)pci_get_cfgdata16(pi, off + 2) << 16; }

/* Standard config space offsets used by models. */
#define PCIR_VENDOR 0x00
#define PCIR_DEVICE 0x02
#define PCIR_COMMAND 0x04
#define PCIR_STATUS 0x06
#define PCIR_REVID 0x08
#define PCIR_PROGIF 0x09
#define PCIR_SUBCLASS 0x0a
#define PCIR_CLASS 0x0b
#define PCIR_HDRTYPE 0x0e
#define PCIR_BAR0 0x10
#define PCIR_SUBVEND 0x2c
#define PCIR_SUBDEV 0x2e
#define PCIR_BIOS 0x30            /* expansion ROM base address */
#define PCIM_BIOS_ENABLE 0x01
#define PCIR_CAP_PTR 0x34
#define PCIR_INTLINE 0x3c
#define PCIR_INTPIN 0x3d
#define PCIM_CMD_PORTEN 0x0001
#define PCIM_CMD_MEMEN 0x0002
#define PCIM_CMD_INTxDIS 0x0400
#define PCIM_STATUS_CAPPRESENT 0x0010
#define PCIM_STATUS_INTxSTATE 0x0008

/* Allocate a BAR of the given type and size (power of two) and decode it. */
int pci_emul_alloc_bar(struct pci_devinst *pi, int idx, enum pcibar_type type, uint64_t size);
/*
 * Give the function an expansion ROM (config offset 0x30) holding a copy
 * of data: a read-only memory BAR, disabled until the guest sets its
 * enable bit, which firmware maps to copy the option ROM it finds there
 * (SeaBIOS runs a display's VGA BIOS so).  Reads past len return 0xff.
 */
int pci_emul_alloc_rom(struct pci_devinst *pi, const void *data, size_t len);
/* Append a capability (cap[0] = id; next pointer filled in); returns its offset or -1. */
int pci_emul_add_capability(struct pci_devinst *pi, const uint8_t *cap, int len);
int pci_emul_add_pciecap(struct pci_devinst *pi, int port_type);
int pci_emul_add_msicap(struct pci_devinst *pi, int msgnum);
int pci_emul_add_msixcap(struct pci_devinst *pi, int msgnum, int barnum);

/* Interrupts: INTx (level, shared by slot/pin routing), MSI and MSI-X. */
int pci_lintr_request(struct pci_devinst *pi);
void pci_lintr_assert(struct pci_devinst *pi);
void pci_lintr_deassert(struct pci_devinst *pi);
bool pci_msi_enabled(struct pci_devinst *pi);
void pci_generate_msi(struct pci_devinst *pi, int index);
bool pci_msix_enabled(struct pci_devinst *pi);
/* Raises the vector through its irqfd where KVM has them (pci.irqfd),
 * else with KVM_SIGNAL_MSI; a masked vector is left pending. */
void pci_generate_msix(struct pci_devinst *pi, int index);
/* Wait until every interrupt this function's irqfds already raised has
 * reached the vCPUs (before saving LAPIC state). */
void pci_emul_irqfd_flush(struct pci_devinst *pi);
/* MSI-X table/PBA accesses routed from the model's BAR handler. */
bool pci_emul_msix_bar_access(struct pci_devinst *pi, int baridx, uint64_t off, int size,
                              bool write, uint64_t *val);

/* PCI INTx routing shared with the ACPI _PRT: slot/pin → GSI. */
static inline int pci_intx_gsi(int slot, int pin /* 0=INTA */) { return 16 + ((slot + pin) % 8); }

/* Used by the firmware-table builder. */
typedef void (*pci_walk_fn)(struct pci_devinst *pi, void *arg);
void pci_walk_devices(pci_walk_fn fn, void *arg);
/* Models and their help, for -s help. */
void pci_print_models(void);
/*
 * "-s" option tails: comma-separated key=value under cfgpath (a bare key
 * means key=true); with first_bare_key, a first token without '=' is the
 * value of that key (bhyve's "-s 4,virtio-blk,/path/disk.img,ro").
 */
int pci_parse_options(const char *cfgpath, const char *opts, const char *first_bare_key,
                      char *err, size_t errlen);
/* Checkpoint: config space, BAR placement, INTx and MSI-X state of one
 * function (the model's own state goes through pe_snapshot). */
int pci_emul_save_state(struct pci_devinst *pi, struct snap_buf *out);
int pci_emul_load_state(struct pci_devinst *pi, struct snap_rd *in, char *err, size_t errlen);
/* pe_snapshot/pe_restore for models whose whole state is what the
 * framework saves (config space, BARs, interrupts). */
int pci_emul_snapshot_none(struct pci_devinst *pi, struct snap_buf *out, char *err, size_t errlen);
int pci_emul_restore_none(struct pci_devinst *pi, struct snap_rd *in, uint32_t version, char *err, size_t errlen);
/*
 * Parse the -s argument into config keys; -1 with err on failure (an
 * option the model does not have is one).  A slot already configured is
 * an error, except the same model in a slot the restored configuration
 * has (pci_note_restored_slots): its keys are replaced, once.
 */
int pci_parse_slot(const char *opt, char *err, size_t errlen);
/* After -r/-R loaded the configuration: remember which slots it has. */
void pci_note_restored_slots(void);
/*
 * Checks across a function's keys, through fn (config.h): a function > 0
 * without a function 0, bhyve option aliases that contradict the model's
 * own option or that hyve does not implement, bootindex.  Returns the
 * number of errors.
 */
int pci_check_config(config_report_fn fn, void *arg);
/* Add hostbridge at 0:0:0 and lpc at 0:31:0 unless the user placed them. */
void pci_add_default_devices(void);

#endif
