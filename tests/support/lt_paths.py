#!/usr/bin/python3
"""Print where libtorrent 2.0 would put each file of some .torrent files, one JSON line each.

Usage: lt_paths.py TORRENT...

For each TORRENT, in order, one line on stdout:
    {"torrent": TORRENT, "ok": true, "name": ..., "total_size": n,
     "files": [{"path": "name/a/b", "size": n, "pad": bool, "symlink": bool,
                "target": "name/x" or null}, ...]}
or, when libtorrent refuses it:
    {"torrent": TORRENT, "ok": false, "error": "..."}
Paths are libtorrent's file_path() (relative to the save folder, `/`-separated) after the
duplicate renaming torrent_info does when it loads a file; "target" is a symlink's target as
libtorrent resolved it (a link it finds invalid points to itself). Exit status 0 unless the
usage is wrong (2).
"""

import json
import sys

import libtorrent as lt


def describe(path: str) -> dict:
    try:
        ti = lt.torrent_info(path)
    except (RuntimeError, OSError, ValueError) as e:
        return {"torrent": path, "ok": False, "error": str(e)}
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        flags = fs.file_flags(i)
        symlink = bool(flags & lt.file_storage.flag_symlink)
        target = None
        if symlink and hasattr(fs, "symlink"):
            target = fs.symlink(i).replace("\\", "/")
        files.append({
            "path": fs.file_path(i).replace("\\", "/"),
            "size": fs.file_size(i),
            "pad": bool(flags & lt.file_storage.flag_pad_file),
            "symlink": symlink,
            "target": target,
        })
    return {"torrent": path, "ok": True, "name": ti.name(),
            "total_size": ti.total_size(), "files": files}


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: lt_paths.py TORRENT...", file=sys.stderr)
        return 2
    for path in sys.argv[1:]:
        print(json.dumps(describe(path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
