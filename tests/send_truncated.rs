//! Blocks are sent straight from the files' mappings (`Storage::read_block_shared`). A file
//! truncated under a seeding engine by another program must not crash it: the kernel's copy
//! out of a mapping past the file's end fails with `EFAULT` on both drivers' send calls
//! (a `SIGBUS` only hits code that reads the mapping in user space), and the read that makes
//! a block resident reports the truncation as a read error.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringtorrent::client::{AddTorrent, Client, IoChoice, TorrentState};
use ringtorrent::metainfo::Torrent;
use ringtorrent::storage::{OpenMode, Storage};

const PIECE: usize = 64 * 1024;
const LEN: usize = 16 * PIECE;

/// A payload in `dir/t.bin` and its torrent's bytes.
fn make(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    common::write_payload(&dir.join("t.bin"), LEN, 11);
    let opts = ringtorrent::metainfo::create::CreateOptions {
        path: dir.join("t.bin"),
        piece_len: Some(PIECE as u64),
        ..Default::default()
    };
    let torrent = ringtorrent::metainfo::create::create(&opts, &AtomicU64::new(0))
        .unwrap()
        .bytes;
    (std::fs::read(dir.join("t.bin")).unwrap(), torrent)
}

fn truncate(path: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(0)
        .unwrap();
}

#[test]
fn a_block_of_a_truncated_file_fails_to_send_with_efault_on_both_drivers_send_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let (payload, torrent) = make(tmp.path());
    let info = Arc::new(Torrent::from_bytes(&torrent).unwrap().info);
    let storage = Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::ReadOnly).unwrap());
    let piece = info.lengths().pieces().last().unwrap();
    let blocks: Vec<_> = info.lengths().blocks(piece).collect();
    let start = info.lengths().offset_of(piece) as usize;

    let first = storage.read_block_shared(blocks[0]).unwrap();
    assert_eq!(&first[..], &payload[start..start + blocks[0].len as usize]);
    let second = storage.read_block_shared(blocks[1]).unwrap();
    // Whatever becomes of the storage, the bytes keep its mapping alive.
    drop(storage);
    truncate(&tmp.path().join("t.bin"));

    // epoll's path: a plain write from the mapping.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_rx, _) = listener.accept().unwrap();
    let err = tx.write(&first).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EFAULT), "{err}");

    // io_uring's path: SENDMSG from the mapping.
    let mut ring = match io_uring::IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring unavailable here ({e}); its half is not run");
            return;
        }
    };
    let mut iov = [libc::iovec {
        iov_base: second.as_ptr() as *mut libc::c_void,
        iov_len: second.len(),
    }];
    // SAFETY: msghdr is a plain C struct for which all-zero bytes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 1;
    let entry = io_uring::opcode::SendMsg::new(io_uring::types::Fd(tx.as_raw_fd()), &msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(7);
    // SAFETY: `msg`, `iov` and `second` outlive the wait for the completion below.
    unsafe { ring.submission().push(&entry).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().unwrap();
    assert_eq!(cqe.user_data(), 7);
    assert_eq!(cqe.result(), -libc::EFAULT);
}

#[test]
fn batched_and_resident_reads_are_byte_exact_and_a_truncation_fails_only_the_blocks_it_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (payload, torrent) = make(tmp.path());
    let info = Arc::new(Torrent::from_bytes(&torrent).unwrap().info);
    let storage = Arc::new(Storage::open(info.clone(), tmp.path(), OpenMode::ReadOnly).unwrap());
    let lengths = info.lengths();
    let bytes_of = |b: &ringtorrent::core::BlockRef| {
        let at = lengths.offset_of(b.piece) as usize + b.offset as usize;
        &payload[at..at + b.len as usize]
    };
    // Every block of the payload in order (runs across pieces), then a few out of order.
    let mut blocks: Vec<_> = lengths
        .pieces()
        .flat_map(|p| lengths.blocks(p).collect::<Vec<_>>())
        .collect();
    let all = blocks.len();
    blocks.extend([blocks[5], blocks[2], blocks[3], blocks[all - 1]]);
    let read = storage.read_blocks_shared(&blocks);
    assert_eq!(read.len(), blocks.len());
    for (b, r) in blocks.iter().zip(&read) {
        assert_eq!(&r.as_ref().unwrap()[..], bytes_of(b), "{b:?}");
    }
    drop(read);
    // Every page was just made resident: each block is now answerable without the pool.
    for b in &blocks {
        assert_eq!(&storage.read_block_resident(*b).unwrap()[..], bytes_of(b));
    }

    // Cut the file two blocks into its last piece: a batch over that piece's four blocks
    // serves the two before the cut and fails the two after it.
    let piece = lengths.pieces().last().unwrap();
    let last: Vec<_> = lengths.blocks(piece).collect();
    assert_eq!(last.len(), 4);
    let cut = lengths.offset_of(piece) + u64::from(last[2].offset);
    std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("t.bin"))
        .unwrap()
        .set_len(cut)
        .unwrap();
    // Blocks before the cut stay answerable on the loop; past it their pages left the page
    // cache, so they go to the pool, which reports the truncation.
    let read = storage.read_blocks_shared(&last);
    let resident = storage.read_block_resident(last[0]);
    assert_eq!(&resident.unwrap()[..], bytes_of(&last[0]));
    assert!(storage.read_block_resident(last[2]).is_none());
    assert!(storage.read_block_resident(last[3]).is_none());
    assert_eq!(&read[0].as_ref().unwrap()[..], bytes_of(&last[0]));
    assert_eq!(&read[1].as_ref().unwrap()[..], bytes_of(&last[1]));
    assert!(read[2].is_err(), "a block past the cut was served");
    assert!(read[3].is_err(), "a block past the cut was served");
}

