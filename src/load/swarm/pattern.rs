//! Pattern data: every byte of a `swarm-load` torrent is a function of its offset in the
//! torrent, so the generator serves blocks and checks received ones without reading or
//! storing anything. [`gen`] writes such a payload and its torrent for the target to seed or
//! fetch.
//!
//! The byte at offset `o` is byte `o % 8` (little-endian) of `mix(o / 8)`, where `mix` is
//! SplitMix64's finaliser over the word index xor a fixed key: cheap (a few cycles per 8
//! bytes), and no two blocks of a torrent are alike, so a block served at the wrong offset
//! fails verification.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::metainfo::create::{create, CreateOptions};
use crate::metainfo::Torrent;

type Result<T> = std::result::Result<T, String>;

const KEY: u64 = 0x5157_4152_4D4C_4F41; // "SWARMLOA"

fn mix(word: u64) -> u64 {
    let mut z = (word ^ KEY).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the pattern bytes at torrent offsets `offset..offset + out.len()`.
pub fn fill(offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut rest = out;
    // Unaligned head.
    while pos % 8 != 0 && !rest.is_empty() {
        rest[0] = mix(pos / 8).to_le_bytes()[(pos % 8) as usize];
        rest = &mut rest[1..];
        pos += 1;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&mix(pos / 8).to_le_bytes());
        pos += 8;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let word = mix(pos / 8).to_le_bytes();
        tail.copy_from_slice(&word[..tail.len()]);
    }
}

/// Whether `data` equals the pattern at `offset`, without allocating.
pub fn matches(offset: u64, data: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    let mut at = offset;
    for chunk in data.chunks(buf.len()) {
        let expect = &mut buf[..chunk.len()];
        fill(at, expect);
        if expect != chunk {
            return false;
        }
        at += chunk.len() as u64;
    }
    true
}

/// What [`gen`] made.
#[derive(Debug)]
pub struct Generated {
    /// The .torrent file.
    pub torrent_path: PathBuf,
    /// The folder to seed from (the torrent's payload is inside it).
    pub data_dir: PathBuf,
    /// The torrent.
    pub torrent: Torrent,
}

/// Writes a pattern payload of `size` bytes (one file, or `files` files of near-equal size
/// under a folder) into `dir/data`, and its torrent with `piece_len` pieces to
/// `dir/swarm-load.torrent`.
pub fn gen(dir: &Path, size: u64, piece_len: u64, files: usize) -> Result<Generated> {
    if size == 0 {
        return Err("the payload size must be above zero".into());
    }
    let files = files.max(1);
    let data_dir = dir.join("data");
    let name = format!("swarm-load-{size}");
    let root = data_dir.join(&name);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    // Files named so that their sorted order (the torrent's) is the order written here.
    let mut plan = Vec::new();
    if files == 1 {
        plan.push((root.clone(), 0, size));
    } else {
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        let per = size / files as u64;
        let mut offset = 0;
        for i in 0..files {
            let len = if i + 1 == files { size - offset } else { per };
            plan.push((root.join(format!("part-{i:06}.bin")), offset, len));
            offset += len;
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    for (path, offset, len) in &plan {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        );
        let mut done = 0;
        while done < *len {
            let n = (len - done).min(buf.len() as u64) as usize;
            fill(offset + done, &mut buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            done += n as u64;
        }
        file.flush()
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let made = create(
        &CreateOptions {
            path: root,
            piece_len: Some(piece_len),
            ..Default::default()
        },
        &AtomicU64::new(0),
    )
    .map_err(|e| format!("cannot make the torrent: {e}"))?;
    // The pattern is defined over torrent offsets: check the torrent lays the files out as
    // written.
    for (entry, (_, offset, len)) in made.torrent.info.files().iter().zip(&plan) {
        if entry.offset != *offset || entry.length != *len {
            return Err(
                "the torrent orders the files differently from how they were written".into(),
            );
        }
    }
    let torrent_path = dir.join("swarm-load.torrent");
    std::fs::write(&torrent_path, &made.bytes)
        .map_err(|e| format!("cannot write {}: {e}", torrent_path.display()))?;
    Ok(Generated {
        torrent_path,
        data_dir,
        torrent: made.torrent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_a_function_of_the_offset_alone() {
        let mut whole = vec![0u8; 1000];
        fill(3, &mut whole);
        for start in [0usize, 1, 5, 8, 13, 999] {
            for len in [0usize, 1, 7, 8, 9, 1000 - start] {
                let len = len.min(1000 - start);
                let mut part = vec![0u8; len];
                fill(3 + start as u64, &mut part);
                assert_eq!(part, whole[start..start + len], "at {start}+{len}");
            }
        }
        assert!(matches(3, &whole));
        whole[500] ^= 1;
        assert!(!matches(3, &whole));
        // Blocks at different offsets differ.
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        fill(0, &mut a);
        fill(16384, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn gen_writes_data_matching_its_torrent() {
        let dir = tempfile::tempdir().unwrap();
        let g = gen(dir.path(), 300_001, 32 * 1024, 3).unwrap();
        let info = &g.torrent.info;
        assert_eq!(info.total_len(), 300_001);
        assert_eq!(info.files().len(), 3);
        for f in info.files() {
            let path = g.data_dir.join(f.path.join("/"));
            let data = std::fs::read(&path).unwrap();
            assert!(matches(f.offset, &data), "{}", path.display());
        }
    }
}
