#!/usr/bin/python3
"""Print what libtorrent 2.0 reads from a .torrent file, as one JSON line on stdout.

Usage: lt_info.py TORRENT

Output: {"info_hash": v1 hex or null, "info_hash_v2": v2 hex or null, "name": ..., "total_size": ..., "piece_length": ...,
         "num_pieces": ..., "files": [{"path": "a/b", "size": n}, ...]}

"path" is libtorrent's file_path(): relative to the download (save) folder, so for a
multi-file torrent it starts with "<name>/" ("name/a/b"), and a single-file torrent's one file
is just "<name>". Each file also has "path_in_torrent", the same path without that leading
"<name>/" (for a single-file torrent, still the name). Files are listed in the torrent's
order; padding files (BEP 47), if any, are included (so sizes add up to total_size) and carry
an extra "pad": true key.

An unreadable or invalid torrent: a message on stderr, exit status 1. Wrong usage: status 2.
"""

import json
import sys

import libtorrent as lt


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: lt_info.py TORRENT", file=sys.stderr)
        return 2
    path = sys.argv[1]
    try:
        ti = lt.torrent_info(path)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"lt_info.py: invalid torrent {path}: {e}", file=sys.stderr)
        return 1

    hashes = ti.info_hashes()
    fs = ti.files()
    name = ti.name()
    prefix = name + "/"
    files = []
    for i in range(fs.num_files()):
        file_path = fs.file_path(i).replace("\\", "/")
        in_torrent = file_path[len(prefix):] if file_path.startswith(prefix) else file_path
        entry = {"path": file_path, "path_in_torrent": in_torrent, "size": fs.file_size(i)}
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            entry["pad"] = True
        files.append(entry)

    out = {
        "info_hash": str(hashes.v1) if hashes.has_v1() else None,
        "info_hash_v2": str(hashes.v2) if hashes.has_v2() else None,
        "name": name,
        "total_size": ti.total_size(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "files": files,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
