//! Message Stream Encryption (MSE/PE, "BitTorrent protocol encryption"), the receiving side.
//!
//! libtorrent, Transmission and qBittorrent open connections with this handshake by default.
//! We answer it and always select **plaintext** for the rest of the connection, so such a peer
//! connects at once instead of being refused and redialling in plaintext a second later.
//! Full RC4 streaming is not supported yet: a peer that offers only RC4 is refused with
//! [`MseError::Rc4Only`].
//!
//! The exchange, with A the peer that dialled us and B us (`HASH` is SHA-1 of the
//! concatenation, `ENCRYPT` is RC4 with the first 1024 bytes of key stream discarded):
//!
//! ```text
//! A -> B  Ya, PadA (0..=512)
//! B -> A  Yb, PadB (0..=512)
//! A -> B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! B -> A  ENCRYPT(VC, crypto_select, len(PadD), PadD)
//! ```
//!
//! `Y = 2^X mod P` (Diffie-Hellman over a 768-bit prime), `S` the shared secret, `SKEY` the
//! info hash, `VC` eight zero bytes. A's stream is keyed `HASH('keyA', S, SKEY)`, B's
//! `HASH('keyB', S, SKEY)`. With plaintext selected, the decrypted `IA` and every later byte
//! are the ordinary BitTorrent handshake and messages.
//!
//! [`Responder`] is a sans-IO state machine: the session feeds it the bytes that arrive and
//! sends what it returns. Every length it reads is bounded, and it buffers at most
//! [`MAX_BUFFERED`] bytes, so no input can make it allocate without limit, and no input
//! panics it (see the proptest below).

use num_bigint::BigUint;
use sha1::{Digest, Sha1};

use super::{InfoHash, Rng};

/// The Diffie-Hellman modulus: the 768-bit prime of the MSE specification.
const PRIME: [u8; KEY_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// Length of a public key and of the shared secret: 768 bits.
pub const KEY_LEN: usize = 96;
/// Longest PadA, PadB, PadC and PadD the specification allows.
pub const MAX_PAD: usize = 512;
/// Longest initial payload we accept. A's IA is at most its BitTorrent handshake (68 bytes)
/// and perhaps its first messages; 8 KiB leaves room for a bitfield and an extension
/// handshake while keeping the buffer small.
pub const MAX_IA_LEN: usize = 8 * 1024;
/// Length of our private exponent. The specification asks for at least 128 bits; 160 is
/// what most clients use.
const SECRET_LEN: usize = 20;
/// Key stream bytes thrown away before use, as the specification requires.
const RC4_DISCARD: usize = 1024;
/// crypto_provide / crypto_select bit for plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// crypto_provide / crypto_select bit for RC4 after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;
/// The encrypted fixed part after the two hashes: VC (8), crypto_provide (4), len(PadC) (2).
const FIXED_LEN: usize = 8 + 4 + 2;
/// Most bytes an honest initiator can have sent before we are established: Ya, PadA, the two
/// hashes, the fixed part, PadC, len(IA) and IA. More is an error.
pub const MAX_BUFFERED: usize = KEY_LEN + MAX_PAD + 20 + 20 + FIXED_LEN + MAX_PAD + 2 + MAX_IA_LEN;

/// Why an MSE handshake failed. Each closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// Ya is 0, 1, P - 1 or not below P: a degenerate key.
    #[error("degenerate Diffie-Hellman public key")]
    BadPublicKey,
    /// HASH('req1', S) did not appear within PadA's 512 bytes: not an MSE peer, or garbage.
    #[error("no synchronisation hash within the padding bound")]
    NoSync,
    /// The SKEY hash names none of our torrents.
    #[error("the encrypted handshake names none of our torrents")]
    UnknownTorrent,
    /// The verification constant did not decrypt to zeros: wrong keys.
    #[error("verification constant did not decrypt to zeros")]
    BadVerificationConstant,
    /// PadC is longer than 512 bytes.
    #[error("padding longer than 512 bytes")]
    PaddingTooLong,
    /// IA is longer than [`MAX_IA_LEN`].
    #[error("initial payload longer than {MAX_IA_LEN} bytes")]
    InitialPayloadTooLong,
    /// The peer offers only RC4 for the rest of the connection. We support only plaintext
    /// after the handshake (RC4 streaming is not implemented yet).
    #[error("peer offers only RC4 stream encryption, which is not supported yet")]
    Rc4Only,
    /// The peer offers neither plaintext nor RC4.
    #[error("peer offers no method we know")]
    NoCommonMethod,
    /// More bytes arrived before the handshake finished than an honest peer can send.
    #[error("more than {MAX_BUFFERED} bytes before the handshake finished")]
    TooMuchData,
}

