/*
 * hyve test guest: shared declarations.
 *
 * Everything runs identity-mapped (virtual == physical) in the first 4 GiB,
 * with the U bit set on every page so that CPL3 code can use the same
 * address space (shared memory between the "kernel" and the user loops).
 */
#ifndef TESTGUEST_KERNEL_H
#define TESTGUEST_KERNEL_H

#include <stdarg.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef signed long s64;
typedef unsigned long size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((u64)(a) - 1))
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))
#define barrier() __asm__ __volatile__("" ::: "memory")
#define USER_TEXT __attribute__((section(".text.user"), noinline))
#define noreturn __attribute__((noreturn))

/* GDT selectors (boot.S builds the table; order matches SYSCALL/SYSRET). */
#define KCODE64 0x08
#define KDATA 0x10
#define KCODE32 0x18
#define UCODE32 0x20
#define UDATA 0x28
#define UCODE64 0x30
#define TSS_SEL(cpu) (0x38 + 16 * (cpu))

#define MAX_CPUS 32
#define KSTACK_SIZE 16384	/* power of two: struct cpu * sits at the bottom */
#define USTACK_SIZE 16384

/* Interrupt vectors. */
#define VEC_PIT 0x20		/* IOAPIC pin 2 (ISA IRQ0) */
#define VEC_COM1 0x24		/* IOAPIC pin 4 (ISA IRQ4) */
#define VEC_RTC 0x28		/* IOAPIC pin 8 (unused for now) */
#define VEC_SCI 0x29		/* IOAPIC pin 9 (ACPI SCI) */
#define VEC_LAPIC_TIMER 0x30
#define VEC_INTN 0x80		/* INT n fallback test */
#define VEC_SPURIOUS 0xff

