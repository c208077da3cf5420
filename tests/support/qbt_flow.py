"""Drive `ringtorrent serve`'s qBittorrent WebAPI with the real qbittorrent-api client, through
the flows a seedbox tool uses. Run by tests/qbt_webapi.rs with the virtual environment's Python
(scripts/test.sh installs qbittorrent-api there).

Usage: qbt_flow.py URL USERNAME PASSWORD TORRENT PAYLOAD SEED_ADDR SAVE_DIR MAGNET_SAVE_DIR

Exits 0 after printing "OK" and a JSON summary; any failed check raises (exit 1).
"""

import hashlib
import json
import os
import sys
import time

import qbittorrentapi as qba
import requests

DEADLINE_S = 40


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def poll(what, fn, limit=DEADLINE_S):
    end = time.monotonic() + limit
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def main():
    url, user, password, torrent, payload, seed, save, magnet_save = sys.argv[1:9]
    started = time.monotonic()
    kw = dict(host=url, REQUESTS_ARGS={"timeout": 20}, VERIFY_WEBUI_CERTIFICATE=False)

    # Not logged in: qBittorrent's 403.
    r = requests.get(f"{url}/api/v2/app/version", timeout=10)
    check(r.status_code == 403, f"unauthenticated app/version: {r.status_code}")

    # A wrong password is refused.
    bad = qba.Client(username=user, password=password + "x", **kw)
    try:
        bad.auth_log_in()
        raise AssertionError("a wrong password logged in")
    except qba.LoginFailed:
        pass

    c = qba.Client(username=user, password=password, **kw)
    c.auth_log_in()
    check(c.is_logged_in, "logged in")
    check(c.app.version == "v4.6.7", f"version {c.app.version}")
    check(c.app.web_api_version == "2.9.3", f"webapi {c.app.web_api_version}")
    build = c.app.build_info
    check(isinstance(build["bitness"], int), f"buildInfo {build}")
    prefs = c.app.preferences
    for key, kind in [("save_path", str), ("listen_port", int), ("dl_limit", int),
                      ("up_limit", int), ("queueing_enabled", bool), ("max_ratio_enabled", bool),
                      ("max_active_downloads", int)]:
        check(isinstance(prefs[key], kind), f"preferences {key}: {prefs.get(key)!r}")
    check(c.app.default_save_path == prefs["save_path"], "defaultSavePath")

    # Global limits through setPreferences and transfer/*.
    c.app_set_preferences({"dl_limit": 5_000_000, "up_limit": 4_000_000})
    check(c.transfer_download_limit() == 5_000_000, "dl limit set by preferences")
    check(c.app.preferences["up_limit"] == 4_000_000, "up limit in preferences")
    c.transfer_set_download_limit(0)
    c.transfer_set_upload_limit(0)
    check(c.transfer_download_limit() == 0 and c.transfer_upload_limit() == 0, "limits lifted")
    check(c.transfer_speed_limits_mode() in (0, "0", False), "speedLimitsMode")

    # Add the .torrent with a save path, and a magnet link (stopped) with another.
    with open(torrent, "rb") as f:
        data = f.read()
    out = c.torrents_add(torrent_files=data, save_path=save, category="tv", tags=["a", "b"])
    check(out == "Ok.", f"add .torrent: {out!r}")
    magnet_hash = "0123456789abcdef0123456789abcdef01234567"
    out = c.torrents_add(urls=f"magnet:?xt=urn:btih:{magnet_hash}&dn=nothing",
                         save_path=magnet_save, is_paused=True)
    check(out == "Ok.", f"add magnet: {out!r}")
    out = c.torrents_add(torrent_files=data, save_path=save)
    check(out == "Fails.", f"adding it again: {out!r}")

    infos = poll("two torrents", lambda: len(c.torrents_info()) == 2 and c.torrents_info())
    by_hash = {t.hash: t for t in infos}
    check(magnet_hash in by_hash, f"magnet listed: {list(by_hash)}")
    mag = by_hash[magnet_hash]
    check(mag.state in ("metaDL", "pausedDL"), f"magnet state {mag.state}")
    check(mag.save_path == magnet_save, f"magnet save path {mag.save_path}")
    h = next(k for k in by_hash if k != magnet_hash)
    t = by_hash[h]
    check(t.save_path == save, f"save_path {t.save_path}")
    for key, kind in [("added_on", int), ("amount_left", int), ("dlspeed", int), ("eta", int),
                      ("progress", float), ("ratio", float), ("size", int), ("state", str),
                      ("num_seeds", int), ("tags", str), ("category", str), ("magnet_uri", str),
                      ("seq_dl", bool), ("auto_tmm", bool), ("trackers_count", int)]:
        check(isinstance(t[key], kind), f"info {key}: {t.get(key)!r}")
    check(t.state in ("downloading", "stalledDL"), f"state before peers {t.state}")

    # Filters, sort, hashes, limit.
    check([x.hash for x in c.torrents_info(status_filter="paused")] == [magnet_hash], "paused filter")
    check(len(c.torrents_info(status_filter="downloading")) == 2, "downloading filter")
    check(c.torrents_info(category="nope") == [], "unknown category: none")
    check(len(c.torrents_info(torrent_hashes=h)) == 1, "hashes")
    names = [x.name for x in c.torrents_info(sort="name", reverse=True)]
    check(names == sorted(names, key=str.lower, reverse=True), f"sort {names}")
    check(len(c.torrents_info(limit=1, offset=1)) == 1, "limit/offset")

    # sync/maindata: full, then a delta.
    md = c.sync_maindata(rid=0)
    check(md.full_update is True and h in md.torrents and "server_state" in md, "full maindata")
    check(md.server_state.free_space_on_disk > 0, "free space")
    rid = md.rid

    # Peers: the libtorrent seed.
    c.torrents_add_peers(peers=seed, torrent_hashes=h)
    done = poll("download complete", lambda: [
        x for x in c.torrents_info(torrent_hashes=h)
        if x.progress == 1 and x.state in ("uploading", "stalledUP")])
    check(done[0].amount_left == 0, "nothing left")
    name = done[0].name
    check(sha(os.path.join(save, name)) == sha(payload), "downloaded bytes")

    md2 = c.sync_maindata(rid=rid)
    check(not md2.get("full_update"), f"a delta: {md2}")
    check(md2.rid > rid, "rid grows")
    check(md2.torrents[h]["progress"] == 1, f"delta carries progress: {md2.torrents.get(h)}")
    check("name" not in md2.torrents[h], "delta leaves unchanged fields out")
    check(magnet_hash not in md2.get("torrents", {}), "unchanged torrent left out")
    md_unknown = c.sync_maindata(rid=987654)
    check(md_unknown.full_update is True, "unknown rid: full update")

    # Files, trackers, properties, pieces, peers.
    files = c.torrents_files(torrent_hash=h)
    check(len(files) == 1 and files[0].progress == 1 and files[0].priority == 1, f"files {files}")
    check(files[0]["piece_range"][0] == 0, "piece_range")
    trackers = c.torrents_trackers(torrent_hash=h)
    check([x.url for x in trackers[:3]] == ["** [DHT] **", "** [PeX] **", "** [LSD] **"], "pseudo trackers")
    check(any(x.url == "http://127.0.0.1:6969/announce" for x in trackers), f"trackers {trackers}")
    props = c.torrents_properties(torrent_hash=h)
    check(props.save_path == save and props.pieces_have == props.pieces_num, f"properties {props}")
    check(props.dl_limit == -1, "properties: -1 for no limit")
    states = c.torrents_piece_states(torrent_hash=h)
    check(states and all(s == 2 for s in states), "pieceStates")
    peers = c.sync_torrent_peers(torrent_hash=h)
    check(isinstance(peers.peers, dict), "torrentPeers")
    check(c.torrents_webseeds(torrent_hash=h) == [], "webseeds")
    try:
        c.torrents_properties(torrent_hash="f" * 40)
        raise AssertionError("properties of an unknown torrent")
    except qba.NotFound404Error:
        pass

    # Per-torrent limits.
    c.torrents_set_upload_limit(limit=300_000, torrent_hashes=h)
    c.torrents_set_download_limit(limit=200_000, torrent_hashes=h)
    check(c.torrents_upload_limit(torrent_hashes=h)[h] == 300_000, "torrent up limit")
    check(c.torrents_download_limit(torrent_hashes=h)[h] == 200_000, "torrent dl limit")
    t = c.torrents_info(torrent_hashes=h)[0]
    check(t.up_limit == 300_000 and t.dl_limit == 200_000, "limits in info")
    c.torrents_set_upload_limit(limit=-1, torrent_hashes=h)

    # Stop and start (2.9.3: pause/resume under the hood).
    c.torrents_stop(torrent_hashes=h)
    poll("pausedUP", lambda: c.torrents_info(torrent_hashes=h)[0].state == "pausedUP")
    md3 = c.sync_maindata(rid=md2.rid)
    check(md3.torrents[h]["state"] == "pausedUP", f"delta carries the state: {md3}")
    c.torrents_start(torrent_hashes="all")
    poll("seeding again", lambda: c.torrents_info(torrent_hashes=h)[0].state in ("uploading", "stalledUP"))

    # What is not served answers 404, as qBittorrent answers an unknown method.
    for method in ("torrents/createCategory", "torrents/addTags", "torrents/setShareLimits",
                   "torrents/increasePrio", "torrents/recheck", "torrents/noSuchMethod"):
        r = c._http_session.post(f"{url}/api/v2/{method}", data={"hashes": h}, timeout=10)
        check(r.status_code == 404, f"{method}: {r.status_code}")

    # transfer/info and log/main.
    info = c.transfer_info()
    check(info.connection_status == "connected" and info.dl_info_data > 0, f"transfer/info {info}")
    log = c.log_main()
    check(any("Added torrent" in m.message for m in log), "log/main")
    check(all(m.id > log[0].id for m in c.log_main(last_known_id=log[0].id)), "last_known_id")

    # Delete with files.
    path = os.path.join(save, name)
    c.torrents_delete(delete_files=True, torrent_hashes=h)
    poll("deleted", lambda: [x.hash for x in c.torrents_info()] == [magnet_hash])
    check(not os.path.exists(path), "files deleted")
    md4 = c.sync_maindata(rid=md3.rid)
    check(h in md4.get("torrents_removed", []), f"torrents_removed {md4}")
    c.torrents_delete(delete_files=False, torrent_hashes=magnet_hash)

    # Log out: the session is gone.
    c.auth_log_out()
    sid = c._http_session.cookies.get("SID")
    r = requests.get(f"{url}/api/v2/app/version", cookies={"SID": sid or "x"}, timeout=10)
    check(r.status_code == 403, f"after logout: {r.status_code}")

    print("OK")
    print(json.dumps({"seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    main()
