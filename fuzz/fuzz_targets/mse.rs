//! Fuzzes both roles of the MSE/PE handshake (`core::mse::Initiator` and `Responder`), the
//! first code that meets an encrypted peer's bytes.
//!
//! Byte 0 picks the mode and the methods, byte 1 the chunk size, byte 2 the keys:
//! - **raw responder** / **raw initiator**: arbitrary bytes, fed in chunks, as a hostile or
//!   confused peer sends them;
//! - **honest pair**: a real initiator and a real responder talk through a pipe, with the
//!   initial payload and the bytes each sends behind its handshake taken from the input, and
//!   up to eight byte flips (position and mask from the input) applied on the way. Without
//!   flips both must be established on the same torrent and method, each must receive exactly
//!   what the other sent, and RC4 streams must stay in step; with flips nothing may panic.
//!
//! Neither side may send more than Yb and PadB (or Ya and PadA and its request) before it is
//! established. Fuzzing builds agree on keys in a 64-bit group instead of the 768-bit one (see
//! `mse::mod_pow`): big-number arithmetic would otherwise take nearly all the time. Run with
//! `cargo fuzz run mse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::core::mse::{
    Cipher, Initiator, Responder, Step, CRYPTO_PLAINTEXT, CRYPTO_RC4, KEY_LEN, MAX_PAD, SECRET_LEN,
};
use ringtorrent::core::InfoHash;

const KNOWN: [InfoHash; 2] = [InfoHash::from_bytes([1; 20]), InfoHash::from_bytes([2; 20])];

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, keys, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let methods = |bits: u8| u32::from(bits & 3);
    let secret = |salt: u8| [keys.wrapping_add(salt) | 1; SECRET_LEN];
    match mode % 3 {
        0 => {
            let mut b = Responder::new(secret(0), vec![0; usize::from(*keys)], methods(mode >> 2));
            let mut sent = 0;
            for piece in rest.chunks(chunk) {
                match b.feed(piece, &KNOWN) {
                    Ok(Step::NeedMore) => {}
                    Ok(Step::Send(bytes)) => {
                        sent += bytes.len();
                        assert!(sent <= KEY_LEN + MAX_PAD, "more than Yb and PadB");
                    }
                    Ok(Step::Established { .. }) | Err(_) => return,
                }
            }
        }
        1 => {
            let (mut a, _) = Initiator::new(
                secret(1),
                KNOWN[0],
                methods(mode >> 2),
                vec![0; usize::from(*keys)],
                Vec::new(),
                b"ia".to_vec(),
            );
            let mut sent = 0;
            for piece in rest.chunks(chunk) {
                match a.feed(piece) {
                    Ok(Step::NeedMore) => {}
                    Ok(Step::Send(bytes)) => {
                        sent += bytes.len();
                        // The request: two hashes, the fixed part, PadC (empty), len(IA), IA.
                        assert_eq!(sent, 20 + 20 + 14 + 2 + 2, "one request, once");
                    }
                    Ok(Step::Established { .. }) | Err(_) => return,
                }
            }
        }
        _ => pair(*mode, chunk, *keys, rest),
    }
});