/* ---- port / MSR / misc instructions ---- */
static inline void outb(u16 p, u8 v) { __asm__ __volatile__("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ __volatile__("outw %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outl(u16 p, u32 v) { __asm__ __volatile__("outl %0, %1" :: "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u16 inw(u16 p) { u16 v; __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u32 inl(u16 p) { u32 v; __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ __volatile__("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v)
{
	__asm__ __volatile__("wrmsr" :: "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}
static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ __volatile__("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
			     : "a"(leaf), "c"(sub));
}
static inline void cli(void) { __asm__ __volatile__("cli" ::: "memory"); }
static inline void sti(void) { __asm__ __volatile__("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ __volatile__("hlt" ::: "memory"); }
/* sti;hlt is atomic wrt interrupts: no wakeup can be lost in between. */
static inline void sti_hlt_cli(void) { __asm__ __volatile__("sti; hlt; cli" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }
/* CMOS/RTC register access (index port 0x70, NMI enable bit left clear). */
static inline u8 cmos_read(u8 reg) { outb(0x70, reg); return inb(0x71); }
static inline void cmos_write(u8 reg, u8 v) { outb(0x70, reg); outb(0x71, v); }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }

/* ---- lib.c ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
bool parse_u64(const char *s, u64 *out);

/* ---- spinlock ---- */
typedef struct { volatile u32 v; } spinlock_t;
static inline void spin_lock(spinlock_t *l)
{
	while (__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
		while (READ_ONCE(l->v))
			cpu_relax();
}
static inline void spin_unlock(spinlock_t *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }

/* ---- serial.c / printf.c (usable from CPL0 and from CPL3 with IOPL=3) ---- */
#define COM1 0x3f8
void serial_init(void);
void serial_putc(char c);
void serial_enable_rx_irq(void);
int serial_getc(void);		/* from the IRQ ring buffer, -1 if empty */
void serial_rx_isr(void);
int serial_irq_selftest(u64 timeout_ms);	/* 1 ok, 2 IRQ but IIR wrong, 0 none */
extern volatile u64 com1_irqs;
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int printf_nolock(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
int snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void puts_nolock(const char *s);

/* ---- trap.c ---- */
struct trapframe {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, err;
	u64 rip, cs, rflags, rsp, ss;	/* pushed by the CPU */
};
void idt_init(void);
void idt_load(void);
void idt_load_empty(void);
typedef void (*irq_handler_t)(struct trapframe *tf);
void set_irq_handler(int vec, irq_handler_t h);
/* Expected-exception support for the fallback tests: if the next exception
 * on this CPU has vector `vec`, record it and resume at `resume` (or just
 * return if resume == 0). */
void expect_trap(int vec, u64 resume);
int trap_seen(void);		/* vector recorded by expect_trap, or -1 */
noreturn void panic(const char *fmt, ...);

/* ---- per-cpu ---- */
struct tss {
	u32 rsvd0;
	u64 rsp0, rsp1, rsp2;
	u64 rsvd1;
	u64 ist[7];
	u64 rsvd2;
	u16 rsvd3, iomap_base;
} __attribute__((packed));

struct cpu {
	u32 index;		/* 0 = BSP */
	u32 apic_id;
	u64 user_ksp;		/* kernel RSP saved by user_enter() */
	volatile int expect_vec;	/* expect_trap() state */
	volatile int seen_vec;
	u64 expect_resume;
	u64 seen_rip, seen_cs;	/* frame of the expected trap */
	/* TSS followed by an all-zero I/O permission bitmap.  IOPL=3 alone is
	 * enough on hardware and TCG, but on the PVM host the guest IOPL is lost
	 * and a CPL3 in/out #GP is handed to KVM's emulator, which then consults
	 * this bitmap: with it, CPL3 port I/O is emulated instead of faulting. */
	struct tss tss __attribute__((aligned(16)));
	u8 iobitmap[8192 + 1];	/* +1: terminating 0xff byte */
};
extern struct cpu cpus[MAX_CPUS];
extern u8 kstacks[MAX_CPUS][KSTACK_SIZE];
static inline struct cpu *this_cpu(void)
{
	u64 sp;
	__asm__ __volatile__("mov %%rsp, %0" : "=r"(sp));
	return *(struct cpu **)(sp & ~(u64)(KSTACK_SIZE - 1));
}
void cpu_init(struct cpu *c, u32 index);	/* TSS, GDT descriptor, IDT */

/* ---- apic.c: LAPIC, IOAPIC, PIC, PIT, TSC ---- */
#define LAPIC_BASE 0xfee00000UL
#define IOAPIC_BASE 0xfec00000UL
void pic_disable(void);
extern u16 boot_pic_imr;	/* PIC masks at entry: slave << 8 | master */
void lapic_init(void);
bool lapic_enable_x2apic(void);
u32 lapic_id(void);
void lapic_eoi(void);
void lapic_set_tpr(u32 tpr);
bool lapic_in_service(u32 vec);
void lapic_send_ipi(u32 apic_id, u32 icr_low);
void lapic_timer_start(u32 initial, u32 vec);	/* periodic, divide 16 */
void lapic_timer_start_hz(u32 hz, u32 vec);	/* calibrated against the TSC */
u64 lapic_timer_rate(void);	/* timer counts per second at divide 16 */
void lapic_timer_stop(void);
void ioapic_route(int pin, int vec, u32 dest_apic_id);
void ioapic_mask(int pin);
void pit_start_periodic(u32 hz);
void pit_stop(void);
u64 tsc_khz(void);		/* calibrated once, lazily */
extern const char *tsc_source;
void udelay(u64 us);
u64 tsc_to_us(u64 delta);

/* ---- multiboot / cmdline / memory ---- */
struct mem_region { u64 base, len; };
struct bootinfo {
	char cmdline[512];
	u64 mem_lower_kb, mem_upper_kb;
	struct mem_region ram[32];
	int nram;
	u64 ram_total;
	u64 reserved_end;	/* end of kernel image, mbi, modules */
	int nmods;
};
extern struct bootinfo boot;
void multiboot_parse(u32 magic, u32 mbi);
const char *cmdline_get(const char *key);	/* value after key=, or NULL */
bool cmdline_get_u64(const char *key, u64 *out);
bool ram_range_ok(u64 base, u64 len);

/* ---- acpi.c ---- */
struct acpi_info {
	bool found;
	int ncpus;
	u32 apic_ids[MAX_CPUS];
	int irq0_gsi;		/* from an interrupt source override, else -1 */
	char oem[7];
	u64 facs;		/* the FADT's FIRMWARE_CTRL (X_ when set), 0 if none */
};
extern struct acpi_info acpi;
void acpi_scan(void);
u64 acpi_facs(void);
int pit_gsi(const char **why);	/* IOAPIC pin the PIT (ISA IRQ0) arrives on */

/* ---- smp.c ---- */
int smp_boot_aps(u64 timeout_ms);	/* returns number of CPUs online */
int cpu_count_guess(void);

/* ---- user.c ---- */
#define UREQ_EXIT 1		/* rdi = return value for user_run() */
typedef u64 (*user_fn_t)(u64 arg);
/* rflags 0 = default: IOPL=3 | IF | bit 1 */
#define USER_RFLAGS 0x3202UL
u64 user_run(user_fn_t fn, u64 arg, u64 rflags);
extern volatile u64 user_fault_vec, user_fault_rip, user_fault_err;
extern u8 ustacks[MAX_CPUS][USTACK_SIZE];
/* asm (trap.S) */
u64 user_enter(u64 rip, u64 arg, u64 ursp, u64 rflags, u64 *save_ksp, u64 *tss_rsp0);
noreturn void user_return(u64 ksp, u64 value);
void user_exit_stub(void);
bool user_trap(struct trapframe *tf);	/* trap from CPL3: true if handled */
USER_TEXT noreturn void uexit(u64 value);	/* leave CPL3 (ud2 request) */

/* ---- power ---- */
noreturn void debug_exit(u32 value);
noreturn void poweroff(void);
noreturn void reboot(void);
noreturn void test_pass(const char *name);
noreturn void test_fail(const char *name, const char *fmt, ...);

/* ---- fallback.S ---- */
u64 fb_int3(void);
u64 fb_intn(void);
u64 fb_into(void);
u64 fb_fwait(void);
u64 fb_popcnt(u64 v);
extern char fb_int3_after[], fb_intn_after[], fb_into_after[], fb_popcnt_resume[];

/* ---- tests / shell ---- */
void run_test(const char *name);
void shell_run(void);

/* boot.S / linker */
extern char _image_start[], _image_end[];
extern u64 gdt[];
extern volatile u32 ap_started;

#endif
