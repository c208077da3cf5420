#!/usr/bin/python3
"""Load every .torrent of a folder into one libtorrent 2.0 session, for the seedbox scale
benchmark (scripts/bench-serve-scale.sh).

Usage: lt_load.py TORRENTS_DIR DATA_DIR [--check]

Each torrent is added with its data in DATA_DIR; without --check in seed mode (libtorrent
trusts the data, as ringtorrent trusts resume data on a restart), with --check the data is
hashed first. TCP only on 127.0.0.1, no DHT, LSD, UPnP or NAT-PMP. When every torrent is in
the session and done with its data (libtorrent's `torrent_checked_alert`, posted by
`files_checked()` once a torrent leaves checking_resume_data in seed mode, or once its last
piece is hashed with --check: the same point as ringtorrent's torrents in their loops with
their pieces known) it prints one JSON line {"torrents": N, "seconds": S, "rss_kib": R,
"cpu_s": C, "added_s": A} where S runs from the start of the script's work, R is the
process's resident memory, C its CPU time (user + system, all threads, from its start) and A
when `get_torrents()` first listed every torrent (the earlier, weaker point this script used
to stop at in seed mode: added, not yet through its resume check), then exits.
"""

import argparse
import json
import os
import sys
import time

import libtorrent as lt


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("torrents_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    start = time.monotonic()
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Status alerts for torrent_checked_alert; a queue that holds every torrent's (its
        # state changes come too), so none is dropped.
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
        "alert_queue_size": 1000000,
        # Every torrent active, as a seedbox runs them (libtorrent queues beyond 8 by default).
        "active_limit": -1,
        "active_seeds": -1,
        "active_downloads": -1,
        "active_checking": 2,
    })
    names = sorted(n for n in os.listdir(args.torrents_dir) if n.endswith(".torrent"))
    for n in names:
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(os.path.join(args.torrents_dir, n))
        p.save_path = args.data_dir
        if not args.check:
            p.flags |= lt.torrent_flags.seed_mode
        # Started at once, not queued (libtorrent adds torrents paused and auto-managed).
        p.flags &= ~lt.torrent_flags.auto_managed
        p.flags &= ~lt.torrent_flags.paused
        ses.async_add_torrent(p)
    deadline = start + 3600
    checked = set()
    added_s = None
    while len(checked) < len(names):
        if added_s is None and len(ses.get_torrents()) == len(names):
            added_s = time.monotonic() - start
        if time.monotonic() > deadline:
            print("lt_load.py: not all torrents loaded in time", file=sys.stderr)
            sys.exit(1)
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked.add(str(a.handle.info_hash()))
    seconds = time.monotonic() - start
    print(json.dumps({"torrents": len(names), "seconds": seconds, "rss_kib": rss_kib(),
                      "cpu_s": time.process_time(),
                      "added_s": added_s if added_s is not None else seconds}), flush=True)


if __name__ == "__main__":
    main()
