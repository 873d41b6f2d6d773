#!/bin/sh
# Static checks on the built guest:
#  1. no SSE/x87/MMX/AVX/popcnt/INT n/... in code that runs at CPL0, except
#     the deliberate fallback tests (fallback.S) and the CPL3 probes (p_*);
#  2. the multiboot header's address fields match the ELF32 file layout.
# usage: check.sh testguest64.elf testguest.elf [objdump]
set -eu
ELF64=$1
ELF32=$2
OBJDUMP=${3:-objdump}

$OBJDUMP -d --no-show-raw-insn -M att "$ELF64" | awk '
/^[0-9a-f]+ <.*>:$/ { fn = $2; gsub(/[<>:]/, "", fn); next }
/^ *[0-9a-f]+:\t/ {
	split($0, f, "\t"); ins = f[2]; split(ins, w, " "); m = w[1]
	if (fn ~ /^(fb_|p_|_start|ap_entry32|enter_long_mode|trampoline_)/) next
	if (fn == "into32" || fn == "into_back" || fn ~ /^fb_/) next
	bad = 0
	if (ins ~ /%[xyz]mm|%mm[0-7]|%st/) bad = 1
	if (m ~ /^(popcnt|lzcnt|tzcnt|int3|int|into|fwait|wait|cmpxchg16b|xsave.*|xrstor.*|fx.*|ldmxcsr|stmxcsr|emms|syscall|sysret.*)$/) bad = 1
	if (m ~ /^f/ && m != "fs") bad = 1
	if (bad) { printf "forbidden at CPL0: %s: %s\n", fn, ins; n++ }
}
END { if (n) exit 1 }
' || { echo "check: forbidden instructions found"; exit 1; }

python3 - "$ELF32" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
assert data[:4] == b'\x7fELF' and data[4] == 1, "not ELF32"
e_entry, e_phoff = struct.unpack_from('<II', data, 24)
e_phentsize, e_phnum = struct.unpack_from('<HH', data, 42)
loads = []
for i in range(e_phnum):
    p_type, p_off, p_vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from('<6I', data, e_phoff + i * e_phentsize)
    if p_type == 1:
        loads.append((p_off, p_vaddr, p_filesz, p_memsz))
assert len(loads) == 1, "expected one PT_LOAD, got %d" % len(loads)
off, vaddr, filesz, memsz = loads[0]
for h in range(0, min(8192, len(data)) - 12, 4):
    magic, flags, csum = struct.unpack_from('<3I', data, h)
    if magic == 0x1BADB002 and (magic + flags + csum) & 0xffffffff == 0:
        break
else:
    sys.exit("check: multiboot header not in the first 8 KiB")
hdr, load, load_end, bss_end, entry = struct.unpack_from('<5I', data, h + 12)
errs = []
if not flags & 0x10000: errs.append("address fields flag not set")
if h - (hdr - load) != off: errs.append("header offset %#x vs segment offset %#x" % (h - (hdr - load), off))
if load != vaddr: errs.append("load_addr %#x != p_vaddr %#x" % (load, vaddr))
if load_end - load > filesz: errs.append("load_end beyond file data")
if bss_end < vaddr + memsz: errs.append("bss_end %#x < end of image %#x" % (bss_end, vaddr + memsz))
if entry != e_entry: errs.append("entry %#x != e_entry %#x" % (entry, e_entry))
if errs:
    sys.exit("check: multiboot header: " + "; ".join(errs))
print("check: ok (multiboot header at file offset %#x, image %#x-%#x, entry %#x)" % (h, load, bss_end, entry))
PY
