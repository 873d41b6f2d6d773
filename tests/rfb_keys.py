#!/usr/bin/env python3
"""rfb_keys.py PORT KEYSYM[+KEYSYM...]|ptr:X,Y,MASK ...: connect to an RFB
server (3.8, security None) and type each chord: press its keysyms in
order, release them in reverse.  Keysyms in hex (0xffe9) or a single
character.  A ptr: token sends a PointerEvent (position, button mask).
Used by tests/test_linux.sh to send Alt+SysRq+m to a guest's PS/2
keyboard and a click to its USB tablet: no Debian tool sends keys or
pointer events over VNC, so this stand-in sends them and the guest's own
drivers are the check."""
import socket
import struct
import sys
import time


def recv(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("server closed the connection")
        b += c
    return b


def keysym(tok):
    return int(tok, 16) if tok.startswith("0x") else ord(tok)


s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
recv(s, 12)
s.sendall(b"RFB 003.008\n")
n = recv(s, 1)[0]
if 1 not in recv(s, n):
    raise SystemExit("server wants authentication")
s.sendall(b"\x01")
if struct.unpack(">I", recv(s, 4))[0] != 0:
    raise SystemExit("security handshake failed")
s.sendall(b"\x01")                       # ClientInit: shared
w, h = struct.unpack(">HH", recv(s, 4))
recv(s, 16)
recv(s, struct.unpack(">I", recv(s, 4))[0])
for chord in sys.argv[2:]:
    if chord.startswith("ptr:"):
        x, y, mask = (int(v) for v in chord[4:].split(","))
        s.sendall(struct.pack(">BBHH", 5, mask, x, y))
        time.sleep(0.05)
        continue
    syms = [keysym(t) for t in chord.split("+")]
    for k in syms:
        s.sendall(struct.pack(">BBHI", 4, 1, 0, k))
        time.sleep(0.05)
    for k in reversed(syms):
        s.sendall(struct.pack(">BBHI", 4, 0, 0, k))
        time.sleep(0.05)
time.sleep(0.5)
s.close()
print(f"sent {len(sys.argv) - 2} chords to a {w}x{h} screen")
