# hyve — build, test, demo.  GNU make; dependencies found with pkg-config.
CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -MMD -MP -I.
LDFLAGS += -pthread
LDLIBS  += $(shell pkg-config --libs liburing zlib liblzma libzstd liblz4 slirp libssl libcrypto libseccomp)

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BUILD   := build/sanitize
else
BUILD   := build/release
endif

VMM_SRCS     := vmm/vmm.c vmm/emulator_probe.c
CORE_SRCS    := core/main.c core/config.c core/log.c core/init.c core/inout.c core/mmio.c \
                core/mevent.c core/vcpu.c core/cpuid.c core/emulate.c core/insn_decode.c core/insn_mem.c \
                core/insn_complete.c core/snapshot.c \
                core/vmstate.c core/checkpoint.c core/control.c core/migration.c core/migration_tls.c \
                core/config_trust.c core/sandbox.c core/sandbox_landlock.c core/bhyve_compat.c \
                core/netlisten.c core/vcpu_regs.c core/control_vcpu.c core/gdb_proto.c core/gdbstub.c
# Device models are one file each and register themselves: every file here is built.
DEVICE_SRCS  := $(sort $(wildcard devices/*.c))
BOOT_SRCS    := boot/x86.c boot/multiboot.c boot/linux.c boot/linux_adapt.c boot/acpi.c boot/aml.c \
                boot/firmware.c boot/bootrom.c boot/fwcfg_linux.c boot/pic.c boot/smbios.c
HYVE_SRCS    := $(VMM_SRCS) $(CORE_SRCS) $(DEVICE_SRCS) $(BOOT_SRCS)
HYVE_OBJS    := $(HYVE_SRCS:%.c=$(BUILD)/%.o)

GUEST        := guests/testguest/testguest.elf
BOOTSECT     := guests/bootsect/bootsect.bin
CTL_OBJS     := $(BUILD)/ctl/hyvectl.o

.PHONY: all bench clean check check-slow demo deps guest linux hyvectl install
all: hyve hyvectl $(GUEST) $(BOOTSECT)

# ./hyve points at the last build flavour asked for (release or SANITIZE=1).
hyve: $(BUILD)/hyve FORCE
	@ln -sf $< $@

$(BUILD)/hyve: $(HYVE_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

hyvectl: $(BUILD)/hyvectl FORCE
	@ln -sf $< $@

$(BUILD)/hyvectl: $(CTL_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

guest: $(GUEST) $(BOOTSECT)
$(GUEST): FORCE
	$(MAKE) -C guests/testguest
$(BOOTSECT): guests/bootsect/bootsect.S
	$(MAKE) -C guests/bootsect
FORCE:

# make install [PREFIX=/usr/local] [DESTDIR=]: hyve and hyvectl in sbin (as
# bhyve), their manual pages (docs/man, mdoc) in share/man.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
install: hyve hyvectl
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BUILD)/hyve $(BUILD)/hyvectl $(DESTDIR)$(SBINDIR)/
	install -m 0644 docs/man/hyve.8 docs/man/hyvectl.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 docs/man/hyve_config.5 $(DESTDIR)$(MANDIR)/man5/

# Install build and test dependencies on Debian (needs root or sudo).
deps:
	./tests/install-deps.sh

check: all $(BUILD)/mig_pipeline
	SANITIZE=$(SANITIZE) ./tests/run.sh

# The unit, CLI, migration-security, bhyve-compatibility and test-guest
# suites and the migration page path again under ASan/UBSan (the fuzz
# targets are sanitized already).
# u_linux_load is left out: it maps and fills guest-sized memory many times,
# which takes over 8 minutes under ASan (it runs in make check).
.PHONY: check-sanitize
check-sanitize:
	$(MAKE) SANITIZE=1 all build/sanitize/mig_pipeline
	SANITIZE=1 ./tests/run.sh -k '^(u_|t_cli_|t_migsec_|t_migpipe_|t_bhyve_|t_guest_)' -x '^u_linux_load$$'

# The tests that need /dev/kvm, on a host without it (root): run inside an
# L1 Linux with nested SVM under QEMU TCG (tests/nested/l1run.sh).
# NESTED_TESTS and NESTED_SKIP (extended regexes of test names) pick them;
# the default is every KVM test.  The small test kernel is built here first
# (inside the L1 it would take hours) unless NESTED_KERNEL=no.
# check-nested-smoke is CI's part: the test guest and firmware tests.
NESTED_TESTS ?= ^t_
NESTED_SKIP ?= ^$$
NESTED_KERNEL ?= yes
.PHONY: check-nested check-nested-smoke
check-nested: all
	[ "$(NESTED_KERNEL)" = no ] || sh tests/linux/build-kernel.sh >/dev/null
	tests/nested/l1run.sh "bash tests/run.sh -k '$(NESTED_TESTS)' -x '$(NESTED_SKIP)'"
check-nested-smoke:
	$(MAKE) check-nested NESTED_TESTS='^t_(guest|firmware)_' NESTED_SKIP='_linux$$' NESTED_KERNEL=no
# OVMF under hyve: the L1 with -icount (tests/nested/l1run.sh says why).
.PHONY: check-nested-ovmf
check-nested-ovmf: all
	HYVE_L1_SMP=1 HYVE_L1_ACCEL='-accel tcg -icount shift=0,sleep=off' \
	    tests/nested/l1run.sh "bash tests/run.sh -k '^t_firmware_ovmf_'"

# The same as check (Debian's stock kernel boot is part of check now; kept
# for scripts that call it).
check-slow: all
	SANITIZE=$(SANITIZE) ./tests/run.sh --slow

# Boot Debian's stock kernel on the serial console (see README).
linux: all
	./tests/linux/boot-stock.sh

# The demo VM is named demo; if a VM of that name is already running (its
# control socket answers), the next free name demo-2, demo-3, ... is used.
# The guest's poweroff (1), reboot (0) or halt (2) ends the demo normally.
DEMO_NAME ?= demo
demo: deps all
	@name=$(DEMO_NAME); n=1; \
	while ./hyvectl --vm=$$name --get-stats >/dev/null 2>&1; do n=$$((n + 1)); name=$(DEMO_NAME)-$$n; done; \
	[ "$$name" = "$(DEMO_NAME)" ] || echo "make demo: a VM named '$(DEMO_NAME)' is running; starting '$$name'"; \
	echo "./hyve -c 2 -m 256M -l com1,stdio -o boot.kernel=$(GUEST) $$name"; \
	./hyve -c 2 -m 256M -l com1,stdio -o boot.kernel=$(GUEST) $$name; rc=$$?; \
	[ $$rc -le 2 ] || { echo "make demo: hyve exited with status $$rc (4: error)"; exit $$rc; }

# hyve vs QEMU (KVM) benchmarks: prints a table, writes bench/results/latest.json.
bench: all bench-transport bench-pipeline bench-storage bench-vnc
	HYVE_BIN=$(BUILD)/hyve ./bench/run.sh

# VNC full-screen update rate, hyve's fbuf vs QEMU's bochs-display, the
# test guest redrawing (test=fbanim): bench/vnc_bench.py, which writes
# bench/results/vnc-latest.json (hyve's side needs /dev/kvm).
.PHONY: bench-vnc
bench-vnc: all
	python3 bench/vnc_bench.py --hyve $(BUILD)/hyve

# Migration transport, plain vs TLS (no VM needed): bench/mig_transport.c.
.PHONY: bench-transport
bench-transport: $(BUILD)/mig_transport
	@mkdir -p bench/results
	{ $(BUILD)/mig_transport 1024 1; $(BUILD)/mig_transport 512 2; } | tee bench/results/transport-latest.json

$(BUILD)/mig_transport: bench/mig_transport.c core/migration_tls.c core/migration_tls.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ bench/mig_transport.c core/migration_tls.c -lssl -lcrypto

# hyve's disk path (blockif over the format layer) against `qemu-img bench`
# on the same images, no guest needed: bench/storage.py, which writes
# bench/results/storage-latest.json.
BLK_BENCH_SRCS := bench/blk_bench.c devices/blockif.c devices/blk_format.c devices/qcow2.c devices/qcow2_meta.c \
	devices/qcow2_snapshot.c core/log.c core/sandbox.c core/sandbox_landlock.c core/snapshot.c
.PHONY: bench-storage
bench-storage: $(BUILD)/blk_bench
	@mkdir -p bench/results
	BLK_BENCH=$(BUILD)/blk_bench bench/storage.py | tee bench/results/storage-latest.json

$(BUILD)/blk_bench: $(BLK_BENCH_SRCS) devices/blockif.h devices/blk_format.h devices/qcow2_internal.h
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -o $@ $(BLK_BENCH_SRCS) -luring -lz -lzstd -lseccomp

# The whole migration pipeline without a VM (bench/mig_pipeline.c): hyve's
# real source and destination, the fuzz targets' stubbed KVM layer, a 1 GiB
# guest stand-in; idle and dirtying, one stream and the default (one per
# core), the verify pass, TLS; next to memcpy and loopback TCP measured in
# the same run.
MIG_PIPELINE_SRCS := bench/mig_pipeline.c tests/fuzz/fuzz_vm_stubs.c core/migration.c core/migration_tls.c \
	core/config_trust.c core/cpuid.c core/snapshot.c core/vmstate.c core/config.c core/init.c core/inout.c \
	core/mmio.c devices/pci_emul.c devices/pci_hostbridge.c devices/pci_lpc.c devices/acpi_pm.c devices/debugcon.c \
	devices/atkbdc.c devices/pc_testdev.c devices/rtc.c devices/uart_16550.c devices/virtio.c \
	devices/virtio_snapshot.c devices/virtio_ioeventfd.c devices/virtio_rnd.c devices/virtio_console.c \
	devices/chardev.c devices/virtio_9p.c devices/p9_server.c devices/p9_state.c devices/p9_fs.c \
	core/sandbox_landlock.c
.PHONY: bench-pipeline
bench-pipeline: $(BUILD)/mig_pipeline
	@mkdir -p bench/results
	{ for args in "--streams 1" "" "--dirty --streams 1" "--dirty" "--verify" "--tls --streams 1" "--tls"; do \
	    $(BUILD)/mig_pipeline --json $$args || exit 1; done; } | tee bench/results/pipeline-latest.json

$(BUILD)/mig_pipeline: $(MIG_PIPELINE_SRCS) core/migration.h tests/fuzz/fuzz_vm_stubs.h
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(CFLAGS)) -DFZ_RAM0_SIZE=0x40000000ULL -o $@ $(MIG_PIPELINE_SRCS) \
	    -llz4 -lssl -lcrypto

# libFuzzer targets (clang, ASan+UBSan), FUZZ_SECONDS each (default 30);
# corpora and crash artifacts are kept in build/fuzz/ (tests/fuzz/run.sh).
.PHONY: fuzz
fuzz:
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),30) ./tests/fuzz/run.sh

clean:
	rm -rf build hyve hyvectl
	$(MAKE) -C guests/testguest clean

-include $(HYVE_OBJS:.o=.d) $(CTL_OBJS:.o=.d)
