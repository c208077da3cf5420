#!/usr/bin/python3
"""libtorrent 2.0's DHT on loopback, for the DHT interop tests.

Usage: lt_dht.py node [--port P] [--bootstrap HOST:PORT] [--max-seconds S] [--verbose]
       lt_dht.py seed TORRENT DATA_DIR --bootstrap HOST:PORT [--max-seconds S] [--verbose]
       lt_dht.py leech MAGNET SAVE_DIR --bootstrap HOST:PORT [--max-seconds S] [--verbose]

Every mode runs one libtorrent session on 127.0.0.1 (port P, default 0: any free port), TCP
only (uTP off), with the DHT on and what keeps loopback nodes out of it turned off
(dht_restrict_routing_ips, dht_restrict_search_ips, dht_ignore_dark_internet,
dht_prefer_verified_node_ids), its rate limits raised (dht_upload_rate_limit,
dht_block_ratelimit) and announces every few seconds (dht_announce_interval); LSD, UPnP,
NAT-PMP and trackers off, so the DHT is the only way peers are found.

- node: a DHT node only (the tests' bootstrap node). Prints {"port": P} once its UDP socket
  is bound.
- seed: seeds TORRENT from DATA_DIR (which holds the complete payload), announcing it to the
  DHT. Prints {"port": P, "info_hash": "<40 hex>"} once the data is checked.
- leech: downloads a (bare) magnet link into SAVE_DIR with peers from the DHT only. Prints
  {"port": P} at start and {"done": true, "peers": N} when every piece is verified, then exits 0.

Each runs until stdin reaches end-of-file (node, seed: the parent keeps a pipe open while it
needs it) or --max-seconds (default 90) passes, which is a failure (exit 1) for leech.
Diagnostics go to stderr.
"""

import argparse
import json
import os
import select
import sys
import time

import libtorrent as lt

VERBOSE = False


def log(msg: str) -> None:
    print(f"lt_dht.py: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    log(msg)
    sys.stderr.flush()
    os._exit(1)


def drain(ses) -> list:
    alerts = ses.pop_alerts()
    for a in alerts:
        if VERBOSE or a.category() & lt.alert.category_t.error_notification:
            log(f"alert {type(a).__name__}: {a.message()}")
    return alerts


def session(port: int, bootstrap: str):
    cat = lt.alert.category_t
    settings = {
        "listen_interfaces": f"127.0.0.1:{port}",
        "listen_system_port_fallback": False,
        "max_retry_port_bind": 0,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_dht": True,
        "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        "dht_upload_rate_limit": 1 << 20,
        "dht_block_ratelimit": 10000,
        "dht_announce_interval": 5,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": cat.error_notification | cat.status_notification | cat.storage_notification
        | cat.dht_notification | (cat.all_categories if VERBOSE else 0),
    }
    return lt.session(settings)


def wait_listening(ses, deadline: float) -> int:
    """The port once both the TCP and the UDP (DHT) sockets are bound."""
    tcp = udp = None
    while tcp is None or udp is None:
        if time.monotonic() > deadline:
            fail("timed out waiting for the listen sockets")
        ses.wait_for_alert(100)
        for a in drain(ses):
            if isinstance(a, lt.listen_failed_alert):
                fail(f"cannot listen: {a.message()}")
            if isinstance(a, lt.listen_succeeded_alert):
                if a.socket_type == lt.socket_type_t.tcp:
                    tcp = a.port
                elif a.socket_type == lt.socket_type_t.udp:
                    udp = a.port
    return tcp


def stdin_closed(timeout: float) -> bool:
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else -1
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable) and os.read(fd, 4096) == b""
    except (OSError, ValueError):
        return True


def serve_until_eof(ses, deadline: float) -> None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            log("time limit reached; exiting")
            break
        if stdin_closed(min(left, 0.5)):
            log("stdin closed; exiting")
            break
        drain(ses)
    sys.stdout.flush()
    os._exit(0)


def flags_dht_only(atp) -> None:
    tf = lt.torrent_flags
    atp.flags = (
        atp.flags | tf.override_trackers | tf.override_web_seeds | tf.disable_lsd
    ) & ~tf.auto_managed & ~tf.paused & ~tf.disable_dht
    atp.trackers = []
    atp.url_seeds = []


def main() -> None:
    global VERBOSE
    parser = argparse.ArgumentParser(description="libtorrent's DHT on loopback")
    parser.add_argument("mode", choices=["node", "seed", "leech"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--verbose", action="store_true")
    a = parser.parse_args()
    VERBOSE = a.verbose
    deadline = time.monotonic() + a.max_seconds
    ses = session(a.port, a.bootstrap)
    port = wait_listening(ses, deadline)

    if a.mode == "node":
        if a.args:
            fail("node takes no arguments")
        print(json.dumps({"port": port}), flush=True)
        log(f"DHT node on 127.0.0.1:{port}")
        serve_until_eof(ses, deadline)

    if a.mode == "seed":
        if len(a.args) != 2:
            fail("seed TORRENT DATA_DIR")
        ti = lt.torrent_info(a.args[0])
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = os.path.abspath(a.args[1])
        flags_dht_only(atp)
        h = ses.add_torrent(atp)
        while not h.status().is_seeding:
            if time.monotonic() > deadline:
                fail("timed out checking the data")
            ses.wait_for_alert(100)
            for al in drain(ses):
                if isinstance(al, lt.torrent_error_alert):
                    fail(f"torrent error: {al.message()}")
        # Announce now rather than at the DHT's next interval.
        h.force_dht_announce()
        print(json.dumps({"port": port, "info_hash": str(ti.info_hashes().v1)}), flush=True)
        log(f"seeding {ti.name()} on 127.0.0.1:{port} over the DHT")
        serve_until_eof(ses, deadline)

    if a.mode == "leech":
        if len(a.args) != 2:
            fail("leech MAGNET SAVE_DIR")
        atp = lt.parse_magnet_uri(a.args[0])
        atp.save_path = os.path.abspath(a.args[1])
        flags_dht_only(atp)
        h = ses.add_torrent(atp)
        print(json.dumps({"port": port}), flush=True)
        next_announce = time.monotonic() + 2.0
        while True:
            if time.monotonic() > deadline:
                st = h.status()
                fail(
                    f"not done in {a.max_seconds:g} s: {st.progress * 100:.1f}%, "
                    f"{st.num_peers} peers, metadata {st.has_metadata}"
                )
            ses.wait_for_alert(200)
            for al in drain(ses):
                if isinstance(al, lt.torrent_error_alert):
                    fail(f"torrent error: {al.message()}")
            st = h.status()
            if st.has_metadata and st.is_seeding:
                break
            if st.num_peers == 0 and time.monotonic() >= next_announce:
                h.force_dht_announce()
                next_announce = time.monotonic() + 2.0
        # Seeding means every piece passed its hash, which libtorrent 2.0 may check from the
        # received buffers before its disk thread has written them: the writes must land
        # before the process ends, or the copy has holes.
        h.flush_cache()
        flushed = False
        while not flushed:
            if time.monotonic() > deadline:
                fail("timed out flushing the downloaded data to disk")
            ses.wait_for_alert(200)
            flushed = any(isinstance(al, lt.cache_flushed_alert) for al in drain(ses))
        print(json.dumps({"done": True, "peers": h.status().num_peers}), flush=True)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
