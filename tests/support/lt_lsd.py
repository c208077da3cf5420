#!/usr/bin/python3
"""Seed or leech one torrent with libtorrent 2.0 whose only peer source is local service
discovery (BEP 14), for tests/lsd.rs, which runs it inside a network namespace of its own.

Usage: lt_lsd.py seed|leech TORRENT DIR [--timeout S]

No DHT, trackers, UPnP, NAT-PMP or uTP; LSD on; listens on 127.0.0.1 (any free port) and says
"lt_lsd.py: listening on 127.0.0.1:P" on stdout. Every announce libtorrent parses from another
client is printed as "lt_lsd.py: heard IH from HOST:PORT" (libtorrent ignores its own by cookie,
so such a line means it understood the other client's message). A leecher prints "lt_lsd.py:
complete" and exits 0 when every piece is verified; a seed runs until --timeout (default 60)
and exits 0. A leecher not done by then exits 1, so it never outlives a test.
"""

import argparse
import re
import sys
import time

import libtorrent as lt

HEARD = re.compile(r"<== LSD: (\S+):(\d+) ih: ([0-9a-f]{40})")


def say(line: str) -> None:
    print(f"lt_lsd.py: {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["seed", "leech"])
    parser.add_argument("torrent")
    parser.add_argument("dir")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "enable_dht": False,
            "enable_lsd": True,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            # The LSD log lines (log_alert) say what libtorrent parsed.
            "alert_mask": lt.alert.category_t.all_categories,
        }
    )
    deadline = time.monotonic() + args.timeout
    port = None
    while port is None:
        if time.monotonic() > deadline:
            say("no listen socket")
            sys.exit(1)
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert) and a.socket_type == lt.socket_type_t.tcp:
                port = a.port
    say(f"listening on 127.0.0.1:{port}")
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(args.torrent)
    params.save_path = args.dir
    handle = ses.add_torrent(params)
    done = False
    while time.monotonic() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            m = HEARD.search(a.message())
            if m:
                say(f"heard {m.group(3)} from {m.group(1)}:{m.group(2)}")
        if args.role == "leech" and not done and handle.status().is_seeding:
            done = True
            say("complete")
            sys.exit(0)
    if args.role == "leech":
        say(f"not complete after {args.timeout} s ({handle.status().progress * 100:.1f}%)")
        sys.exit(1)


if __name__ == "__main__":
    main()