/// The honest pair. Input: `flips` count, then that many (position u16, mask) triples, then
/// `skey` choice, IA length, and the rest split between IA, A's and B's bytes after.
fn pair(mode: u8, chunk: usize, keys: u8, rest: &[u8]) {
    let [nflips, tail @ ..] = rest else {
        return;
    };
    let nflips = usize::from(nflips % 9);
    if tail.len() < nflips * 3 + 2 {
        return;
    }
    let (flip_bytes, tail) = tail.split_at(nflips * 3);
    let flips: Vec<(usize, u8)> = flip_bytes
        .chunks(3)
        .map(|f| (usize::from(u16::from_le_bytes([f[0], f[1]])), f[2]))
        .filter(|&(_, mask)| mask != 0)
        .collect();
    let [which, ia_len, tail @ ..] = tail else {
        return;
    };
    let skey = if which & 4 != 0 {
        InfoHash::from_bytes([9; 20])
    } else {
        KNOWN[usize::from(which & 1)]
    };
    let (ia, tail) = tail.split_at(usize::from(*ia_len).min(tail.len()));
    let (a_after, b_after) = tail.split_at(tail.len() / 2);
    let provide = u32::from(mode >> 2 & 3);
    let allow = u32::from(mode >> 4 & 3);
    let pad = |n: u8| vec![0x77; usize::from(n) * 2];
    let (mut a, first) = Initiator::new(
        [keys | 1; SECRET_LEN],
        skey,
        provide,
        pad(keys),
        pad(keys >> 3),
        ia.to_vec(),
    );
    let mut b = Responder::new(
        [keys.wrapping_add(7) | 1; SECRET_LEN],
        pad(keys >> 1),
        allow,
    );

    // The pipe: bytes each way, positions counted from the start of each direction.
    let (mut to_b, mut to_a) = (first, Vec::new());
    let (mut at_b, mut at_a) = (0usize, 0usize);
    let mut a_got: Option<(Vec<u8>, Option<Box<Cipher>>)> = None;
    let mut b_got: Option<(Vec<u8>, Option<Box<Cipher>>)> = None;
    let flip = |stream: u8, at: usize, bytes: &mut [u8]| {
        for &(pos, mask) in &flips {
            // Even positions flip the A-to-B direction, odd ones B-to-A.
            let (dir, pos) = ((pos & 1) as u8, pos >> 1);
            if dir == stream && pos >= at && pos < at + bytes.len() {
                bytes[pos - at] ^= mask;
            }
        }
    };
    for _ in 0..100_000 {
        if to_b.is_empty() && to_a.is_empty() {
            break;
        }
        if !to_b.is_empty() {
            let mut piece: Vec<u8> = to_b.drain(..chunk.min(to_b.len())).collect();
            flip(0, at_b, &mut piece);
            at_b += piece.len();
            match &mut b_got {
                Some((plain, cipher)) => {
                    if let Some(c) = cipher.as_mut() {
                        ringtorrent_apply(c, &mut piece, false);
                    }
                    plain.extend(piece);
                }
                None => match b.feed(&piece, &KNOWN) {
                    Ok(Step::NeedMore) => {}
                    Ok(Step::Send(bytes)) => to_a.extend(bytes),
                    Ok(Step::Established {
                        info_hash,
                        send,
                        plaintext_after,
                        mut cipher,
                    }) => {
                        assert_eq!(info_hash, skey);
                        assert!(which & 4 == 0, "established for a torrent we do not serve");
                        to_a.extend(send);
                        let mut after = b_after.to_vec();
                        if let Some(c) = cipher.as_mut() {
                            ringtorrent_apply(c, &mut after, true);
                        }
                        to_a.extend(after);
                        b_got = Some((plaintext_after, cipher));
                    }
                    Err(_) => return,
                },
            }
        }
        if !to_a.is_empty() {
            let mut piece: Vec<u8> = to_a.drain(..chunk.min(to_a.len())).collect();
            flip(1, at_a, &mut piece);
            at_a += piece.len();
            match &mut a_got {
                Some((plain, cipher)) => {
                    if let Some(c) = cipher.as_mut() {
                        ringtorrent_apply(c, &mut piece, false);
                    }
                    plain.extend(piece);
                }
                None => match a.feed(&piece) {
                    Ok(Step::NeedMore) => {}
                    Ok(Step::Send(bytes)) => to_b.extend(bytes),
                    Ok(Step::Established {
                        info_hash,
                        send,
                        plaintext_after,
                        mut cipher,
                    }) => {
                        assert_eq!(info_hash, skey);
                        assert!(send.is_empty());
                        let mut after = a_after.to_vec();
                        if let Some(c) = cipher.as_mut() {
                            ringtorrent_apply(c, &mut after, true);
                        }
                        to_b.extend(after);
                        a_got = Some((plaintext_after, cipher));
                    }
                    Err(_) => return,
                },
            }
        }
    }
    if !flips.is_empty() {
        return;
    }
    // Untouched, the two must agree whenever the methods meet.
    let meets = provide & allow != 0 && which & 4 == 0;
    let (Some((a_plain, a_cipher)), Some((b_plain, b_cipher))) = (a_got, b_got) else {
        assert!(!meets, "an honest pair with a common method did not finish");
        return;
    };
    assert_eq!(a_cipher.is_some(), b_cipher.is_some(), "methods differ");
    let rc4 = a_cipher.is_some();
    assert_eq!(
        rc4,
        provide & allow & CRYPTO_PLAINTEXT == 0 && provide & allow & CRYPTO_RC4 != 0
    );
    assert_eq!(a_plain, b_after, "A received what B sent");
    assert_eq!(b_plain, [ia, a_after].concat(), "B received what A sent");
}

/// Encrypts (`send`) or decrypts with one of a cipher's two streams.
fn ringtorrent_apply(c: &mut Cipher, bytes: &mut [u8], send: bool) {
    if send {
        c.send.apply(bytes);
    } else {
        c.recv.apply(bytes);
    }
}