/// A peer speaking the wire protocol by hand.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    fn connect(client: &Client, info_hash: &[u8; 20]) -> Peer {
        let mut stream = TcpStream::connect(client.listen_addr().unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut hs = vec![19u8];
        hs.extend_from_slice(b"BitTorrent protocol");
        hs.extend_from_slice(&[0; 8]);
        hs.extend_from_slice(info_hash);
        hs.extend_from_slice(b"-XX0000-truncatetest");
        stream.write_all(&hs).unwrap();
        let mut back = [0u8; 68];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(&back[28..48], info_hash);
        Peer { stream }
    }

    fn send(&mut self, id: u8, body: &[u8]) {
        let mut m = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        m.push(id);
        m.extend_from_slice(body);
        self.stream.write_all(&m).unwrap();
    }

    /// The next message (id, body), skipping keep-alives; `None` when the seed closed.
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let mut len = [0u8; 4];
            match self.stream.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof) => return None,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return None,
                Err(e) => panic!("reading from the seed: {e}"),
            }
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 {
                continue;
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).ok()?;
            let id = body.remove(0);
            return Some((id, body));
        }
    }

    fn request(&mut self, piece: u32, offset: u32, len: u32) {
        let mut body = piece.to_be_bytes().to_vec();
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
        self.send(6, &body);
    }
}

fn seed_survives_truncation(io: IoChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let (payload, torrent) = make(tmp.path());
    let meta = Torrent::from_bytes(&torrent).unwrap();
    let mut config = common::client_config(tmp.path(), 1);
    config.io = io;
    let client = Client::start(config).unwrap();
    let t = client
        .add(AddTorrent::bytes(torrent.clone()).seed_only())
        .unwrap();
    assert_eq!(t.status().unwrap().state, TorrentState::Seeding);
    let hash: [u8; 20] = *meta.info_hash().as_bytes();

    let mut peer = Peer::connect(&client, &hash);
    peer.send(2, &[]); // interested
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never unchoked");
        match peer.next() {
            Some((1, _)) => break,
            Some(_) => continue,
            None => panic!("the seed closed before unchoking"),
        }
    }
    peer.request(0, 0, 16384);
    loop {
        match peer.next() {
            Some((7, body)) => {
                assert_eq!(&body[8..], &payload[..16384]);
                break;
            }
            Some(_) => continue,
            None => panic!("the seed closed before sending the block"),
        }
    }

    truncate(&tmp.path().join("t.bin"));
    let last = (LEN / PIECE - 1) as u32;
    peer.request(last, 0, 16384);
    peer.request(last, 16384, 16384);
    // No block may come back; the torrent stops on a read error and the process lives on.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = t.status().unwrap();
        if status.state == TorrentState::Error {
            let error = status.error.unwrap_or_default();
            assert!(!error.is_empty());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error reported: {:?}",
            status.state
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(peer);
    client.shutdown();
}

#[test]
fn a_seed_on_epoll_survives_its_payload_truncated_and_reports_a_read_error() {
    seed_survives_truncation(IoChoice::Epoll);
}

#[test]
fn a_seed_on_io_uring_survives_its_payload_truncated_and_reports_a_read_error() {
    if ringtorrent::driver::uring::probe().is_err() {
        eprintln!("io_uring unavailable here; skipped");
        return;
    }
    seed_survives_truncation(IoChoice::Uring);
}
