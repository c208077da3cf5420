"""Drive `ringtorrent serve`'s qBittorrent WebAPI with the real qbittorrent-api client, through
the flows a seedbox tool uses. Run by tests/qbt_webapi.rs with the virtual environment's Python
(scripts/test.sh installs qbittorrent-api there).

Usage: qbt_flow.py URL USERNAME PASSWORD TORRENT PAYLOAD SEED_ADDR SAVE_DIR MAGNET_SAVE_DIR
                   TORRENT2 CATEGORY_DIR PEER_ADDR

TORRENT2's data lies in CATEGORY_DIR: it is added with that folder's category and
skip_checking, and a libtorrent leecher (lt_leech.py, with the system Python) downloads it from
serve's PEER_ADDR.

Exits 0 after printing "OK" and a JSON summary; any failed check raises (exit 1).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
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


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"


def fake_torrent(name, length=200_000, piece=16384):
    """A .torrent nobody seeds (random piece hashes): it stays downloading."""
    pieces = os.urandom(20 * ((length + piece - 1) // piece))
    info = {"name": name, "length": length, "piece length": piece, "pieces": pieces}
    return bencode({"info": info}), hashlib.sha1(bencode(info)).hexdigest()


def main():
    url, user, password, torrent, payload, seed, save, magnet_save = sys.argv[1:9]
    torrent2, movies, peer_addr = sys.argv[9:12]
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
    check(t.category == "tv" and t.tags == "a, b", f"category and tags {t.category!r} {t.tags!r}")
    check("tv" in c.torrents_categories(), "add created its category")
    check(set(c.torrents_tags()) >= {"a", "b"}, "add created its tags")
    check([x.hash for x in c.torrents_info(category="tv")] == [h], "category filter")
    check([x.hash for x in c.torrents_info(tag="b")] == [h], "tag filter")
    check([x.hash for x in c.torrents_info(category="")] == [magnet_hash], "uncategorized")
    for key, kind in [("ratio_limit", (int, float)), ("max_ratio", (int, float)),
                      ("seeding_time_limit", int), ("max_seeding_time", int),
                      ("priority", int), ("seeding_time", int), ("force_start", bool)]:
        check(isinstance(t[key], kind), f"info {key}: {t.get(key)!r}")
    check(t.ratio_limit == -2 and t.seeding_time_limit == -2, "limits: the client's")
    check(t.priority > 0, f"a download has a queue place: {t.priority}")

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
    # The engine's times (kept over restarts), not the WebAPI's: added, then completed.
    now = int(time.time())
    x = c.torrents_info(torrent_hashes=h)[0]
    check(0 < x.added_on <= x.completion_on <= now,
          f"added_on {x.added_on} <= completion_on {x.completion_on} <= now {now}")

    md2 = c.sync_maindata(rid=rid)
    check(not md2.get("full_update"), f"a delta: {md2}")
    check(md2.rid > rid, "rid grows")
    check(md2.torrents[h]["progress"] == 1, f"delta carries progress: {md2.torrents.get(h)}")
    check("name" not in md2.torrents[h], "delta leaves unchanged fields out")
    # The magnet link only moves up the download queue as the other one completes.
    mag_delta = md2.get("torrents", {}).get(magnet_hash, {})
    check(set(mag_delta) <= {"priority"}, f"unchanged fields left out: {mag_delta}")
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
    check(props.addition_date == x.added_on and props.completion_date == x.completion_on,
          f"properties' times {props.addition_date} {props.completion_date}")
    check(props.comment == "for the qbt flow" and props.created_by.startswith("mktorrent")
          and props.creation_date > 1_600_000_000, f"properties: the .torrent's own fields {props}")
    states = c.torrents_piece_states(torrent_hash=h)
    check(states and all(s == 2 for s in states), "pieceStates")
    peers = c.sync_torrent_peers(torrent_hash=h)
    check(isinstance(peers.peers, dict), "torrentPeers")
    check(c.torrents_webseeds(torrent_hash=h) == [], "webseeds")

    # File priorities: 0 (do not download) and 7 (maximal) reported by torrents/files;
    # qBittorrent's 400 for a priority it has not, 409 for a file index it has not.
    c.torrents_file_priority(torrent_hash=h, file_ids=0, priority=0)
    check(c.torrents_files(torrent_hash=h)[0].priority == 0, "filePrio 0")
    c.torrents_file_priority(torrent_hash=h, file_ids=[0], priority=7)
    check(c.torrents_files(torrent_hash=h)[0].priority == 7, "filePrio 7")
    for bad, error in [(dict(file_ids=0, priority=3), qba.InvalidRequest400Error),
                       (dict(file_ids=5, priority=1), qba.Conflict409Error)]:
        try:
            c.torrents_file_priority(torrent_hash=h, **bad)
            raise AssertionError(f"filePrio {bad} accepted")
        except error:
            pass
    c.torrents_file_priority(torrent_hash=h, file_ids=0, priority=1)
    check(c.torrents_files(torrent_hash=h)[0].priority == 1, "filePrio 1")

    # Sequential download and first/last-piece priority flip seq_dl and f_l_piece_prio.
    t = c.torrents_info(torrent_hashes=h)[0]
    check(t.seq_dl is False and t.f_l_piece_prio is False, f"order flags off: {t}")
    c.torrents_toggle_sequential_download(torrent_hashes=h)
    t = c.torrents_info(torrent_hashes=h)[0]
    check(t.seq_dl is True and t.f_l_piece_prio is False, "seq_dl toggled on")
    c.torrents_toggle_first_last_piece_priority(torrent_hashes=h)
    check(c.torrents_info(torrent_hashes=h)[0].f_l_piece_prio is True, "f_l_piece_prio on")
    c.torrents_toggle_sequential_download(torrent_hashes=h)
    c.torrents_toggle_first_last_piece_priority(torrent_hashes=h)
    t = c.torrents_info(torrent_hashes=h)[0]
    check(t.seq_dl is False and t.f_l_piece_prio is False, "both toggled off again")
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

    # Recheck: answered at once, the check runs beside; the data is still all there.
    c.torrents_recheck(torrent_hashes=h)
    poll("rechecked", lambda: (lambda x: x.progress == 1 and x.state in ("uploading", "stalledUP"))(
        c.torrents_info(torrent_hashes=h)[0]))
    check(any(x.priority == 0 for x in c.torrents_info(torrent_hashes=h)), "a seed's priority is 0")

    # Categories: create with a save path, edit, refuse an unknown one on setCategory.
    md = c.sync_maindata(rid=0)
    rid = md.rid
    check("tv" in md.categories and set(md.tags) >= {"a", "b"}, f"maindata categories/tags {md}")
    c.torrents_create_category(name="movies", save_path=movies)
    cats = c.torrents_categories()
    check(cats["movies"]["savePath"] == movies and cats["movies"]["name"] == "movies", f"{cats}")
    try:
        c.torrents_create_category(name="movies", save_path=movies)
        raise AssertionError("created a category twice")
    except qba.Conflict409Error:
        pass
    c.torrents_create_category(name="music")
    c.torrents_edit_category(name="music", save_path=os.path.join(movies, "music"))
    check(c.torrents_categories()["music"]["savePath"] == os.path.join(movies, "music"), "edited")
    try:
        c.torrents_set_category(category="nope", torrent_hashes=h)
        raise AssertionError("an unknown category was set")
    except qba.Conflict409Error:
        pass
    c.torrents_set_category(category="music", torrent_hashes=h)
    check(c.torrents_info(torrent_hashes=h)[0].category == "music", "setCategory")
    c.torrents_create_tags(tags=["t1", "t2"])
    md2 = c.sync_maindata(rid=rid)
    check(set(md2.categories) == {"movies", "music"}, f"new categories in the delta {md2}")
    check(sorted(md2.tags) == ["t1", "t2"], f"new tags in the delta {md2}")
    check(md2.torrents[h]["category"] == "music", "the torrent's category in the delta")
    c.torrents_remove_categories(categories=["music"])
    c.torrents_delete_tags(tags="t1")
    md3 = c.sync_maindata(rid=md2.rid)
    check(list(md3["categories_removed"]) == ["music"], f"categories_removed {md3}")
    check(list(md3["tags_removed"]) == ["t1"], f"tags_removed {md3}")
    check(md3.torrents[h]["category"] == "", "a removed category leaves its torrents")
    rid = md3.rid

    # Seed mode: a cross-seed add with skip_checking, its category's save path and tags,
    # serves at once.
    with open(torrent2, "rb") as f:
        data2 = f.read()
    out = c.torrents_add(torrent_files=data2, category="movies", tags="x,y",
                         is_skip_checking=True)
    check(out == "Ok.", f"add with skip_checking: {out!r}")
    h2 = poll("seed-mode torrent", lambda: [x.hash for x in c.torrents_info(category="movies")])[0]
    t2 = poll("seed-mode torrent seeds", lambda: [
        x for x in c.torrents_info(torrent_hashes=h2)
        if x.progress == 1 and x.state in ("uploading", "stalledUP")])[0]
    check(t2.save_path == movies, f"category save path {t2.save_path}")
    check(t2.tags == "x, y", f"tags {t2.tags!r}")
    leech_dir = tempfile.mkdtemp(dir=os.path.dirname(save))
    leech = subprocess.run(
        ["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "lt_leech.py"),
         torrent2, leech_dir, "--peer", peer_addr, "--timeout", "30"],
        capture_output=True, text=True, timeout=40)
    check(leech.returncode == 0, f"lt_leech.py: {leech.returncode} {leech.stderr[-2000:]}")
    name2 = t2.name
    check(sha(os.path.join(leech_dir, name2)) == sha(os.path.join(movies, name2)), "leeched bytes")

    # Tags on a torrent.
    c.torrents_add_tags(tags="z", torrent_hashes=h2)
    c.torrents_remove_tags(tags="x", torrent_hashes=h2)
    check(c.torrents_info(torrent_hashes=h2)[0].tags == "y, z", "addTags/removeTags")
    c.torrents_delete_tags(tags="z")
    check(c.torrents_info(torrent_hashes=h2)[0].tags == "y", "deleteTags takes it off")
    check("z" not in c.torrents_tags() and "x" in c.torrents_tags(), "tags list")

    # Share limits: it uploaded its size (ratio 1); a limit of 0.5 stops it.
    t2 = poll("ratio counted", lambda: [
        x for x in c.torrents_info(torrent_hashes=h2) if x.ratio >= 0.99])[0]
    check(isinstance(t2.ratio, float), f"ratio {t2.ratio!r}")
    c.torrents_set_share_limits(ratio_limit=0.5, seeding_time_limit=120,
                                inactive_seeding_time_limit=-1, torrent_hashes=h2)
    t2 = poll("stopped at its ratio", lambda: [
        x for x in c.torrents_info(torrent_hashes=h2) if x.state == "pausedUP"])[0]
    check(t2.ratio_limit == 0.5 and t2.max_ratio == 0.5, f"ratio limits {t2.ratio_limit} {t2.max_ratio}")
    check(t2.seeding_time_limit == 120 and t2.max_seeding_time == 120, "minutes")
    check(t2.inactive_seeding_time_limit == -1, "no inactive limit")

    # Global share limits through preferences.
    c.app_set_preferences({"max_ratio_enabled": True, "max_ratio": 3, "max_seeding_time_enabled": True,
                           "max_seeding_time": 60, "max_ratio_act": 0})
    prefs = c.app.preferences
    check(prefs.max_ratio_enabled and prefs.max_ratio == 3 and prefs.max_seeding_time == 60,
          f"share-limit preferences {prefs.max_ratio} {prefs.max_seeding_time}")
    check(c.torrents_info(torrent_hashes=h)[0].max_ratio == 3, "the client's ratio applies")
    c.app_set_preferences({"max_ratio_enabled": False, "max_seeding_time_enabled": False})
    check(not c.app.preferences.max_ratio_enabled, "share limits off")

    # Queueing: one active download; the second waits; topPrio swaps them.
    try:
        c.torrents_top_priority(torrent_hashes=h)
        raise AssertionError("topPrio without queueing")
    except qba.Conflict409Error:
        pass
    c.app_set_preferences({"queueing_enabled": True, "max_active_downloads": 1,
                           "max_active_uploads": -1, "max_active_torrents": -1})
    prefs = c.app.preferences
    check(prefs.queueing_enabled and prefs.max_active_downloads == 1, "queueing preferences")
    queue_dir = tempfile.mkdtemp(dir=os.path.dirname(save))
    q1, hq1 = fake_torrent("q1.bin")
    q2, hq2 = fake_torrent("q2.bin")
    check(c.torrents_add(torrent_files=q1, save_path=queue_dir) == "Ok.", "add q1")
    check(c.torrents_add(torrent_files=q2, save_path=queue_dir) == "Ok.", "add q2")

    def states():
        return {x.hash: x for x in c.torrents_info(torrent_hashes=[hq1, hq2])}

    qs = poll("q2 queued", lambda: (lambda s: len(s) == 2 and s[hq2].state == "queuedDL"
                                    and s[hq1].state in ("stalledDL", "downloading") and s)(states()))
    check(qs[hq1].priority < qs[hq2].priority, f"queue order {qs[hq1].priority} {qs[hq2].priority}")
    check(c.sync_maindata(rid=0).server_state.queueing is True, "server_state queueing")
    c.torrents_top_priority(torrent_hashes=hq2)
    qs = poll("q1 queued", lambda: (lambda s: s[hq1].state == "queuedDL"
                                    and s[hq2].state in ("stalledDL", "downloading") and s)(states()))
    check(qs[hq2].priority < qs[hq1].priority, f"topPrio {qs[hq1].priority} {qs[hq2].priority}")
    c.torrents_bottom_priority(torrent_hashes=hq2)
    poll("q2 queued again", lambda: states()[hq2].state == "queuedDL")
    c.torrents_set_force_start(enable=True, torrent_hashes=hq2)
    qs = poll("forced", lambda: (lambda s: s[hq2].state == "forcedDL" and s)(states()))
    check(qs[hq2].force_start is True, "force_start")
    c.app_set_preferences({"queueing_enabled": False})
    poll("no queue", lambda: all(x.state != "queuedDL" for x in states().values()))
    c.torrents_delete(delete_files=True, torrent_hashes=[hq1, hq2])
    c.torrents_delete(delete_files=False, torrent_hashes=h2)

    # What is not served answers 404, as qBittorrent answers an unknown method.
    for method in ("torrents/setSuperSeeding", "torrents/noSuchMethod"):
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
    check(os.path.exists(os.path.join(movies, name2)), "kept the seed-mode torrent's data")
    check(not os.path.exists(path), "files deleted")
    md4 = c.sync_maindata(rid=rid)
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
