#!/usr/bin/python3
# Usage: [DIR=/dev/shm] scripts/bench-recv-path.py [ROUNDS=3]  (writes 1 GiB files in DIR, one at a time)
"""Kernel cost of getting 1 GiB from a loopback socket into a fallocated tmpfs file: read
into a 256 KiB buffer then pwrite each 16 KiB block (ringtorrent today);
MADV_POPULATE_WRITE each block (or each 1 MiB, or nothing: the copy faults) of a shared
writable mapping, then recv_into it (the reverted lever of
perf/2026-12-03-leech-direct.md); splice socket -> pipe -> file per block. Prints the receiver's user and system
CPU-seconds per variant, rounds alternating. Python's per-call overhead is in `user`; the
kernel's work is `sys`."""
import ctypes, mmap, os, resource, socket, sys, time

SIZE = 1 << 30
BLOCK = 16384
libc = ctypes.CDLL(None, use_errno=True)
MADV_POPULATE_WRITE = 23

def sender(port):
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytes(range(256)) * (1 << 12)  # 1 MiB
    left = SIZE
    while left:
        n = s.send(memoryview(buf)[: min(left, len(buf))])
        left -= n
    s.close()
    os._exit(0)

def receive(variant, path):
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
    port = ls.getsockname()[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.posix_fallocate(fd, 0, SIZE)
    pid = os.fork()
    if pid == 0:
        sender(port)
    c, _ = ls.accept()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    got = 0
    if variant == "read+pwrite":
        buf = bytearray(256 * 1024); mv = memoryview(buf)
        pend = bytearray()
        while got < SIZE:
            n = c.recv_into(mv)
            if n == 0: break
            pend += mv[:n]
            while len(pend) >= BLOCK:
                os.pwrite(fd, pend[:BLOCK], got); got += BLOCK; del pend[:BLOCK]
    elif variant in ("populate+recv", "populate-1MiB+recv", "recv-faulting"):
        m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        mv = memoryview(m)
        span = {"populate+recv": BLOCK, "populate-1MiB+recv": 1 << 20, "recv-faulting": 0}[variant]
        while got < SIZE:
            if span and got % span == 0 and libc.madvise(ctypes.c_void_p(base + got), ctypes.c_size_t(span), MADV_POPULATE_WRITE) != 0:
                raise OSError(ctypes.get_errno(), "madvise")
            end = got + BLOCK
            while got < end:
                n = c.recv_into(mv[got:end])
                if n == 0: raise EOFError
                got += n
        del mv; m.close()
    elif variant == "splice":
        rp, wp = os.pipe()
        while got < SIZE:
            moved = 0
            while moved < BLOCK:
                n = os.splice(c.fileno(), wp, BLOCK - moved)
                if n == 0: raise EOFError
                moved += n
            while moved:
                n = os.splice(rp, fd, moved, offset_dst=got)
                got += n; moved -= n
        os.close(rp); os.close(wp)
    t1 = time.monotonic()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    c.close(); ls.close(); os.close(fd); os.unlink(path)
    assert got == SIZE, (variant, got)
    return r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, t1 - t0

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
variants = ["read+pwrite", "populate+recv", "populate-1MiB+recv", "recv-faulting", "splice"]
res = {v: [] for v in variants}
for r in range(rounds):
    order = variants if r % 2 == 0 else variants[::-1]
    for v in order:
        u, s, w = receive(v, os.path.join(os.environ.get("DIR", "/dev/shm"), "ld-exp-recv.bin"))
        res[v].append((u, s))
        print(f"round {r+1} {v}: user {u:.2f} sys {s:.2f} wall {w:.2f}", flush=True)
for v in variants:
    us = sorted(x[0] for x in res[v]); ss = sorted(x[1] for x in res[v])
    print(f"{v}: median user {us[len(us)//2]:.2f} sys {ss[len(ss)//2]:.2f}")
