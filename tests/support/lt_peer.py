#!/usr/bin/python3
"""A libtorrent 2.0 peer with peer exchange (ut_pex) and metadata exchange (ut_metadata) on,
for the PEX and BEP 9 interop tests.

Usage: lt_peer.py (--torrent FILE | --magnet URI) SAVE_DIR [--seed] [--peer HOST:PORT]...
                  [--download-limit B] [--upload-limit B] [--no-pex] [--max-seconds S]
                  [--verbose]

TCP only on 127.0.0.1 (any free port), no DHT, LSD, UPnP, NAT-PMP or trackers, and
allow_multiple_connections_per_ip on (every test peer is on 127.0.0.1). The limits are the
torrent's, bytes per second. PEX is libtorrent's
default plugin, on unless --no-pex (a peer that learns nobody by PEX, and so leaves the
dialling to the peers told of it). Each --peer is dialled, and dialled again every
2 s while not connected. With --seed, SAVE_DIR holds the complete data and the first line
waits for the check to end in seeding.

Stdout, one JSON object a line:
    {"port": P}                                   listening (and, with --seed, seeding)
    {"metadata": "<info hash, 40 hex digits>"}    a magnet link's metadata arrived
    {"peer": "IP:PORT", "pex": bool, "outgoing": bool}
                                                  a peer connected (each endpoint once;
                                                  "pex": libtorrent learned it by PEX)
    {"pieces": N}                                 it has N pieces now (a leecher)
    {"complete": true}                            every piece downloaded and verified
It runs until stdin reaches end-of-file (the parent holds the pipe) or --max-seconds
(default 120) pass; diagnostics go to stderr.
"""

import argparse
import json
import os
import select
import sys
import time

import libtorrent as lt


def log(msg: str) -> None:
    print(f"lt_peer.py: {msg}", file=sys.stderr, flush=True)


def say(obj) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="a libtorrent peer with PEX on")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--torrent")
    src.add_argument("--magnet")
    parser.add_argument("save_dir")
    parser.add_argument("--seed", action="store_true")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--download-limit", type=int, default=0)
    parser.add_argument("--upload-limit", type=int, default=0)
    parser.add_argument("--no-pex", action="store_true", help="turn PEX off for the torrent")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds

    cat = lt.alert.category_t
    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "listen_system_port_fallback": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "enable_dht": False,
            "dht_bootstrap_nodes": "",
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_ip_notifier": False,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": cat.error_notification | cat.status_notification
            | (cat.all_categories if args.verbose else 0),
        }
    )
    port = None
    while port is None:
        if time.monotonic() > deadline:
            log("no listen socket")
            os._exit(1)
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_failed_alert):
                log(f"cannot listen: {a.message()}")
                os._exit(1)
            if isinstance(a, lt.listen_succeeded_alert) and a.socket_type == lt.socket_type_t.tcp:
                port = a.port

    if args.magnet:
        atp = lt.parse_magnet_uri(args.magnet)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = os.path.abspath(args.save_dir)
    tf = lt.torrent_flags
    atp.flags = (atp.flags | tf.override_trackers | tf.override_web_seeds | tf.disable_dht
                 | tf.disable_lsd) & ~tf.auto_managed & ~tf.paused & ~tf.disable_pex
    if args.no_pex:
        atp.flags |= tf.disable_pex
    atp.trackers = []
    atp.url_seeds = []
    h = ses.add_torrent(atp)
    # On the torrent, not the session: libtorrent exempts peers on the local network (all of
    # them, here) from session-wide limits.
    if args.download_limit:
        h.set_download_limit(args.download_limit)
    if args.upload_limit:
        h.set_upload_limit(args.upload_limit)

    if args.seed:
        while not h.status().is_seeding:
            if time.monotonic() > deadline:
                log(f"not seeding: {h.status().state} {h.status().errc.message()}")
                os._exit(1)
            ses.wait_for_alert(100)
            ses.pop_alerts()
    say({"port": port})

    peers = []
    for p in args.peer:
        host, _, pport = p.rpartition(":")
        peers.append((host, int(pport)))
    seen = set()
    next_dial = 0.0
    said_metadata = said_complete = False
    pieces = 0
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sys.stdin], [], [], 0.1)
        if ready and not sys.stdin.buffer.read1(4096):
            break
        for a in ses.pop_alerts():
            if args.verbose or a.category() & cat.error_notification:
                log(f"{type(a).__name__}: {a.message()}")
        st = h.status()
        if not said_metadata and st.has_metadata and args.magnet:
            said_metadata = True
            say({"metadata": str(h.info_hashes().v1)})
        if st.num_pieces != pieces and not args.seed:
            pieces = st.num_pieces
            say({"pieces": pieces})
        if not said_complete and st.is_seeding and not args.seed:
            said_complete = True
            say({"complete": True})
        connected = set()
        for p in h.get_peer_info():
            if args.verbose:
                log(f"peer {p.ip} flags={p.flags:#x} source={p.source}")
            if p.flags & lt.peer_info.connecting:
                continue
            key = (p.ip[0], p.ip[1])
            connected.add(key)
            if key not in seen:
                seen.add(key)
                say({
                    "peer": f"{p.ip[0]}:{p.ip[1]}",
                    "pex": bool(p.source & lt.peer_info.pex),
                    "outgoing": bool(p.flags & lt.peer_info.local_connection),
                })
        now = time.monotonic()
        if now >= next_dial:
            next_dial = now + 2.0
            for ep in peers:
                if ep not in connected:
                    h.connect_peer(ep)


if __name__ == "__main__":
    main()
