#!/usr/bin/python3
"""Idle, handshaked connections from one address: issue 17's "one address locks everyone out".

Usage: flood.py HOST:PORT INFO_HASH_HEX COUNT [--from IP] [--wait SECS]

Opens COUNT TCP connections to HOST:PORT from IP (default 127.0.0.1), sends a BitTorrent
handshake for INFO_HASH on each (Fast and extension bits, a peer id of its own), and waits,
at most SECS (default 20) in all, for each to be answered with a handshake or closed. Then prints one JSON
line:
    {"handshaked": H, "refused": R, "pending": P}
H answered (peers now, idle: they never send another byte), R closed or reset before an
answer (or never connected), P neither by the deadline. It holds the open connections,
reading and dropping what arrives, until stdin reaches end-of-file (the parent holds the
pipe), then closes them all, prints {"closed": N} and exits.
"""

import json
import os
import resource
import selectors
import socket
import sys
import time


def main():
    # Its own descriptors must not be the limit (a parent may have lowered its own).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args = sys.argv[1:]
    source = "127.0.0.1"
    if "--from" in args:
        i = args.index("--from")
        source = args[i + 1]
        del args[i : i + 2]
    wait = 20.0
    if "--wait" in args:
        i = args.index("--wait")
        wait = float(args[i + 1])
        del args[i : i + 2]
    target, info_hash, count = args[0], bytes.fromhex(args[1]), int(args[2])
    host, port = target.rsplit(":", 1)
    reserved = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])
    sel = selectors.DefaultSelector()
    state = {}  # socket -> bytes received
    refused = 0
    for n in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((source, 0))
            s.connect((host, int(port)))
        except OSError:
            s.close()
            refused += 1
            continue
        peer_id = b"-FL0001-" + n.to_bytes(12, "big")
        try:
            s.sendall(b"\x13BitTorrent protocol" + reserved + info_hash + peer_id)
        except OSError:
            s.close()
            refused += 1
            continue
        s.setblocking(False)
        state[s] = b""
        sel.register(s, selectors.EVENT_READ)
    handshaked = set()
    deadline = time.monotonic() + wait
    while len(handshaked) < len(state) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                del state[s]
                handshaked.discard(s)
                s.close()
                refused += 1
                continue
            if s not in handshaked:
                state[s] += data
                if len(state[s]) >= 68:
                    handshaked.add(s)
    pending = len(state) - len(handshaked)
    print(json.dumps({"handshaked": len(handshaked), "refused": refused, "pending": pending}), flush=True)
    # Hold them, idle, until the parent closes our stdin.
    sel.register(sys.stdin, selectors.EVENT_READ)
    while True:
        events = sel.select(timeout=1)
        done = False
        for key, _ in events:
            if key.fileobj is sys.stdin:
                if not os.read(sys.stdin.fileno(), 4096):
                    done = True
                continue
            s = key.fileobj
            try:
                if not s.recv(65536):
                    sel.unregister(s)
                    state.pop(s, None)
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                sel.unregister(s)
                state.pop(s, None)
                s.close()
        if done:
            break
    for s in list(state):
        s.close()
    print(json.dumps({"closed": len(state)}), flush=True)


if __name__ == "__main__":
    main()
