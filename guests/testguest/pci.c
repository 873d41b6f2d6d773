/*
 * PCI configuration mechanism #1 (0xcf8 address, 0xcfc data) on bus 0.
 * BARs are read as the VMM assigned them (no sizing, no relocation).
 */
#include "virtio.h"

struct pci_func pci_funcs[PCI_MAX_FUNCS];
int pci_nfuncs = -1;

static void cfg_addr(u8 bus, u8 dev, u8 fn, u8 off)
{
	outl(0xcf8, 0x80000000u | (u32)bus << 16 | (u32)dev << 11 | (u32)fn << 8 | (off & 0xfc));
}

static u32 cfg_read32(u8 bus, u8 dev, u8 fn, u8 off)
{
	cfg_addr(bus, dev, fn, off);
	return inl(0xcfc);
}

u32 pci_cfg_read32(const struct pci_func *f, u8 off)
{
	return cfg_read32(f->bus, f->dev, f->fn, off);
}

u16 pci_cfg_read16(const struct pci_func *f, u8 off)
{
	cfg_addr(f->bus, f->dev, f->fn, off);
	return inw(0xcfc + (off & 2));
}

u8 pci_cfg_read8(const struct pci_func *f, u8 off)
{
	cfg_addr(f->bus, f->dev, f->fn, off);
	return inb(0xcfc + (off & 3));
}

void pci_cfg_write16(const struct pci_func *f, u8 off, u16 v)
{
	cfg_addr(f->bus, f->dev, f->fn, off);
	outw(0xcfc + (off & 2), v);
}

void pci_cfg_write32(const struct pci_func *f, u8 off, u32 v)
{
	cfg_addr(f->bus, f->dev, f->fn, off);
	outl(0xcfc, v);
}

static void read_bars(struct pci_func *f)
{
	for (int i = 0; i < 6; i++) {
		u32 lo = pci_cfg_read32(f, 0x10 + 4 * i);
		if (lo & 1) {
			f->bar_io[i] = true;
			f->bar[i] = lo & ~3u;
			continue;
		}
		f->bar[i] = lo & ~0xfu;
		if (((lo >> 1) & 3) == 2 && i < 5) {	/* 64-bit: next BAR is the high half */
			f->bar_64[i] = true;
			f->bar[i] |= (u64)pci_cfg_read32(f, 0x10 + 4 * (i + 1)) << 32;
			i++;
		}
	}
}

int pci_scan(void)
{
	if (pci_nfuncs >= 0)
		return pci_nfuncs;
	pci_nfuncs = 0;
	for (u8 dev = 0; dev < 32; dev++) {
		u8 nfn = 1;
		for (u8 fn = 0; fn < nfn; fn++) {
			u32 id = cfg_read32(0, dev, fn, 0);
			if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
				continue;
			if (fn == 0 && (cfg_read32(0, dev, 0, 0x0c) & 0x800000))
				nfn = 8;	/* multi-function */
			if (pci_nfuncs >= PCI_MAX_FUNCS)
				return pci_nfuncs;
			struct pci_func *f = &pci_funcs[pci_nfuncs++];
			f->bus = 0;
			f->dev = dev;
			f->fn = fn;
			f->vendor = id & 0xffff;
			f->device = id >> 16;
			u32 cls = pci_cfg_read32(f, 0x08);
			f->revision = cls & 0xff;
			f->subclass = (cls >> 16) & 0xff;
			f->class = cls >> 24;
			f->irq_pin = pci_cfg_read8(f, 0x3d);
			u8 hdr = (pci_cfg_read32(f, 0x0c) >> 16) & 0x7f;
			if (hdr == 0)
				read_bars(f);
		}
	}
	return pci_nfuncs;
}