impl MseError {
    /// A short stable name, for counters and JSON reports.
    pub fn name(&self) -> &'static str {
        match self {
            MseError::BadPublicKey => "mse_bad_public_key",
            MseError::NoSync => "mse_no_sync",
            MseError::UnknownTorrent => "mse_unknown_torrent",
            MseError::BadVerificationConstant => "mse_bad_vc",
            MseError::PaddingTooLong => "mse_padding_too_long",
            MseError::InitialPayloadTooLong => "mse_ia_too_long",
            MseError::Rc4Only => "mse_rc4_only",
            MseError::NoCommonMethod => "mse_no_common_method",
            MseError::TooMuchData => "mse_too_much_data",
        }
    }
}

/// What the responder wants after a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until more bytes arrive.
    NeedMore,
    /// Send these bytes, then wait for more.
    Send(Vec<u8>),
    /// The handshake is done and plaintext selected.
    Established {
        /// The torrent the peer asked for (SKEY).
        info_hash: InfoHash,
        /// Bytes to send first: our reply (and Yb with PadB if they had not gone out yet).
        send: Vec<u8>,
        /// The decrypted IA followed by every byte received after it: the start of the
        /// plaintext BitTorrent handshake.
        plaintext_after: Vec<u8>,
    },
}

/// RC4, keyed as MSE uses it (the first 1024 bytes of key stream already discarded).
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4(..)")
    }
}

impl Rc4 {
    /// A cipher keyed with `key` (1 to 256 bytes; an empty key is treated as one zero byte).
    pub fn new(key: &[u8]) -> Rc4 {
        let key: &[u8] = if key.is_empty() { &[0] } else { key };
        let mut s = [0u8; 256];
        for (n, b) in s.iter_mut().enumerate() {
            *b = n as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// A cipher keyed with `key` whose first 1024 key stream bytes are spent, as MSE wants.
    pub fn new_mse(key: &[u8]) -> Rc4 {
        let mut rc4 = Rc4::new(key);
        rc4.apply(&mut [0u8; RC4_DISCARD]);
        rc4
    }

    /// Encrypts or decrypts `data` in place.
    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[self.i as usize]);
            self.s.swap(self.i as usize, self.j as usize);
            let k =
                self.s[(self.s[self.i as usize].wrapping_add(self.s[self.j as usize])) as usize];
            *b ^= k;
        }
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `base^exponent mod P`, as 96 big-endian bytes.
#[cfg(not(fuzzing))]
fn mod_pow(base: &BigUint, exponent: &[u8]) -> [u8; KEY_LEN] {
    let p = BigUint::from_bytes_be(&PRIME);
    let r = base
        .modpow(&BigUint::from_bytes_be(exponent), &p)
        .to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // The result is below P, so it fits; left-pad with zeros.
    out[KEY_LEN - r.len()..].copy_from_slice(&r);
    out
}

/// Fuzzing builds only (cargo-fuzz sets `cfg(fuzzing)`; no test or release build does): the
/// key agreement runs in the multiplicative group modulo the prime 2^64 - 59 on the low 64
/// bits of the key, so that a fuzzer spends its executions on the parsing around it rather
/// than on 768-bit arithmetic (a few hundred executions a second otherwise). Keys still agree
/// (`(g^a)^b = (g^b)^a`), every check on the keys is the real one, and the fuzz target plays
/// the initiator with [`fuzzing_pow`].
#[cfg(fuzzing)]
fn mod_pow(base: &BigUint, exponent: &[u8]) -> [u8; KEY_LEN] {
    fuzzing_pow(&base.to_bytes_be(), exponent)
}

/// The fuzzing builds' stand-in for `base^exponent mod P` (see `mod_pow`), for the fuzz
/// target's initiator. `base` is big-endian, of any length.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzzing_pow(base: &[u8], exponent: &[u8]) -> [u8; KEY_LEN] {
    const P: u128 = u64::MAX as u128 - 58;
    let low = base
        .iter()
        .rev()
        .take(8)
        .rev()
        .fold(0u128, |acc, &b| acc << 8 | u128::from(b));
    let mut acc: u128 = 1;
    let base = low % P;
    for &byte in exponent {
        for bit in (0..8).rev() {
            acc = acc * acc % P;
            if byte >> bit & 1 == 1 {
                acc = acc * base % P;
            }
        }
    }
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - 8..].copy_from_slice(&(acc as u64).to_be_bytes());
    out
}

