"""Run the same qBittorrent WebAPI flow against real qbittorrent-nox and `ringtorrent serve`
with the real qbittorrent-api client, and compare what they answer where it matters: every
key ringtorrent returns exists in qBittorrent's answer with the same JSON type, and the state
names agree for the same situation. Run by tests/qbt_nox_compare.rs with the virtual
environment's Python (scripts/test.sh installs qbittorrent-api and qbittorrent-nox).

Usage:
  qbt_compare.py conf PROFILE WEBUI_PORT PEER_PORT USERNAME PASSWORD SAVE_DIR
      writes PROFILE/qBittorrent/config/qBittorrent.conf: the WebUI on 127.0.0.1:WEBUI_PORT
      with USERNAME and the PBKDF2 hash of PASSWORD, peers on loopback, DHT, LSD, PeX, UPnP
      and NAT-PMP off, the legal notice accepted.
  qbt_compare.py compare NOX_URL RT_URL USERNAME PASSWORD TORRENT1 TORRENT2 NOX_SAVE RT_SAVE
      TORRENT1 and TORRENT2 have their data complete in NOX_SAVE and in RT_SAVE (copies).
      TORRENT1 is added started (it seeds), TORRENT2 stopped.

`compare` prints a readable diff of what differs; it exits 0 after printing "OK" and a JSON
summary when nothing but allowed differences were found, 1 otherwise.
"""

import base64
import hashlib
import json
import os
import sys
import time

DEADLINE_S = 25
CATEGORY = "cmp"
TAGS = ["alpha", "beta"]

# Fields qBittorrent holds as doubles: Qt writes a whole double without a fraction (`1`, not
# `1.0`), so for these an int on one side and a float on the other is the same type.
FLOAT_FIELDS = {
    "progress", "ratio", "ratio_limit", "max_ratio", "availability", "popularity",
    "share_ratio", "global_ratio", "max_ratio_limit", "distributed_copies", "relevance",
    "file_pool_size_ratio", "slow_torrent_ratio", "max_ratio_act_ratio",
}

# Keys that WebAPI 2.9 (qBittorrent 4.6.0) added, found by comparing qBittorrent's sources
# (src/webui/api/) at release-4.5.2 and release-4.6.7: a qBittorrent older than that lacks
# them, so against it their absence is no mismatch.
ADDED_IN_2_9 = {
    # app/preferences
    "add_to_top_of_queue", "bdecode_depth_limit", "bdecode_token_limit",
    "current_interface_name", "file_log_age", "file_log_age_type", "file_log_backup_enabled",
    "file_log_delete_old", "file_log_enabled", "file_log_max_size", "file_log_path",
    "i2p_address", "i2p_enabled", "i2p_inbound_length", "i2p_inbound_quantity",
    "i2p_mixed_mode", "i2p_outbound_length", "i2p_outbound_quantity", "i2p_port",
    "max_inactive_seeding_time", "max_inactive_seeding_time_enabled", "merge_trackers",
    "proxy_bittorrent", "proxy_misc", "proxy_rss", "socket_receive_buffer_size",
    "socket_send_buffer_size", "torrent_file_size_limit",
    # app/preferences and sync/maindata's server_state
    "use_subcategories",
    # torrents/info and sync/maindata's torrents
    "inactive_seeding_time_limit",
}

# States that are transient: while either side shows one, it has not settled.
TRANSIENT = {"checkingUP", "checkingDL", "checkingResumeData", "metaDL", "allocating",
             "moving", "queuedDL", "queuedUP"}


def write_conf(profile, webui_port, peer_port, user, password, save):
    salt = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000, 64)
    pbkdf2 = f"{base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()}"
    folder = os.path.join(profile, "qBittorrent", "config")
    os.makedirs(folder, exist_ok=True)
    conf = f"""[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\Port={peer_port}
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\InterfaceAddress=127.0.0.1
Session\\DefaultSavePath={save}
Session\\MultiConnectionsPerIp=true
Session\\QueueingSystemEnabled=false

[Network]
PortForwardingEnabled=false

[Preferences]
Connection\\UPnP=false
General\\Locale=en
WebUI\\Enabled=true
WebUI\\Address=127.0.0.1
WebUI\\Port={webui_port}
WebUI\\Username={user}
WebUI\\Password_PBKDF2="@ByteArray({pbkdf2})"
WebUI\\LocalHostAuth=true
"""
    with open(os.path.join(folder, "qBittorrent.conf"), "w") as f:
        f.write(conf)


