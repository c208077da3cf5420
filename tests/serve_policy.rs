//! `serve`'s own JSON API and config for categories, tags, share limits and queueing: every
//! route, its errors, and what a restart keeps.

mod common;

use common::serve::{torrent, Serve};
use serde_json::json;

#[test]
fn categories_tags_share_limits_and_the_queue_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (t, hash) = torrent(dir.path(), "p.bin", 200_000, 3);
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("serve.toml"),
        "[share_limits]\nseeding_time = 7200\n[queue]\nmax_active_uploads = 0\n",
    )
    .unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let (status, v) = serve.json("GET", "/share_limits", b"");
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"ratio": -1.0, "seeding_time": 7200, "inactive_seeding_time": -1,
               "action": "stop"})
    );
    let (_, v) = serve.json("GET", "/queue", b"");
    assert_eq!(
        (v["enabled"].clone(), v["max_active_uploads"].clone()),
        (json!(false), json!(0))
    );

    let body = json!({"name": "tv", "save_path": data}).to_string();
    let (status, v) = serve.json("POST", "/categories", body.as_bytes());
    assert_eq!(status, 200, "{v}");
    let (status, _) = serve.json("POST", "/categories", body.as_bytes());
    assert_eq!(status, 400, "twice");
    let (status, v) = serve.json("POST", "/categories", br#"{"name": "a/b"}"#);
    assert_eq!(status, 200, "{v}");
    let (status, v) = serve.json("PUT", "/categories/a/b", br#"{"save_path": "/srv/ab"}"#);
    assert_eq!(status, 200, "{v}");
    let (_, v) = serve.json("GET", "/categories", b"");
    assert_eq!(
        v,
        json!([{"name": "a/b", "save_path": "/srv/ab"}, {"name": "tv", "save_path": data}])
    );
    let (status, _) = serve.json("DELETE", "/categories/a%2Fb", b"");
    assert_eq!(status, 200);

    let bytes = std::fs::read(&t).unwrap();
    let (status, v) = serve.json("POST", "/torrents?category=tv&tags=hd,new", &bytes);
    assert_eq!(status, 201, "{v}");
    let path = format!("/torrents/{hash}");
    let (_, v) = serve.json("GET", &path, b"");
    assert_eq!(v["category"], "tv");
    assert_eq!(v["tags"], json!(["hd", "new"]));
    assert_eq!(v["state"], "seeding");
    assert_eq!(v["queue_position"], 1);
    assert_eq!(v["share_limits"]["ratio"], -2.0);
    assert_eq!(v["effective_share_limits"]["seeding_time"], 7200);

    let (status, v) = serve.json(
        "POST",
        &format!("{path}/tags"),
        br#"{"add": ["x"], "remove": ["new"]}"#,
    );
    assert_eq!((status, v), (200, json!({"tags": ["hd", "x"]})));
    let (status, _) = serve.json(
        "PUT",
        &format!("{path}/category"),
        br#"{"category": "nope"}"#,
    );
    assert_eq!(status, 400);
    let (status, _) = serve.json("PUT", &format!("{path}/category"), br#"{"category": null}"#);
    assert_eq!(status, 200);
    let (status, v) = serve.json(
        "PUT",
        &format!("{path}/share_limits"),
        br#"{"ratio": 3.5, "action": "remove"}"#,
    );
    assert_eq!(status, 200, "{v}");
    let (_, v) = serve.json("GET", &path, b"");
    assert_eq!(v["category"], json!(null));
    assert_eq!(v["share_limits"]["ratio"], 3.5);
    assert_eq!(v["effective_share_limits"]["action"], "remove");
    assert_eq!(v["effective_share_limits"]["seeding_time"], 7200);
    assert!(
        v["ratio"].is_number() && v["seeding_time"].is_number(),
        "{v}"
    );

    // Queueing on with no room for seeds: it waits; force-started, it runs.
    let (status, v) = serve.json("PUT", "/queue", br#"{"enabled": true}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(serve.json("GET", &path, b"").1["state"], "queued");
    let (status, _) = serve.json(
        "PUT",
        &format!("{path}/force_start"),
        br#"{"force_start": true}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(serve.json("GET", &path, b"").1["state"], "seeding");
    let (status, v) = serve.json("POST", &format!("{path}/queue/top"), b"");
    assert_eq!((status, v), (200, json!({"queue_position": 1})));
    let (status, _) = serve.json("PUT", "/share_limits", br#"{"ratio": 9.0}"#);
    assert_eq!(status, 200);

    let errors: Vec<(&str, String, &[u8])> = vec![
        ("PUT", "/share_limits".into(), br#"{"ratio": -2}"#),
        ("PUT", "/share_limits".into(), br#"{"speed": 1}"#),
        ("PUT", "/queue".into(), br#"{"enabled": "yes"}"#),
        (
            "PUT",
            format!("{path}/share_limits"),
            br#"{"action": "explode"}"#,
        ),
        ("PUT", format!("{path}/force_start"), br#"{}"#),
        ("POST", "/tags".into(), br#"{"tags": ["a,b"]}"#),
        ("POST", "/categories".into(), br#"{"name": "/x"}"#),
        ("PUT", "/categories/none".into(), br#"{"save_path": null}"#),
    ];
    for (method, route, body) in errors {
        let (status, v) = serve.json(method, &route, body);
        assert_eq!(status, 400, "{method} {route}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (status, v) = serve.json("POST", "/tags", br#"{"tags": ["spare"]}"#);
    assert_eq!((status, v), (200, json!(["hd", "new", "spare", "x"])));
    let (status, v) = serve.json("DELETE", "/tags/hd", b"");
    assert_eq!((status, v), (200, json!(["new", "spare", "x"])));
    assert!(serve.stop().success());

    // Everything set at run time is back; the API's values win over the file's.
    let serve = Serve::start(dir.path(), &[]);
    let (_, v) = serve.json("GET", "/share_limits", b"");
    assert_eq!(v["ratio"], 9.0);
    assert_eq!(serve.json("GET", "/queue", b"").1["enabled"], true);
    assert_eq!(
        serve.json("GET", "/tags", b"").1,
        json!(["new", "spare", "x"])
    );
    assert_eq!(
        serve
            .json("GET", "/categories", b"")
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, v) = serve.json("GET", &path, b"");
    assert_eq!(v["tags"], json!(["x"]));
    assert_eq!(v["force_start"], true);
    assert_eq!(v["state"], "seeding");
    assert_eq!(v["share_limits"]["ratio"], 3.5);
    assert!(serve.stop().success());
}
