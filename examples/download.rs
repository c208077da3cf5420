//! Downloads a torrent with `ringtorrent::Client`, printing progress from its events.
//!
//! cargo run --release --example download -- TORRENT OUT_DIR [PEER...]
use ringtorrent::client::{AddTorrent, Client, ClientConfig, ClientEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(torrent), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: download TORRENT|MAGNET OUT_DIR [HOST:PORT...]".into());
    };
    let peers = args.map(|p| p.parse()).collect::<Result<Vec<_>, _>>()?;
    let client = Client::start(ClientConfig {
        listen: Some("0.0.0.0:0".parse()?),
        data_dir: out.into(),
        ..ClientConfig::default()
    })?;
    let events = client.subscribe();
    let torrent = client.add(AddTorrent::parse(&torrent).peers(peers))?;
    loop {
        let status = torrent.status()?;
        println!("{:5.1}%  {} peers", status.progress * 100.0, status.peers);
        if status.size > 0 && status.bytes_left == 0 {
            println!("done: {} ({} bytes)", status.name, status.size);
            break;
        }
        match events.recv() {
            Some(ClientEvent::Error { message, .. }) => return Err(message.into()),
            Some(_) => {}
            None => return Err("the client stopped".into()),
        }
    }
    client.shutdown();
    Ok(())
}