def jtype(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class Diff:
    """What differs: `problems` fail the run, `notes` are shown only."""

    def __init__(self, older_nox):
        self.problems = []
        self.notes = []
        # Whether qBittorrent speaks a WebAPI older than 2.9 and ringtorrent 2.9 or later.
        self.older_nox = older_nox

    def bad(self, where, what):
        self.problems.append(f"  - {where}: {what}")

    def note(self, where, what):
        self.notes.append(f"  ~ {where}: {what}")

    def types(self, where, rt, nox, key=None, fewer_ok=False):
        """Every key of `rt` is in `nox` with the same JSON type, recursively; the keys of
        `nox` that `rt` lacks are noted unless `fewer_ok`."""
        tr, tn = jtype(rt), jtype(nox)
        if tr != tn:
            if {tr, tn} == {"int", "float"} and key in FLOAT_FIELDS:
                return
            self.bad(where, f"type {tr} ({rt!r:.60}) but qBittorrent's is {tn} ({nox!r:.60})")
            return
        if tr == "object":
            for k, v in rt.items():
                if k not in nox and self.older_nox and k in ADDED_IN_2_9:
                    self.note(f"{where}.{k}", "added in WebAPI 2.9 (qBittorrent 4.6), newer "
                                              "than this qBittorrent")
                elif k not in nox:
                    self.bad(f"{where}.{k}", f"ringtorrent returns it ({v!r:.60}); qBittorrent does not")
                else:
                    self.types(f"{where}.{k}", v, nox[k], k, fewer_ok)
            fewer = sorted(k for k in nox if k not in rt)
            if fewer and not fewer_ok:
                self.note(where, f"{len(fewer)} of qBittorrent's keys not returned: {', '.join(fewer)}")
        elif tr == "list" and rt and nox:
            self.types(f"{where}[0]", rt[0], nox[0], key, fewer_ok)

    def same(self, where, rt, nox):
        if rt != nox:
            self.bad(where, f"ringtorrent {rt!r} but qBittorrent {nox!r}")


def plain(v):
    """qbittorrent-api's dict and list subclasses as plain JSON values."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def poll(what, fn, limit=DEADLINE_S):
    end = time.monotonic() + limit
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def flow(url, user, password, torrent1, torrent2, save):
    """The calls a seedbox tool makes; returns what each answered, as plain JSON values."""
    import qbittorrentapi as qba

    c = qba.Client(host=url, username=user, password=password,
                   REQUESTS_ARGS={"timeout": 20}, VERIFY_WEBUI_CERTIFICATE=False)
    c.auth_log_in()
    out = {"version": c.app_version(), "webapiVersion": c.app_web_api_version()}
    out["preferences"] = plain(c.app_preferences())
    c.torrents_create_category(name=CATEGORY, save_path=save)
    with open(torrent1, "rb") as f:
        r = c.torrents_add(torrent_files=f.read(), save_path=save, category=CATEGORY, tags=TAGS)
    assert r == "Ok.", f"{url}: add 1: {r!r}"
    with open(torrent2, "rb") as f:
        r = c.torrents_add(torrent_files=f.read(), save_path=save, is_paused=True,
                           is_stopped=True)
    assert r == "Ok.", f"{url}: add 2: {r!r}"

    def settled():
        infos = plain(c.torrents_info())
        if len(infos) != 2 or any(t["state"] in TRANSIENT for t in infos):
            return None
        seeding = [t for t in infos if t["category"] == CATEGORY]
        if not seeding or seeding[0]["progress"] != 1:
            return None
        return infos

    infos = poll(f"{url}: both torrents settled", settled)
    h1 = next(t["hash"] for t in infos if t["category"] == CATEGORY)
    h2 = next(t["hash"] for t in infos if t["hash"] != h1)
    out["info"] = {"seeding": next(t for t in infos if t["hash"] == h1),
                   "stopped": next(t for t in infos if t["hash"] == h2)}
    out["properties"] = plain(c.torrents_properties(torrent_hash=h1))
    out["files"] = plain(c.torrents_files(torrent_hash=h1))
    out["trackers"] = plain(c.torrents_trackers(torrent_hash=h1))
    out["pieceStates"] = plain(c.torrents_piece_states(torrent_hash=h1))
    out["categories"] = plain(c.torrents_categories())
    out["tags"] = sorted(plain(c.torrents_tags()))
    out["transfer"] = plain(c.transfer_info())
    md = plain(c.sync_maindata(rid=0))
    out["maindata"] = md
    # A change, then the delta that carries it.
    c.torrents_stop(torrent_hashes=h1)
    poll(f"{url}: stopped", lambda: c.torrents_info(torrent_hashes=h1)[0].state
         in ("pausedUP", "stoppedUP"))
    out["info_after_stop"] = plain(c.torrents_info(torrent_hashes=h1)[0])
    out["delta"] = plain(c.sync_maindata(rid=md["rid"]))
    # The stopped torrent, never checked, checked now: it stays stopped, complete.
    c.torrents_recheck(torrent_hashes=h2)
    seen = []

    def rechecked():
        t = c.torrents_info(torrent_hashes=h2)[0]
        seen.append((t.state, t.progress))
        return t.state not in TRANSIENT and t.progress == 1

    try:
        poll(f"{url}: stopped torrent rechecked", rechecked)
    except AssertionError as e:
        raise AssertionError(f"{e}; (state, progress) seen: {sorted(set(seen))}") from None
    out["info_after_recheck"] = plain(c.torrents_info(torrent_hashes=h2)[0])
    out["hashes"] = {"seeding": h1, "stopped": h2}
    c.auth_log_out()
    return out


def api_version(v):
    return tuple(int(x) for x in v.split("."))


def compare(nox, rt):
    d = Diff(api_version(nox["webapiVersion"]) < (2, 9) <= api_version(rt["webapiVersion"]))
    for k in ("version", "webapiVersion"):
        d.types(k, rt[k], nox[k])
    d.types("app/preferences", rt["preferences"], nox["preferences"])

    nox_major = nox["version"].lstrip("v").split(".")[0]
    rt_major = rt["version"].lstrip("v").split(".")[0]

    def state_of(s):
        # 5.x renamed paused* to stopped*: only when the versions differ is that a match.
        if nox_major != rt_major:
            return s.replace("stopped", "paused")
        return s

    for which in ("seeding", "stopped"):
        r, n = rt["info"][which], nox["info"][which]
        d.types(f"torrents/info[{which}]", r, n)
        d.same(f"torrents/info[{which}].state", state_of(r["state"]), state_of(n["state"]))
        for k in ("hash", "name", "size", "total_size", "progress", "amount_left", "completed",
                  "category", "tags", "priority", "num_complete", "num_incomplete"):
            if k in r and k in n:
                d.same(f"torrents/info[{which}].{k}", r[k], n[k])
    r, n = rt["info_after_stop"], nox["info_after_stop"]
    d.same("torrents/info[seeding, after stop].state", state_of(r["state"]), state_of(n["state"]))
    r, n = rt["info_after_recheck"], nox["info_after_recheck"]
    d.same("torrents/info[stopped, after recheck].state", state_of(r["state"]),
           state_of(n["state"]))

    d.types("torrents/properties", rt["properties"], nox["properties"])
    for k in ("total_size", "piece_size", "pieces_num", "pieces_have", "hash", "name",
              "is_private"):
        if k in rt["properties"] and k in nox["properties"]:
            d.same(f"torrents/properties.{k}", rt["properties"][k], nox["properties"][k])
    # The engine keeps the info dictionary, not the .torrent's comment, creator and date.
    for k in ("comment", "created_by", "creation_date"):
        r, n = rt["properties"].get(k), nox["properties"].get(k)
        if r != n:
            d.note(f"torrents/properties.{k}", f"ringtorrent {r!r}, qBittorrent {n!r}")

    d.types("torrents/files", rt["files"], nox["files"])
    strip = lambda fs: [{k: f.get(k) for k in ("index", "name", "size", "progress", "priority",
                                               "piece_range", "is_seed")} for f in fs]
    d.same("torrents/files", strip(rt["files"]), strip(nox["files"]))

    d.types("torrents/trackers", rt["trackers"], nox["trackers"])
    # qBittorrent lists DHT, PeX and LSD as pseudo-trackers first; the real ones must agree.
    real = lambda ts: [(t["url"], t["tier"]) for t in ts if not t["url"].startswith("** [")]
    d.same("torrents/trackers (urls, tiers)", real(rt["trackers"]), real(nox["trackers"]))
    pseudo = lambda ts: [t["url"] for t in ts if t["url"].startswith("** [")]
    if pseudo(rt["trackers"]) != pseudo(nox["trackers"]):
        d.note("torrents/trackers", f"pseudo-trackers: ringtorrent {pseudo(rt['trackers'])}, "
                                    f"qBittorrent {pseudo(nox['trackers'])}")

    d.types("torrents/pieceStates", rt["pieceStates"], nox["pieceStates"])
    d.same("torrents/pieceStates", rt["pieceStates"], nox["pieceStates"])
    d.types("torrents/categories", rt["categories"], nox["categories"])
    d.same("torrents/categories (names)", sorted(rt["categories"]), sorted(nox["categories"]))
    d.types("torrents/tags", rt["tags"], nox["tags"])
    d.same("torrents/tags", rt["tags"], nox["tags"])
    d.types("transfer/info", rt["transfer"], nox["transfer"])

    # sync/maindata: the full update, its torrents keyed by hash (compared as the same torrent).
    def keyed(md, hashes):
        md = dict(md)
        ts = md.get("torrents", {})
        md["torrents"] = {w: ts[h] for w, h in hashes.items() if h in ts}
        return md

    rmd, nmd = keyed(rt["maindata"], rt["hashes"]), keyed(nox["maindata"], nox["hashes"])
    d.types("sync/maindata", rmd, nmd)
    d.same("sync/maindata.full_update", rmd.get("full_update"), nmd.get("full_update"))
    for w in ("seeding", "stopped"):
        r, n = rmd["torrents"].get(w, {}), nmd["torrents"].get(w, {})
        d.same(f"sync/maindata.torrents[{w}].state", state_of(r.get("state", "?")),
               state_of(n.get("state", "?")))

    # The delta after the stop: every key ringtorrent sends is one qBittorrent has (in its full
    # update) with the same type, it is not a full update, and it carries the new state.
    rdl, ndl = keyed(rt["delta"], rt["hashes"]), keyed(nox["delta"], nox["hashes"])
    d.types("sync/maindata delta (against the full update)", rdl, nmd, fewer_ok=True)
    d.same("sync/maindata delta.full_update", rdl.get("full_update", False),
           ndl.get("full_update", False))
    d.same("sync/maindata delta.rid is an int", jtype(rdl.get("rid")), jtype(ndl.get("rid")))
    r, n = rdl["torrents"].get("seeding", {}), ndl["torrents"].get("seeding", {})
    d.same("sync/maindata delta.torrents[seeding].state", state_of(r.get("state", "(absent)")),
           state_of(n.get("state", "(absent)")))
    return d


def main():
    if sys.argv[1] == "conf":
        write_conf(*sys.argv[2:8])
        return 0
    nox_url, rt_url, user, password, t1, t2, nox_save, rt_save = sys.argv[2:10]
    started = time.monotonic()
    nox = flow(nox_url, user, password, t1, t2, nox_save)
    rt = flow(rt_url, user, password, t1, t2, rt_save)
    d = compare(nox, rt)
    print(f"qBittorrent {nox['version']} (WebAPI {nox['webapiVersion']}) vs ringtorrent as "
          f"{rt['version']} (WebAPI {rt['webapiVersion']})", file=sys.stderr)
    print(f"states: seeding {rt['info']['seeding']['state']}/{nox['info']['seeding']['state']}, "
          f"stopped {rt['info']['stopped']['state']}/{nox['info']['stopped']['state']} (progress "
          f"{rt['info']['stopped']['progress']}/{nox['info']['stopped']['progress']}), seeding "
          f"after stop {rt['info_after_stop']['state']}/{nox['info_after_stop']['state']}, "
          f"stopped after recheck "
          f"{rt['info_after_recheck']['state']}/{nox['info_after_recheck']['state']} "
          "(ringtorrent/qBittorrent)", file=sys.stderr)
    if d.notes:
        print("allowed differences (ringtorrent returns fewer):", file=sys.stderr)
        print("\n".join(d.notes), file=sys.stderr)
    if d.problems:
        print(f"MISMATCHES ({len(d.problems)}):", file=sys.stderr)
        print("\n".join(d.problems), file=sys.stderr)
        return 1
    print("OK")
    print(json.dumps({"nox": nox["version"], "nox_webapi": nox["webapiVersion"],
                      "ringtorrent": rt["version"], "ringtorrent_webapi": rt["webapiVersion"],
                      "seconds": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
