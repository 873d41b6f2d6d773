#!/usr/bin/env python3
"""Seed inputs for tests/fuzz/fuzz_p9.c: 9P2000.L request streams.

    tests/fuzz/make_p9_seeds.py DIR     (tests/fuzz/run.sh --make-seeds p9)

Input format (fuzz_p9.c): byte 0 bit 0 picks the read-only server, bits
1..7 the reply buffer size (0: the full msize); then 9P messages, each as
long as its own size field.  The harness has already sent Tversion,
Tattach (fid 0 = the share root) and Twalk 0 -> 1 "f" (a regular file);
the share also holds a directory "d", a FIFO "p" and the symlinks "abs"
(-> /etc) and "rel" (-> ../outside).
"""
import os
import struct
import sys

TAG = 1


def s(text):
    b = text.encode()
    return struct.pack('<H', len(b)) + b


def msg(mtype, body):
    global TAG
    TAG = (TAG + 1) & 0xffff or 1
    return struct.pack('<IBH', 7 + len(body), mtype, TAG) + body


def u32(*v):
    return struct.pack('<' + 'I' * len(v), *v)


def u64(v):
    return struct.pack('<Q', v)


def walk(fid, newfid, *names):
    return msg(110, u32(fid, newfid) + struct.pack('<H', len(names)) + b''.join(s(n) for n in names))


O_RDONLY, O_RDWR, O_CREAT, O_DIRECTORY = 0, 2, 0o100, 0o200000

SEEDS = {
    # read the file the prologue walked to
    'seed-read': (1, [
        msg(24, u32(1) + u64(0x3fff)),            # Tgetattr fid 1, all fields
        msg(12, u32(1, O_RDONLY)),                # Tlopen
        msg(116, u32(1) + u64(0) + u32(100)),     # Tread
        msg(116, u32(1) + u64(5) + u32(4096)),
        msg(30, u32(1, 9) + s('user.x')),         # Txattrwalk
        msg(120, u32(9)),                         # Tclunk
        msg(120, u32(1)),
    ]),
    # list the directory
    'seed-dir': (0, [
        walk(0, 2, 'd'),
        msg(12, u32(2, O_RDONLY | O_DIRECTORY)),
        msg(40, u32(2) + u64(0) + u32(4096)),     # Treaddir
        msg(40, u32(2) + u64(1) + u32(64)),
        msg(8, u32(0)),                           # Tstatfs
        walk(0, 3),                               # clone the root
        msg(40, u32(3) + u64(0) + u32(512)),      # Treaddir on a fid not opened
        msg(120, u32(2)),
    ]),
    # create, write, rename, link, remove on the writable server
    'seed-write': (0, [
        walk(0, 4),
        msg(14, u32(4) + s('new') + u32(O_RDWR | O_CREAT, 0o644, 0)),   # Tlcreate
        msg(118, u32(4) + u64(0) + u32(5) + b'hello'),                  # Twrite
        msg(50, u32(4, 0)),                                            # Tfsync
        msg(26, u32(4, 0x8, 0, 0, 0) + u64(2) + u64(0) * 4),           # Tsetattr size 2
        msg(72, u32(0) + s('nd') + u32(0o755, 0)),                      # Tmkdir
        msg(74, u32(0) + s('new') + u32(0) + s('nd/new2')),             # Trenameat
        msg(74, u32(0) + s('new') + u32(0) + s('new2')),
        msg(70, u32(0, 1) + s('hard')),                                 # Tlink
        msg(16, u32(0) + s('sl') + s('f') + u32(0)),                    # Tsymlink
        walk(0, 5, 'sl'),
        msg(22, u32(5)),                                               # Treadlink
        msg(18, u32(0) + s('node') + u32(0o20644, 0, 0, 0)),            # Tmknod (char device: refused)
        msg(76, u32(0) + s('new2') + u32(0)),                           # Tunlinkat
        msg(76, u32(0) + s('hard') + u32(0)),
        msg(76, u32(0) + s('sl') + u32(0)),
        msg(76, u32(0) + s('nd') + u32(0x200)),                         # AT_REMOVEDIR
        msg(120, u32(4)),
    ]),
    # names that must not lead out of the share (read-only server, small replies)
    'seed-escape': (1 | 8 << 1, [
        walk(0, 6, 'abs'),
        msg(12, u32(6, O_RDONLY)),
        walk(0, 7, 'rel', 'x'),
        walk(0, 7, '..'),
        walk(0, 7, 'd', '..', '..'),
        walk(0, 8, 'p'),
        msg(12, u32(8, O_RDONLY)),                # the FIFO must not block
        msg(14, u32(0) + s('ro') + u32(O_RDWR | O_CREAT, 0o644, 0)),
        msg(20, u32(1, 0) + s('renamed')),        # Trename on the ro server
        msg(108, struct.pack('<H', 3)),           # Tflush
    ]),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else '.'
    os.makedirs(out, exist_ok=True)
    for name, (mode, msgs) in SEEDS.items():
        with open(os.path.join(out, name), 'wb') as f:
            f.write(bytes([mode]) + b''.join(msgs))
    print('wrote %d seeds to %s' % (len(SEEDS), out))


if __name__ == '__main__':
    main()
