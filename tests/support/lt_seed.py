#!/usr/bin/python3
"""Seed one torrent with libtorrent 2.0 on 127.0.0.1, for integration tests.

Usage: lt_seed.py TORRENT DATA_DIR [--port P] [--listen-ip IP] [--peer-id ID] [--tracker URL] [--peer HOST:PORT]...
                  [--max-seconds S] [--upload-rate BYTES_PER_S] [--verbose]
                  [--out-enc-policy forced|enabled|disabled] [--in-enc-policy forced|enabled|disabled]
                  [--enc-level rc4|plaintext|both]

DATA_DIR must already hold the complete payload (it is the save path: a single-file torrent's
file, or a multi-file torrent's <name>/ folder, lies directly in it). The session is TCP only
(uTP off both ways; --utp-only: uTP only, TCP off both ways, still on the same port), with DHT, LSD, UPnP, NAT-PMP and PEX off, the torrent's trackers and web
seeds ignored (unless --tracker URL is given: then the seed announces to that one tracker,
and only to it), and allow_multiple_connections_per_ip on. Each --peer is dialled once the data
is checked, and again every 2 s while it is not connected (for leechers that never dial,
like Transmission on loopback, or that start listening later). It listens on 127.0.0.1:P (P = 0,
the default, picks a free port), or on --listen-ip (e.g. ::1) instead of 127.0.0.1. The three encryption options set libtorrent's settings of the
same names (pe_forced, pe_rc4, ...); without them libtorrent's defaults apply (enabled both ways,
both levels).

Once the data is checked and the torrent is seeding, one JSON line goes to stdout:
    {"port": P, "peer_id": "<40 hex digits>", "info_hash": "<40 hex digits>"}
where info_hash is the v1 hash, or for a v2-only torrent the v2 hash truncated to 20 bytes.
The peer id is exactly the one libtorrent sends in every handshake: the whole 20 bytes are
set through the peer_fingerprint setting (libtorrent only randomises the part of the id that
the fingerprint does not cover). By default it is "-LT2080-" followed by 12 random
alphanumerics; --peer-id sets all 20 (printable ASCII) characters.

The seeder then runs until its stdin reaches end-of-file (so the parent must give it a pipe,
e.g. Stdio::piped(), and keep the write end open while it needs the seeder; dropping it ends
the seeder) or until --max-seconds (default 120) after it started, whichever comes first; it can also simply
be killed. Diagnostics go to stderr; failure to listen, to load the torrent or to verify the
data exits with status 1 before anything is printed on stdout.
"""

import argparse
import json
import os
import random
import select
import string
import sys
import time

import libtorrent as lt

import lt_encryption

HARD_LIMIT_S = 120.0
VERBOSE = False