/// Where the responder is in the exchange.
#[derive(Debug)]
enum State {
    /// Waiting for Ya (96 bytes).
    AwaitYa,
    /// Yb sent; looking for HASH('req1', S) within PadA. `scanned`: offsets (after Ya)
    /// already ruled out.
    AwaitReq1 {
        secret: Box<[u8; KEY_LEN]>,
        req1: [u8; 20],
        scanned: usize,
    },
    /// req1 found at `at`; waiting for the SKEY hash and the fixed encrypted part.
    AwaitFixed {
        secret: Box<[u8; KEY_LEN]>,
        at: usize,
    },
    /// Fixed part decrypted; waiting for PadC and len(IA), then IA. `at` is where PadC starts.
    AwaitPayload {
        info_hash: InfoHash,
        decrypt: Box<Rc4>,
        reply: Box<Rc4>,
        at: usize,
        pad_c: usize,
        ia: Option<usize>,
    },
    /// Established or failed: nothing more to do.
    Finished,
}

/// The receiving side of an MSE handshake. Feed it every byte the peer sends until it returns
/// [`Step::Established`] or an error.
#[derive(Debug)]
pub struct Responder {
    state: State,
    /// Everything received so far (bounded by [`MAX_BUFFERED`]).
    buf: Vec<u8>,
    /// Our private exponent, drawn from the session's seeded generator.
    secret: [u8; SECRET_LEN],
    /// PadB's length, drawn at construction so that the draw order is fixed.
    pad_b: Vec<u8>,
}

impl Responder {
    /// A responder whose private key and padding are drawn from `rng`.
    pub fn new(rng: &mut Rng) -> Responder {
        let mut secret = [0u8; SECRET_LEN];
        rng.fill(&mut secret);
        let mut pad_b = vec![0u8; rng.index(MAX_PAD + 1)];
        rng.fill(&mut pad_b);
        Responder {
            state: State::AwaitYa,
            buf: Vec::new(),
            secret,
            pad_b,
        }
    }

