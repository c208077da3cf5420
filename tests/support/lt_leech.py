#!/usr/bin/python3
"""Download one torrent with libtorrent 2.0 from given peers on loopback, for tests and benches.

Usage: lt_leech.py TORRENT SAVE_DIR [--magnet] [--peer HOST:PORT ...] [--port P] [--listen-ip IP] [--timeout S]
                   [--stats]
                   [--plaintext | --encryption forced]
                   [--out-enc-policy forced|enabled|disabled] [--in-enc-policy forced|enabled|disabled]
                   [--enc-level rc4|plaintext|both]

TCP only (uTP off both ways; --utp-only: uTP only, TCP off both ways), no DHT, LSD, UPnP, NAT-PMP or trackers; listens on 127.0.0.1
(any free port, unless --port) and says where on stderr, "lt_leech.py: listening on
127.0.0.1:P", before it dials every --peer (--listen-ip, e.g. ::1, listens there instead, and
says "[::1]:P"), and "lt_leech.py: torrent added" once the torrent is in the session. When the torrent is complete and its pieces verified,
prints one JSON line: {"seconds": S, "bytes": N, "mb_s": X} where S runs from adding the
torrent to completion, then exits 0. Exits 1 (message on stderr) if it does not finish in
--timeout seconds (default 300), so it can never outlive a test or a benchmark.

--magnet: TORRENT is a magnet link; the metadata (and, for a v2 link, the piece layers, by BEP
52 hash requests) come from the peers.

The three encryption options set libtorrent's settings of the same names (pe_forced, pe_rc4,
...), after --plaintext and --encryption; without any, libtorrent's defaults apply (enabled both
ways, both levels).
"""

import argparse
import json
import os
import sys
import time

import libtorrent as lt

import lt_encryption