def log(msg: str) -> None:
    print(f"lt_seed.py: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    log(msg)
    sys.stderr.flush()
    os._exit(1)


def drain_alerts(ses) -> list:
    alerts = ses.pop_alerts()
    for a in alerts:
        if VERBOSE or a.category() & lt.alert.category_t.error_notification:
            log(f"alert {type(a).__name__}: {a.message()}")
    return alerts


def main() -> None:
    global VERBOSE
    start = time.monotonic()
    deadline = start + HARD_LIMIT_S

    parser = argparse.ArgumentParser(description="seed a torrent with libtorrent on 127.0.0.1")
    parser.add_argument("torrent")
    parser.add_argument("data_dir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--listen-ip", default="127.0.0.1", help="address to listen on (e.g. ::1)")
    parser.add_argument("--peer-id", help="all 20 characters of the peer id (printable ASCII)")
    parser.add_argument("--tracker", help="announce to this tracker URL (default: none)")
    parser.add_argument("--peer", action="append", default=[], help="HOST:PORT to dial")
    parser.add_argument("--max-seconds", type=float, default=HARD_LIMIT_S, help="exit after this long")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=0,
        help="raise libtorrent's connection limit (default 200) to this, e.g. for swarm-load",
    )
    lt_encryption.add_options(parser)
    parser.add_argument(
        "--utp-only",
        action="store_true",
        help="uTP both ways and TCP off both ways (enable_*_tcp False), instead of TCP only",
    )
    parser.add_argument(
        "--upload-rate",
        type=int,
        default=0,
        help="upload limit in bytes/s, applied to loopback peers too (default: none)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every alert to stderr")
    args = parser.parse_args()
    VERBOSE = args.verbose
    deadline = start + args.max_seconds

    if args.peer_id is None:
        alphabet = string.ascii_letters + string.digits
        peer_id = "-LT2080-" + "".join(random.SystemRandom().choice(alphabet) for _ in range(12))
    else:
        peer_id = args.peer_id
    if len(peer_id) != 20 or not all(" " <= c <= "~" for c in peer_id):
        fail(f"--peer-id must be exactly 20 printable ASCII characters, got {peer_id!r}")
    if not 0 <= args.port <= 65535:
        fail(f"bad port {args.port}")

    try:
        ti = lt.torrent_info(args.torrent)
    except (RuntimeError, OSError, ValueError) as e:
        fail(f"invalid torrent {args.torrent}: {e}")
    if not os.path.isdir(args.data_dir):
        fail(f"{args.data_dir} is not a directory")

    listen = f"[{args.listen_ip}]" if ":" in args.listen_ip else args.listen_ip
    cat = lt.alert.category_t
    settings = {
        "listen_interfaces": f"{listen}:{args.port}",
        "listen_system_port_fallback": False,
        "max_retry_port_bind": 0,
        "enable_outgoing_utp": args.utp_only,
        "enable_incoming_utp": args.utp_only,
        "enable_outgoing_tcp": not args.utp_only,
        "enable_incoming_tcp": not args.utp_only,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "allow_multiple_connections_per_ip": True,
        "peer_fingerprint": peer_id,
        **({"connections_limit": args.max_connections} if args.max_connections else {}),
        "alert_mask": cat.error_notification | cat.status_notification | cat.storage_notification
        | (cat.all_categories if VERBOSE else 0),
    }
    lt_encryption.apply(lt, settings, args)
    ses = lt.session(settings)
    if args.upload_rate:
        # Local peers are in libtorrent's unlimited local class by default: put every address
        # in the global class only, so the session's limit holds on loopback too.
        everyone = lt.ip_filter()
        everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(everyone)
        ses.apply_settings({"upload_rate_limit": args.upload_rate})

    # Wait for the listen socket, so the port printed is the real, bound one.
    port = None
    while port is None:
        if time.monotonic() > deadline:
            fail("timed out waiting for the listen socket")
        ses.wait_for_alert(100)
        for a in drain_alerts(ses):
            if isinstance(a, lt.listen_failed_alert):
                fail(f"cannot listen on {listen}:{args.port}: {a.message()}")
            if isinstance(a, lt.listen_succeeded_alert) and (
                a.socket_type == lt.socket_type_t.tcp
                or (args.utp_only and a.socket_type == lt.socket_type_t.utp)
            ):
                port = a.port
    if ses.listen_port() != port:
        log(f"note: listen_port() says {ses.listen_port()}, listen_succeeded_alert said {port}")

    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = os.path.abspath(args.data_dir)
    tf = lt.torrent_flags
    atp.flags = (
        atp.flags | tf.override_trackers | tf.override_web_seeds
        | tf.disable_dht | tf.disable_lsd | tf.disable_pex
    ) & ~tf.auto_managed & ~tf.paused
    atp.trackers = [args.tracker] if args.tracker else []
    atp.url_seeds = []
    h = ses.add_torrent(atp)

    # Wait for the data check; recheck once if it did not end in seeding.
    rechecked = False
    while True:
        if time.monotonic() > deadline:
            fail("timed out waiting for the torrent to be checked")
        ses.wait_for_alert(100)
        checked = False
        for a in drain_alerts(ses):
            if isinstance(a, lt.torrent_error_alert):
                fail(f"torrent error: {a.message()}")
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
        st = h.status()
        if st.errc.value() != 0:
            fail(f"torrent error: {st.errc.message()}")
        if st.is_seeding:
            break
        if checked:
            # The state settles in the same tick as the alert; give it a moment anyway.
            settle = time.monotonic() + 2.0
            while not st.is_seeding and time.monotonic() < settle:
                time.sleep(0.05)
                st = h.status()
            if st.is_seeding:
                break
            if rechecked:
                fail(
                    f"data in {args.data_dir} does not match the torrent: "
                    f"{st.num_pieces}/{ti.num_pieces()} pieces verified, state {st.state}"
                )
            log("check did not end in seeding; forcing a recheck")
            h.force_recheck()
            rechecked = True

    print(
        json.dumps(
            {
                "port": port,
                "peer_id": peer_id.encode("ascii").hex(),
                "info_hash": (
                    str(ti.info_hashes().v1)
                    if ti.info_hashes().has_v1()
                    else str(ti.info_hashes().v2)[:40]
                ),
            }
        ),
        flush=True,
    )
    log(f"seeding {ti.name()} on {listen}:{port} as {peer_id}")

    peers = []
    for peer in args.peer:
        host, _, p = peer.rpartition(":")
        peers.append((host.strip("[]"), int(p)))

    def dial_missing() -> None:
        connected = {(p.ip[0], p.ip[1]) for p in h.get_peer_info()}
        for peer in peers:
            if peer not in connected:
                h.connect_peer(peer)

    dial_missing()
    next_dial = time.monotonic() + 2.0

    # An absent or unreadable stdin counts as already closed.
    try:
        stdin_fd = sys.stdin.fileno() if sys.stdin is not None else -1
    except (OSError, ValueError):
        stdin_fd = -1
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            log(f"{args.max_seconds:g} s limit reached; exiting")
            break
        try:
            readable, _, _ = select.select([stdin_fd], [], [], min(left, 0.5))
            data = os.read(stdin_fd, 4096) if readable else None
        except (OSError, ValueError):
            data = b""
        if data == b"":
            log("stdin closed; exiting")
            break
        drain_alerts(ses)
        if peers and time.monotonic() >= next_dial:
            dial_missing()
            next_dial = time.monotonic() + 2.0

    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the session's orderly shutdown: nothing needs saving, and it must never hang.
    os._exit(0)


if __name__ == "__main__":
    main()
