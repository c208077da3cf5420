//! Fuzzes the MSE/PE responder (`core::mse::Responder`), the first code that meets an
//! encrypted peer's bytes.
//!
//! Two modes, by bit 0 of byte 0:
//! - **raw**: arbitrary bytes, fed in chunks, as a hostile or confused peer sends them;
//! - **honest start**: the harness plays a real initiator for the key exchange (Ya, PadA,
//!   the synchronisation hash, the SKEY hash, all correct), then encrypts the fuzzer's bytes
//!   as the rest of the handshake, so the fuzzer reaches the encrypted parsing (VC,
//!   crypto_provide, PadC, IA) that random bytes never reach. With bit 1 set the harness
//!   also frames that part (VC, a provide value, lengths from the input) and the fuzzer
//!   supplies the padding and IA.
//!
//! Nothing may panic, the responder never sends more than Yb + PadB before it is established,
//! and when it is established its answer must be what the specification says: the torrent
//! the initiator named, the initial payload and every later byte handed on unchanged, and
//! a reply that decrypts to VC and plaintext selected.
//!
//! Fuzzing builds agree on keys in a 64-bit group instead of the 768-bit one (see
//! `mse::fuzzing_pow`: big-number arithmetic would otherwise take nearly all the time); the
//! harness's initiator uses the same function. Run with `cargo fuzz run mse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringtorrent::core::mse::{
    fuzzing_pow, Rc4, Responder, Step, CRYPTO_PLAINTEXT, KEY_LEN, MAX_PAD,
};
use ringtorrent::core::{InfoHash, Rng};
use sha1::{Digest, Sha1};

const KNOWN: [InfoHash; 2] = [InfoHash::from_bytes([1; 20]), InfoHash::from_bytes([2; 20])];

fuzz_target!(|data: &[u8]| {
    let [flags, chunk, seed, rest @ ..] = data else {
        return;
    };
    let chunk = usize::from(*chunk).max(1);
    let mut b = Responder::new(&mut Rng::new(u64::from(*seed)));
    if flags & 1 == 0 {
        raw(&mut b, rest, chunk);
    } else {
        honest(&mut b, *flags, rest, chunk);
    }
});

/// Feeds `bytes` in `chunk`-sized pieces until the responder is done. Returns what it sent
/// before it was established, and the final step (or `None` if it still wants more). Bytes
/// left after the feed that established the connection are plaintext for the session, as a
/// driver would deliver them: they are appended to `plaintext_after`.
fn feed(b: &mut Responder, bytes: &[u8], chunk: usize) -> (Vec<u8>, Option<Result<Step, ()>>) {
    let mut sent = Vec::new();
    for (n, piece) in bytes.chunks(chunk).enumerate() {
        match b.feed(piece, &KNOWN) {
            Ok(Step::NeedMore) => {}
            Ok(Step::Send(bytes)) => {
                sent.extend(bytes);
                assert!(sent.len() <= KEY_LEN + MAX_PAD, "more than Yb and PadB");
            }
            Ok(Step::Established {
                info_hash,
                send,
                mut plaintext_after,
            }) => {
                plaintext_after.extend(&bytes[((n + 1) * chunk).min(bytes.len())..]);
                let done = Step::Established {
                    info_hash,
                    send,
                    plaintext_after,
                };
                return (sent, Some(Ok(done)));
            }
            Err(_) => return (sent, Some(Err(()))),
        }
    }
    (sent, None)
}

fn raw(b: &mut Responder, bytes: &[u8], chunk: usize) {
    let (sent, _) = feed(b, bytes, chunk);
    assert!(
        sent.is_empty() || sent.len() >= KEY_LEN,
        "Yb goes out whole"
    );
}

fn honest(b: &mut Responder, flags: u8, rest: &[u8], chunk: usize) {
    let [e0, e1, pad_a, which, provide, pad_c, ia0, ia1, tail @ ..] = rest else {
        return;
    };
    let secret = [*e0 | 1, *e1, 0x5a];
    let ya = fuzzing_pow(&[2], &secret);
    let mut first = ya.to_vec();
    first.resize(KEY_LEN + usize::from(*pad_a) * 2, 0);
    let (sent, done) = feed(b, &first, chunk);
    if done.is_some() || sent.len() < KEY_LEN {
        // Refused a valid key, or (for a tiny Ya) still waiting: nothing deeper to reach.
        return;
    }
    let s = fuzzing_pow(&sent[..KEY_LEN], &secret);
    // SKEY: one of ours, or (bit 2) a torrent we do not serve.
    let skey = if which & 4 != 0 {
        InfoHash::from_bytes([9; 20])
    } else {
        KNOWN[usize::from(which & 1)]
    };
    let mut second = hash(&[b"req1", &s]).to_vec();
    let req2 = hash(&[b"req2", skey.as_bytes()]);
    let req3 = hash(&[b"req3", &s]);
    second.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
    let mut plain = Vec::new();
    let framed = flags & 2 != 0;
    let (pad_c_len, ia_len) = (
        usize::from(*pad_c) * 3,
        usize::from(u16::from_be_bytes([*ia0, *ia1])),
    );
    if framed {
        plain.extend([0u8; 8]);
        plain.extend(u32::from(*provide & 3).to_be_bytes());
        plain.extend((pad_c_len as u16).to_be_bytes());
        let pad_len = pad_c_len.min(tail.len());
        plain.extend(&tail[..pad_len]);
        plain.extend((ia_len as u16).to_be_bytes());
        plain.extend(&tail[pad_len..]);
    } else {
        plain.extend(tail);
    }
    let clear = plain.clone();
    let mut encrypt = Rc4::new_mse(&hash(&[b"keyA", &s, skey.as_bytes()]));
    encrypt.apply(&mut plain);
    second.extend(&plain);
    let (more, done) = feed(b, &second, chunk);
    assert!(sent.len() + more.len() <= KEY_LEN + MAX_PAD);
    let Some(Ok(Step::Established {
        info_hash,
        send,
        plaintext_after,
    })) = done
    else {
        return;
    };
    assert_eq!(info_hash, skey, "established for another torrent");
    assert!(which & 4 == 0, "established for a torrent we do not serve");
    // The reply: VC, crypto_select = plaintext, len(PadD) = 0, under B's key.
    let mut reply = send;
    let mut decrypt = Rc4::new_mse(&hash(&[b"keyB", &s, skey.as_bytes()]));
    decrypt.apply(&mut reply);
    assert_eq!(&reply[..8], &[0u8; 8], "VC");
    assert_eq!(
        &reply[8..12],
        &CRYPTO_PLAINTEXT.to_be_bytes(),
        "crypto_select"
    );
    if framed && tail.len() >= pad_c_len {
        // IA decrypted, then every later byte exactly as it arrived: after IA the initiator
        // speaks plaintext, so the responder must not decrypt it (here it is the harness's
        // ciphertext, which tells the two apart).
        let ia_at = 8 + 4 + 2 + pad_c_len + 2;
        let mut expect = clear[ia_at..ia_at + ia_len].to_vec();
        expect.extend(&plain[ia_at + ia_len..]);
        assert_eq!(plaintext_after, expect);
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}
