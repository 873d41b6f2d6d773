#!/usr/bin/env python3
"""A hostile GDB remote client for tests/test_gdb.sh: bad checksums,
malformed and absurd packets, then an endless packet and a vanishing
connection.  Each answer must be a well-framed packet ('-' for a bad
checksum); prints one line per probe and "done"."""
import re
import socket
import sys

port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=30)
buf = b""
FRAME = re.compile(rb"\$([^#]*)#([0-9a-f]{2})")


def pkt(data):
    return b"$" + data + b"#" + b"%02x" % (sum(data) & 0xFF)


def answer():
    """Next '-' or framed packet (acks '+' skipped); checks the checksum."""
    global buf
    while True:
        buf = buf.lstrip(b"+")
        if buf.startswith(b"-"):
            buf = buf[1:]
            return b"-"
        m = FRAME.search(buf)
        if m and m.start() == 0:
            buf = buf[m.end():]
            if int(m.group(2), 16) != sum(m.group(1)) & 0xFF:
                raise SystemExit("bad checksum from the stub")
            return m.group(1)
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("the stub closed the connection")
        buf += chunk


s.sendall(b"$g#00")
print("badsum", answer())
for q in [b"m0,ffffffffffffffff", b"mffffffffffffffff,10", b"M0,99999999:00", b"X100000,1000000:",
          b"p99999999", b"P10=zz", b"Z0,0,1", b"Z2,1001,3", b"Z1,ffffffffffffffff,1", b"Hg99", b"vCont;s:9999",
          b"qXfer:features:read:x.xml:0,10", b"G" + b"0" * 3, b"\x00\xff" * 100, b"g", b"?"]:
    s.sendall(pkt(q))
    print(q[:24], answer()[:40])
s.sendall(b"$" + b"A" * 100000)   # an endless packet, then gone
s.close()
print("done")
