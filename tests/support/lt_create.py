#!/usr/bin/python3
"""Create a .torrent with libtorrent 2.0's create_torrent: v1-only by default, or with
--mode v2 (BEP 52 v2-only) or --mode hybrid (v1 and v2 in one info dictionary, libtorrent's
own default).

Usage: lt_create.py PATH OUT.torrent --piece-length N [--tracker URL]... [--private] [--pad]
                    [--mode v1|v2|hybrid]

PATH is a file (single-file torrent) or a directory (multi-file torrent named after it).
Each --tracker goes into its own tier, in order (the first is also "announce").
Without --pad no padding files are made (flag create_torrent.v1_only alone). With --pad the
files are laid out the way libtorrent 2.0 lays out hybrid torrents (flag
create_torrent.canonical_files): sorted, each followed by a BEP 47 padding file up to the next
piece boundary, the last one included. --pad applies to v1 only (v2 and hybrid torrents
are always laid out that way). The creation date is left out, so the same files give the same
bytes.

Errors: a message on stderr, exit status 1 (2 for wrong usage).
"""

import argparse
import os
import sys

import libtorrent as lt


def main() -> int:
    parser = argparse.ArgumentParser(description="create a v1-only torrent with libtorrent")
    parser.add_argument("path")
    parser.add_argument("out")
    parser.add_argument("--piece-length", type=int, required=True)
    parser.add_argument("--tracker", action="append", default=[])
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--pad", action="store_true")
    parser.add_argument("--mode", choices=["v1", "v2", "hybrid"], default="v1")
    args = parser.parse_args()

    path = os.path.abspath(args.path)
    if not os.path.exists(path):
        print(f"lt_create.py: {args.path} does not exist", file=sys.stderr)
        return 1
    pl = args.piece_length
    if pl < 16384 or pl & (pl - 1):
        print(f"lt_create.py: piece length {pl} is not a power of two >= 16384", file=sys.stderr)
        return 1

    try:
        fs = lt.file_storage()
        lt.add_files(fs, path)
        if fs.num_files() == 0:
            print(f"lt_create.py: no files under {args.path}", file=sys.stderr)
            return 1
        if args.mode == "v2":
            flags = lt.create_torrent.v2_only
        elif args.mode == "hybrid":
            flags = 0
        else:
            flags = lt.create_torrent.v1_only
            if args.pad:
                flags |= lt.create_torrent.canonical_files
        ct = lt.create_torrent(fs, pl, flags=flags)
        for tier, url in enumerate(args.tracker):
            ct.add_tracker(url, tier)
        if args.private:
            ct.set_priv(True)
        ct.set_creator("lt_create.py (libtorrent %s)" % lt.__version__)
        # The hashes are read relative to the folder that holds PATH.
        lt.set_piece_hashes(ct, os.path.dirname(path))
        entry = ct.generate()
        entry.pop(b"creation date", None)
        data = lt.bencode(entry)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"lt_create.py: {e}", file=sys.stderr)
        return 1

    with open(args.out, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
