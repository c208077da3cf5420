//! Seeds every .torrent in a folder (data in a second folder) with `ringtorrent::Client`,
//! printing each torrent's state every ten seconds, until interrupted.
//!
//! cargo run --release --example seedbox -- TORRENTS_DIR DATA_DIR [PORT]
use std::time::Duration;

use ringtorrent::client::{AddTorrent, Client, ClientConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(torrents), Some(data)) = (args.next(), args.next()) else {
        return Err("usage: seedbox TORRENTS_DIR DATA_DIR [PORT]".into());
    };
    let port: u16 = args.next().map_or(Ok(6881), |p| p.parse())?;
    let client = Client::start(ClientConfig {
        listen: Some(([0, 0, 0, 0], port).into()),
        data_dir: data.into(),
        ..ClientConfig::default()
    })?;
    let mut adds = Vec::new();
    for entry in std::fs::read_dir(&torrents)? {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "torrent") {
            adds.push(AddTorrent::file(path).seed_only());
        }
    }
    for result in client.add_many(adds) {
        if let Err(e) = result {
            eprintln!("not seeded: {e}");
        }
    }
    println!(
        "seeding on {:?} with {}",
        client.listen_addr(),
        client.backend()
    );
    loop {
        for s in client.list() {
            let (state, have, pieces) = (s.state.as_str(), s.pieces_have, s.pieces);
            println!(
                "{state:11} {have:>6}/{pieces:<6} {:>10} B/s up  {}",
                s.upload_rate, s.name
            );
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}