def print_stats(start: float, status, handle) -> None:
    """One stderr line: time, progress, rate, and per peer its choke state, request queue,
    round-trip time, disk backlog and receive buffer."""
    peers = []
    for p in handle.get_peer_info():
        choked = "C" if p.flags & lt.peer_info.remote_choked else "u"
        peers.append(
            f"{p.ip[0]}:{p.ip[1]} {choked} q={p.download_queue_length}"
            f" qtime={p.download_queue_time} rate={p.down_speed / 1e6:.0f}MB/s rtt={p.rtt}ms"
            f" pending_disk={p.pending_disk_bytes} rbuf={p.used_receive_buffer}/{p.receive_buffer_size}"
        )
    print(
        f"{time.monotonic() - start:7.2f}s {status.progress * 100:5.1f}%"
        f" {status.download_rate / 1e6:6.1f} MB/s  " + "; ".join(peers),
        file=sys.stderr,
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="leech a torrent with libtorrent on loopback")
    parser.add_argument("torrent")
    parser.add_argument("save_dir")
    parser.add_argument("--magnet", action="store_true", help="TORRENT is a magnet link")
    parser.add_argument("--peer", action="append", default=[], help="HOST:PORT to connect to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--listen-ip", default="127.0.0.1", help="address to listen on (e.g. ::1)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--stats",
        action="store_true",
        help="print the download rate and each peer's request queue to stderr every 0.25 s",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="dial without trying the encrypted (MSE/PE) handshake first",
    )
    parser.add_argument(
        "--encryption",
        choices=["default", "forced"],
        default="default",
        help="forced: only the encrypted (MSE/PE) handshake, both ways, never a plaintext retry"
        " (plaintext or RC4 allowed after it); default: libtorrent's own policy",
    )
    parser.add_argument(
        "--utp-only",
        action="store_true",
        help="uTP both ways and TCP off both ways (enable_*_tcp False), instead of TCP only",
    )
    lt_encryption.add_options(parser)
    args = parser.parse_args()
    if args.plaintext and args.encryption == "forced":
        parser.error("--plaintext and --encryption forced contradict each other")

    ti = None if args.magnet else lt.torrent_info(args.torrent)
    listen = f"[{args.listen_ip}]" if ":" in args.listen_ip else args.listen_ip
    settings = {
        "listen_interfaces": f"{listen}:{args.port}",
        "enable_outgoing_utp": args.utp_only,
        "enable_incoming_utp": args.utp_only,
        "enable_outgoing_tcp": not args.utp_only,
        "enable_incoming_tcp": not args.utp_only,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.storage_notification,
    }
    if args.plaintext:
        settings["out_enc_policy"] = lt.enc_policy.pe_disabled
    if args.encryption == "forced":
        settings["out_enc_policy"] = lt.enc_policy.pe_forced
        settings["in_enc_policy"] = lt.enc_policy.pe_forced
        settings["allowed_enc_level"] = lt.enc_level.pe_both
    lt_encryption.apply(lt, settings, args)
    ses = lt.session(settings)
    # Wait for the listen socket, so that the port said is the one bound (tests dial it).
    listen_deadline = time.monotonic() + 30.0
    listen_port = None
    while listen_port is None:
        if time.monotonic() > listen_deadline:
            print("lt_leech.py: timed out waiting for the listen socket", file=sys.stderr)
            sys.exit(1)
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_failed_alert):
                print(f"lt_leech.py: cannot listen: {a.message()}", file=sys.stderr)
                sys.exit(1)
            if isinstance(a, lt.listen_succeeded_alert) and (
                a.socket_type == lt.socket_type_t.tcp
                or (args.utp_only and a.socket_type == lt.socket_type_t.utp)
            ):
                listen_port = a.port
    print(f"lt_leech.py: listening on {listen}:{listen_port}", file=sys.stderr, flush=True)
    if args.magnet:
        params = lt.parse_magnet_uri(args.torrent)
    else:
        params = lt.add_torrent_params()
        params.ti = ti
    params.save_path = args.save_dir
    params.trackers = []
    start = time.monotonic()
    handle = ses.add_torrent(params)
    handle.replace_trackers([])
    # Synchronous: from here an incoming connection for this torrent is taken (tests that
    # dial the leecher wait for this line).
    print("lt_leech.py: torrent added", file=sys.stderr, flush=True)
    for peer in args.peer:
        host, _, port = peer.rpartition(":")
        handle.connect_peer((host.strip("[]"), int(port)))
    deadline = start + args.timeout
    next_stats = start
    while True:
        status = handle.status()
        if args.stats and time.monotonic() >= next_stats:
            next_stats += 0.25
            print_stats(start, status, handle)
        if status.is_seeding or (status.state == lt.torrent_status.seeding):
            break
        if time.monotonic() > deadline:
            print(f"lt_leech.py: not finished after {args.timeout} s ({status.progress * 100:.1f}%)", file=sys.stderr)
            sys.exit(1)
        ses.wait_for_alert(50)
        ses.pop_alerts()
    seconds = time.monotonic() - start
    size = (ti or handle.torrent_file()).total_size()
    # Seeding means every piece passed its hash, which libtorrent 2.0 may check from the
    # received buffers before its disk thread has written them: the writes must land before
    # the process ends (as in lt_dht.py).
    handle.flush_cache()
    flushed = False
    while not flushed:
        if time.monotonic() > deadline + 30:
            print("lt_leech.py: timed out flushing the download to disk", file=sys.stderr)
            sys.exit(1)
        ses.wait_for_alert(200)
        flushed = any(isinstance(a, lt.cache_flushed_alert) for a in ses.pop_alerts())
    print(json.dumps({"seconds": seconds, "bytes": size, "mb_s": size / seconds / 1e6}), flush=True)
    sys.stderr.flush()
    # libtorrent 2.0.8's teardown has crashed this process (a general protection fault in
    # libtorrent's module, seen once in a loaded test run): the work is done, skip it.
    os._exit(0)


if __name__ == "__main__":
    main()
