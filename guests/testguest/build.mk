# Build fragment for the hyve test guest.  Usable on its own (see Makefile)
# or from a top-level Makefile:
#   TESTGUEST_DIR := guests/testguest
#   include guests/testguest/build.mk
# which provides $(TESTGUEST_ELF) and the phony targets testguest,
# testguest-clean, testguest-check.

TESTGUEST_DIR ?= .
TG := $(TESTGUEST_DIR)
TESTGUEST_ELF := $(TG)/testguest.elf

# V=1 shows full command lines.
ifeq ($(V),1)
TG_Q :=
TG_SAY := @true
else
TG_Q := @
TG_SAY := @echo
endif

TG_CC ?= gcc
TG_OBJCOPY ?= objcopy
TG_OBJDUMP ?= objdump

# No SSE/x87/MMX/AVX in compiled code: on the PVM host every CPL0 instruction
# goes through KVM's emulator, which does not handle them.
TG_CFLAGS := -std=gnu11 -O2 -Wall -Wextra -Werror -ffreestanding -fno-builtin \
	-fno-pic -fno-pie -fno-stack-protector -fno-asynchronous-unwind-tables \
	-fno-omit-frame-pointer -mno-red-zone -mno-sse -mno-sse2 -g \
	-mno-mmx -mno-avx -mno-80387 -mgeneral-regs-only -m64 -nostdinc --param=min-pagesize=0 \
	-isystem $(shell $(TG_CC) -print-file-name=include)
TG_ASFLAGS := -m64 -fno-pic -fno-pie
TG_LDFLAGS := -nostdlib -static -no-pie -Wl,--build-id=none \
	-Wl,-z,max-page-size=0x1000 -Wl,-z,noexecstack -Wl,--no-warn-rwx-segments

# Every .c file here is part of the guest (drivers register their shell
# commands and tests themselves).
TG_CSRC := $(sort $(notdir $(wildcard $(TG)/*.c)))
TG_SSRC := boot.S entry.S fallback.S s3stub.S
TG_OBJS := $(addprefix $(TG)/obj/,$(TG_SSRC:.S=.o) $(TG_CSRC:.c=.o))
TG_HDRS := $(wildcard $(TG)/*.h)

$(TG)/obj/%.o: $(TG)/%.c $(TG_HDRS) $(TG)/build.mk
	@mkdir -p $(dir $@)
	$(TG_SAY) "  CC      $@"
	$(TG_Q)$(TG_CC) $(TG_CFLAGS) -c $< -o $@

$(TG)/obj/%.o: $(TG)/%.S $(TG)/build.mk
	@mkdir -p $(dir $@)
	$(TG_SAY) "  AS      $@"
	$(TG_Q)$(TG_CC) $(TG_ASFLAGS) -c $< -o $@

# Linked as ELF64 at 1 MiB, then converted to ELF32: QEMU's -kernel multiboot
# loader refuses ELF64 images.
$(TG)/testguest64.elf: $(TG_OBJS) $(TG)/linker.ld
	$(TG_SAY) "  LD      $@"
	$(TG_Q)$(TG_CC) $(TG_LDFLAGS) -T $(TG)/linker.ld -o $@ $(TG_OBJS)

$(TESTGUEST_ELF): $(TG)/testguest64.elf
	$(TG_SAY) "  OBJCOPY $@"
	$(TG_Q)$(TG_OBJCOPY) -O elf32-i386 --strip-debug $< $@

.PHONY: testguest testguest-clean testguest-check
testguest: $(TESTGUEST_ELF)

# Fails if compiled code uses SSE/x87/MMX/popcnt etc. outside fallback.S,
# or if the multiboot header does not match the file layout.
testguest-check: $(TESTGUEST_ELF)
	$(TG_Q)sh $(TG)/check.sh $(TG)/testguest64.elf $(TESTGUEST_ELF) $(TG_OBJDUMP)

testguest-clean:
	rm -rf $(TG)/obj $(TG)/testguest64.elf $(TESTGUEST_ELF)