    /// Takes `data` from the peer. `torrents` lists the info hashes we serve (SKEY must be one
    /// of them). Returns what to do next, or why the handshake failed; after an error or
    /// [`Step::Established`] the responder must not be fed again.
    pub fn feed<'a>(
        &mut self,
        data: &[u8],
        torrents: impl IntoIterator<Item = &'a InfoHash>,
    ) -> Result<Step, MseError> {
        if self.buf.len() + data.len() > MAX_BUFFERED {
            self.state = State::Finished;
            return Err(MseError::TooMuchData);
        }
        self.buf.extend_from_slice(data);
        let mut send = Vec::new();
        let mut torrents = Some(torrents);
        loop {
            match std::mem::replace(&mut self.state, State::Finished) {
                State::Finished => return Ok(Step::NeedMore),
                State::AwaitYa => {
                    if self.buf.len() < KEY_LEN {
                        self.state = State::AwaitYa;
                        break;
                    }
                    let p = BigUint::from_bytes_be(&PRIME);
                    let ya = BigUint::from_bytes_be(&self.buf[..KEY_LEN]);
                    let one = BigUint::from(1u32);
                    if ya <= one || ya >= &p - &one {
                        return Err(MseError::BadPublicKey);
                    }
                    let yb = mod_pow(&BigUint::from(2u32), &self.secret);
                    let secret = Box::new(mod_pow(&ya, &self.secret));
                    send.extend_from_slice(&yb);
                    send.append(&mut self.pad_b);
                    let req1 = hash(&[b"req1", &secret[..]]);
                    self.state = State::AwaitReq1 {
                        secret,
                        req1,
                        scanned: 0,
                    };
                }
                State::AwaitReq1 {
                    secret,
                    req1,
                    mut scanned,
                } => {
                    let mut found = None;
                    while scanned <= MAX_PAD && KEY_LEN + scanned + 20 <= self.buf.len() {
                        let at = KEY_LEN + scanned;
                        if self.buf[at..at + 20] == req1 {
                            found = Some(at + 20);
                            break;
                        }
                        scanned += 1;
                    }
                    match found {
                        Some(at) => self.state = State::AwaitFixed { secret, at },
                        None if scanned > MAX_PAD => return Err(MseError::NoSync),
                        None => {
                            self.state = State::AwaitReq1 {
                                secret,
                                req1,
                                scanned,
                            };
                            break;
                        }
                    }
                }
                State::AwaitFixed { secret, at } => {
                    if self.buf.len() < at + 20 + FIXED_LEN {
                        self.state = State::AwaitFixed { secret, at };
                        break;
                    }
                    let req3 = hash(&[b"req3", &secret[..]]);
                    let mut req2 = [0u8; 20];
                    for (n, b) in req2.iter_mut().enumerate() {
                        *b = self.buf[at + n] ^ req3[n];
                    }
                    let Some(info_hash) = torrents
                        .take()
                        .into_iter()
                        .flatten()
                        .find(|h| hash(&[b"req2", h.as_bytes()]) == req2)
                        .copied()
                    else {
                        return Err(MseError::UnknownTorrent);
                    };
                    let mut decrypt =
                        Rc4::new_mse(&hash(&[b"keyA", &secret[..], info_hash.as_bytes()]));
                    let reply = Rc4::new_mse(&hash(&[b"keyB", &secret[..], info_hash.as_bytes()]));
                    let at = at + 20;
                    decrypt.apply(&mut self.buf[at..at + FIXED_LEN]);
                    let fixed = &self.buf[at..at + FIXED_LEN];
                    if fixed[..8] != [0u8; 8] {
                        return Err(MseError::BadVerificationConstant);
                    }
                    let provide = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
                    let pad_c = usize::from(u16::from_be_bytes([fixed[12], fixed[13]]));
                    if pad_c > MAX_PAD {
                        return Err(MseError::PaddingTooLong);
                    }
                    if provide & CRYPTO_PLAINTEXT == 0 {
                        return Err(if provide & CRYPTO_RC4 != 0 {
                            MseError::Rc4Only
                        } else {
                            MseError::NoCommonMethod
                        });
                    }
                    self.state = State::AwaitPayload {
                        info_hash,
                        decrypt: Box::new(decrypt),
                        reply: Box::new(reply),
                        at: at + FIXED_LEN,
                        pad_c,
                        ia: None,
                    };
                }
                State::AwaitPayload {
                    info_hash,
                    mut decrypt,
                    mut reply,
                    at,
                    pad_c,
                    ia,
                } => {
                    let ia_len = match ia {
                        Some(n) => n,
                        None => {
                            if self.buf.len() < at + pad_c + 2 {
                                self.state = State::AwaitPayload {
                                    info_hash,
                                    decrypt,
                                    reply,
                                    at,
                                    pad_c,
                                    ia,
                                };
                                break;
                            }
                            let region = &mut self.buf[at..at + pad_c + 2];
                            decrypt.apply(region);
                            let n =
                                usize::from(u16::from_be_bytes([region[pad_c], region[pad_c + 1]]));
                            if n > MAX_IA_LEN {
                                return Err(MseError::InitialPayloadTooLong);
                            }
                            n
                        }
                    };
                    let ia_at = at + pad_c + 2;
                    if self.buf.len() < ia_at + ia_len {
                        self.state = State::AwaitPayload {
                            info_hash,
                            decrypt,
                            reply,
                            at,
                            pad_c,
                            ia: Some(ia_len),
                        };
                        break;
                    }
                    decrypt.apply(&mut self.buf[ia_at..ia_at + ia_len]);
                    // VC, crypto_select, len(PadD) = 0 (the specification's current practice).
                    let mut answer = [0u8; FIXED_LEN];
                    answer[8..12].copy_from_slice(&CRYPTO_PLAINTEXT.to_be_bytes());
                    reply.apply(&mut answer);
                    send.extend_from_slice(&answer);
                    let plaintext_after = self.buf.split_off(ia_at);
                    self.buf = Vec::new();
                    return Ok(Step::Established {
                        info_hash,
                        send,
                        plaintext_after,
                    });
                }
            }
        }
        Ok(if send.is_empty() {
            Step::NeedMore
        } else {
            Step::Send(send)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::{any, proptest, ProptestConfig};

    #[test]
    fn rc4_known_vectors() {
        for (key, plain, cipher) in [
            (&b"Key"[..], &b"Plaintext"[..], "bbf316e8d940af0ad3"),
            (b"Wiki", b"pedia", "1021bf0420"),
            (b"Secret", b"Attack at dawn", "45a01f645fc35b383552544b9bf5"),
        ] {
            let mut data = plain.to_vec();
            Rc4::new(key).apply(&mut data);
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, cipher);
        }
    }

    /// The dialling side, written from the specification, to drive the responder.
    pub(crate) struct Initiator {
        secret: [u8; SECRET_LEN],
        pad_a: usize,
        provide: u32,
        pad_c: usize,
        skey: InfoHash,
        /// Corrupts the VC when set.
        bad_vc: bool,
    }

    impl Initiator {
        pub(crate) fn new(seed: u64, skey: InfoHash, provide: u32) -> Initiator {
            let mut rng = Rng::new(seed);
            let mut secret = [0u8; SECRET_LEN];
            rng.fill(&mut secret);
            Initiator {
                secret,
                pad_a: rng.index(MAX_PAD + 1),
                provide,
                pad_c: rng.index(40),
                skey,
                bad_vc: false,
            }
        }

        pub(crate) fn first(&self) -> Vec<u8> {
            let mut out = mod_pow(&BigUint::from(2u32), &self.secret).to_vec();
            out.extend(std::iter::repeat_n(0xAB, self.pad_a));
            out
        }

        /// A's second message, given B's `Yb` (the first 96 bytes B sent), and the
        /// decryptor of B's stream.
        pub(crate) fn second(&self, yb: &[u8], ia: &[u8]) -> (Vec<u8>, Rc4) {
            let s = mod_pow(&BigUint::from_bytes_be(yb), &self.secret);
            let mut out = hash(&[b"req1", &s]).to_vec();
            let req2 = hash(&[b"req2", self.skey.as_bytes()]);
            let req3 = hash(&[b"req3", &s]);
            out.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
            let mut enc = Rc4::new_mse(&hash(&[b"keyA", &s, self.skey.as_bytes()]));
            let mut plain = vec![0u8; 8];
            if self.bad_vc {
                plain[3] = 1;
            }
            plain.extend(self.provide.to_be_bytes());
            plain.extend((self.pad_c as u16).to_be_bytes());
            plain.extend(std::iter::repeat_n(0x5A, self.pad_c));
            plain.extend((ia.len() as u16).to_be_bytes());
            plain.extend(ia);
            enc.apply(&mut plain);
            out.extend(plain);
            let dec = Rc4::new_mse(&hash(&[b"keyB", &s, self.skey.as_bytes()]));
            (out, dec)
        }
    }

    fn hashes() -> Vec<InfoHash> {
        vec![InfoHash::from_bytes([1; 20]), InfoHash::from_bytes([2; 20])]
    }

    /// Runs a whole exchange, feeding `chunk` bytes at a time. Returns the result and the
    /// plaintext bytes B sent after its reply header, decrypted.
    fn exchange(
        a: &Initiator,
        ia: &[u8],
        after: &[u8],
        chunk: usize,
        seed: u64,
    ) -> (Result<Step, MseError>, Vec<u8>) {
        let known = hashes();
        let mut b = Responder::new(&mut Rng::new(seed));
        let mut from_b = Vec::new();
        for piece in a.first().chunks(chunk) {
            match b.feed(piece, &known) {
                Ok(Step::Send(bytes)) => from_b.extend(bytes),
                Ok(Step::NeedMore) => {}
                other => return (other, from_b),
            }
        }
        assert!(from_b.len() >= KEY_LEN && from_b.len() <= KEY_LEN + MAX_PAD);
        let (mut second, dec) = a.second(&from_b[..KEY_LEN], ia);
        second.extend_from_slice(after);
        let mut last = Ok(Step::NeedMore);
        for piece in second.chunks(chunk) {
            last = b.feed(piece, &known);
            match &last {
                Ok(Step::NeedMore) => {}
                Ok(Step::Established { .. }) | Err(_) => break,
                Ok(Step::Send(_)) => panic!("unexpected send"),
            }
        }
        let _ = dec;
        (last, from_b)
    }

    #[test]
    fn plaintext_offered_is_selected() {
        for chunk in [1, 7, 100, 10_000] {
            let skey = InfoHash::from_bytes([2; 20]);
            let a = Initiator::new(chunk as u64, skey, CRYPTO_PLAINTEXT | CRYPTO_RC4);
            let ia = b"\x13BitTorrent protocol and the rest";
            let (res, _) = exchange(&a, ia, b"after", chunk, 9);
            let Ok(Step::Established {
                info_hash,
                send,
                plaintext_after,
            }) = res
            else {
                panic!("{res:?}");
            };
            assert_eq!(info_hash, skey);
            let mut expected = ia.to_vec();
            expected.extend_from_slice(b"after");
            // Bytes after the IA come along when they arrived in the same feed.
            assert!(expected.starts_with(&plaintext_after) && plaintext_after.len() >= ia.len());
            if chunk == 10_000 {
                assert_eq!(plaintext_after, expected);
            }
            // The reply decrypts to VC, crypto_select = plaintext, len(PadD) = 0.
            let (_, mut dec) = a.second(&exchange_yb(9, &a), b"");
            let mut reply = send.clone();
            dec.apply(&mut reply);
            assert_eq!(&reply[..8], &[0u8; 8]);
            assert_eq!(&reply[8..12], &CRYPTO_PLAINTEXT.to_be_bytes());
            assert_eq!(&reply[12..14], &[0, 0]);
        }
    }

    /// B's Yb for a responder seeded with `seed` (the first 96 bytes it sends).
    fn exchange_yb(seed: u64, a: &Initiator) -> Vec<u8> {
        let mut b = Responder::new(&mut Rng::new(seed));
        match b.feed(&a.first(), &hashes()) {
            Ok(Step::Send(bytes)) => bytes[..KEY_LEN].to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_ia_gives_empty_plaintext() {
        let a = Initiator::new(3, InfoHash::from_bytes([1; 20]), CRYPTO_PLAINTEXT);
        let (res, _) = exchange(&a, b"", b"", 10_000, 1);
        assert!(
            matches!(res, Ok(Step::Established { ref plaintext_after, .. }) if plaintext_after.is_empty()),
            "{res:?}"
        );
    }

    #[test]
    fn rc4_only_is_refused_with_its_reason() {
        let a = Initiator::new(4, InfoHash::from_bytes([1; 20]), CRYPTO_RC4);
        let (res, _) = exchange(&a, b"x", b"", 10_000, 1);
        assert_eq!(res, Err(MseError::Rc4Only));
        let a = Initiator::new(4, InfoHash::from_bytes([1; 20]), 0x10);
        assert_eq!(
            exchange(&a, b"x", b"", 10_000, 1).0,
            Err(MseError::NoCommonMethod)
        );
    }

    #[test]
    fn wrong_vc_and_unknown_skey_are_refused() {
        let mut a = Initiator::new(5, InfoHash::from_bytes([1; 20]), CRYPTO_PLAINTEXT);
        a.bad_vc = true;
        assert_eq!(
            exchange(&a, b"x", b"", 33, 1).0,
            Err(MseError::BadVerificationConstant)
        );
        let a = Initiator::new(6, InfoHash::from_bytes([7; 20]), CRYPTO_PLAINTEXT);
        assert_eq!(
            exchange(&a, b"x", b"", 33, 1).0,
            Err(MseError::UnknownTorrent)
        );
    }

    #[test]
    fn garbage_finds_no_sync_and_bad_keys_are_refused() {
        let known = hashes();
        let mut b = Responder::new(&mut Rng::new(1));
        let mut garbage = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec();
        garbage.resize(KEY_LEN + MAX_PAD + 20, b'x');
        assert!(matches!(b.feed(&garbage, &known), Err(MseError::NoSync)));
        let mut b = Responder::new(&mut Rng::new(1));
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        assert_eq!(b.feed(&one, &known), Err(MseError::BadPublicKey));
        let mut b = Responder::new(&mut Rng::new(1));
        assert_eq!(b.feed(&PRIME, &known), Err(MseError::BadPublicKey));
        let mut b = Responder::new(&mut Rng::new(1));
        assert_eq!(
            b.feed(&vec![0x42; MAX_BUFFERED + 1], &known),
            Err(MseError::TooMuchData)
        );
    }

    #[test]
    fn same_seed_same_bytes() {
        let a = Initiator::new(8, InfoHash::from_bytes([1; 20]), CRYPTO_PLAINTEXT);
        let run = |seed| {
            let mut b = Responder::new(&mut Rng::new(seed));
            b.feed(&a.first(), &hashes())
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..6),
            seed in any::<u64>(),
        ) {
            let known = hashes();
            let mut b = Responder::new(&mut Rng::new(seed));
            for c in &chunks {
                match b.feed(c, &known) {
                    Ok(Step::NeedMore | Step::Send(_)) => {}
                    _ => break,
                }
            }
        }

        #[test]
        fn corrupted_handshakes_never_panic(flip in 0usize..400, seed in any::<u64>()) {
            let a = Initiator::new(seed, InfoHash::from_bytes([1; 20]), CRYPTO_PLAINTEXT);
            let known = hashes();
            let mut b = Responder::new(&mut Rng::new(seed));
            let Ok(Step::Send(from_b)) = b.feed(&a.first(), &known) else { return Ok(()) };
            let (mut second, _) = a.second(&from_b[..KEY_LEN], b"\x13BitTorrent protocol");
            let at = flip % second.len();
            second[at] ^= 0x40;
            let _ = b.feed(&second, &known);
        }
    }
}
