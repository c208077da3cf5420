//! Message Stream Encryption (MSE/PE, "BitTorrent protocol encryption"), both roles.
//!
//! libtorrent, Transmission and qBittorrent open connections with this handshake by default,
//! and users who "require encryption" accept nothing else. [`Responder`] answers it;
//! [`Initiator`] opens it. Either ends with [`Step::Established`], which says which method
//! was selected for the rest of the connection: plaintext, or RC4 (a [`Cipher`] for each
//! direction, carried on by whoever moves the connection's bytes).
//!
//! The exchange, with A the peer that dials and B the one that answers (`HASH` is SHA-1 of
//! the concatenation, `ENCRYPT` is RC4 with the first 1024 bytes of key stream discarded):
//!
//! ```text
//! A -> B  Ya, PadA (0..=512)
//! B -> A  Yb, PadB (0..=512)
//! A -> B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! B -> A  ENCRYPT(VC, crypto_select, len(PadD), PadD)
//!         then A's and B's streams: plaintext, or ENCRYPT carried on
//! ```
//!
//! `Y = 2^X mod P` (Diffie-Hellman over a 768-bit prime), `S` the shared secret, `SKEY` the
//! info hash, `VC` eight zero bytes. A's stream is keyed `HASH('keyA', S, SKEY)`, B's
//! `HASH('keyB', S, SKEY)`. A finds B's reply by looking for `ENCRYPT(VC)` within PadB; B finds
//! A's request by looking for `HASH('req1', S)` within PadA.
//!
//! Both are sans-IO state machines: the connection feeds them the bytes that arrive and sends
//! what they return. Their private keys come from the caller (the drivers draw them from the
//! operating system's generator; the core's seeded generator never makes keys). Every length
//! they read is bounded, each buffers at most [`MAX_BUFFERED`] bytes before it is
//! established, and no input panics them (see the proptests below and the `mse` fuzz target).

use num_bigint::BigUint;
use sha1::{Digest, Sha1};

use super::InfoHash;

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
/// Length of a private exponent. The specification asks for at least 128 bits; 160 is what
/// most clients use.
pub const SECRET_LEN: usize = 20;
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

/// Where the private keys of encrypted handshakes come from. The core never draws them from
/// its seeded generator, which a simulation replays: a driver hands the session a source,
/// the operating system's CSPRNG for real connections (`crate::entropy::OsKeys`).
pub trait KeySource: Send {
    /// Fills `out` with secret random bytes.
    fn fill(&mut self, out: &mut [u8]);
}

/// Predictable keys from a seeded generator, for the simulator and tests, whose runs must
/// replay. Never for real connections: anyone who knows the seed knows the keys.
#[derive(Debug)]
pub struct SimulatedKeys(super::Rng);

impl SimulatedKeys {
    /// Keys drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> SimulatedKeys {
        SimulatedKeys(super::Rng::new(seed ^ 0x6b65_7973_6b65_7973))
    }
}

impl KeySource for SimulatedKeys {
    fn fill(&mut self, out: &mut [u8]) {
        self.0.fill(out);
    }
}

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
    /// The peer offers only RC4 for the rest of the connection, and we allow only plaintext.
    #[error("peer offers only RC4 stream encryption, and plaintext is all we allow")]
    Rc4Only,
    /// The peer offers only plaintext for the rest of the connection, and we require RC4.
    #[error("peer offers only plaintext, and encryption is required")]
    PlaintextOnly,
    /// The peer offers neither plaintext nor RC4.
    #[error("peer offers no method we know")]
    NoCommonMethod,
    /// The answering peer selected a method we did not offer, or more than one.
    #[error("peer selected a method we did not offer")]
    BadSelect,
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
            MseError::PlaintextOnly => "mse_plaintext_only",
            MseError::BadSelect => "mse_bad_select",
            MseError::NoCommonMethod => "mse_no_common_method",
            MseError::TooMuchData => "mse_too_much_data",
        }
    }
}

/// What a handshake wants after a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do until more bytes arrive.
    NeedMore,
    /// Send these bytes, then wait for more.
    Send(Vec<u8>),
    /// The handshake is done.
    Established {
        /// The torrent (SKEY): the one the initiator asked for.
        info_hash: InfoHash,
        /// Bytes to send first: the responder's reply (and Yb with PadB if they had not gone
        /// out yet); nothing for the initiator.
        send: Vec<u8>,
        /// The start of the peer's BitTorrent stream, decrypted: for the responder the
        /// initiator's IA and every byte received after it, for the initiator every byte
        /// received after the reply.
        plaintext_after: Vec<u8>,
        /// `Some` when RC4 was selected: what encrypts every later byte we send and decrypts
        /// every later byte we receive. `None` for plaintext.
        cipher: Option<Box<Cipher>>,
    },
}

/// The two RC4 streams of an encrypted connection, positioned where the handshake left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cipher {
    /// Encrypts what we send.
    pub send: Rc4,
    /// Decrypts what we receive.
    pub recv: Rc4,
}

/// What a side allows after the handshake: [`CRYPTO_PLAINTEXT`], [`CRYPTO_RC4`] or both.
/// A responder selects plaintext when both sides allow it (it costs nothing), RC4 when that
/// is all the peer offers; an initiator offers what it allows.
pub type Methods = u32;

/// RC4, keyed as MSE uses it (the first 1024 bytes of key stream already discarded).
#[derive(Clone, PartialEq, Eq)]
pub struct Rc4 {
    /// The permutation, each entry a byte held in a `u32`: byte-wide stores into the table
    /// make it about a fifth slower (`benches/mse.rs` measures both tables in one run).
    s: [u32; 256],
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
        let mut s = [0u32; 256];
        for (n, b) in s.iter_mut().enumerate() {
            *b = n as u32;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i] as u8).wrapping_add(key[i % key.len()]);
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
        let (mut i, mut j) = (self.i, self.j);
        let s = &mut self.s;
        for b in data {
            // Indices are `u8`, so every index into the 256-entry table is in bounds and
            // the compiler drops the checks.
            i = i.wrapping_add(1);
            let si = s[i as usize];
            j = j.wrapping_add(si as u8);
            let sj = s[j as usize];
            s[i as usize] = sj;
            s[j as usize] = si;
            *b ^= s[(si.wrapping_add(sj) & 0xff) as usize] as u8;
        }
        (self.i, self.j) = (i, j);
    }

    /// Appends `src`, encrypted or decrypted, to `out`.
    pub fn apply_into(&mut self, src: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(src);
        self.apply(&mut out[start..]);
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
/// bits of the base, so that a fuzzer spends its executions on the parsing around it rather
/// than on 768-bit arithmetic under coverage instrumentation (741 executions a second, against
/// 15,000 this way). Keys still agree (`(g^a)^b = (g^b)^a`) and every check on the keys is
/// the real one.
#[cfg(fuzzing)]
fn mod_pow(base: &BigUint, exponent: &[u8]) -> [u8; KEY_LEN] {
    const P: u128 = u64::MAX as u128 - 58;
    let base = base.iter_u64_digits().next().unwrap_or(0) as u128 % P;
    let mut acc: u128 = 1;
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
enum RespState {
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
        /// The method selected.
        select: Methods,
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
    state: RespState,
    /// Everything received so far (bounded by [`MAX_BUFFERED`]).
    buf: Vec<u8>,
    /// Our private exponent.
    secret: [u8; SECRET_LEN],
    /// PadB.
    pad_b: Vec<u8>,
    /// What we allow after the handshake.
    allow: Methods,
}

impl Responder {
    /// A responder with private exponent `secret` (from a cryptographic generator), sending
    /// `pad_b` (at most [`MAX_PAD`] bytes are used) after Yb, allowing `allow` after the
    /// handshake.
    pub fn new(secret: [u8; SECRET_LEN], mut pad_b: Vec<u8>, allow: Methods) -> Responder {
        pad_b.truncate(MAX_PAD);
        Responder {
            state: RespState::AwaitYa,
            buf: Vec::new(),
            secret,
            pad_b,
            allow,
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
            self.state = RespState::Finished;
            return Err(MseError::TooMuchData);
        }
        self.buf.extend_from_slice(data);
        let mut send = Vec::new();
        let mut torrents = Some(torrents);
        loop {
            match std::mem::replace(&mut self.state, RespState::Finished) {
                RespState::Finished => return Ok(Step::NeedMore),
                RespState::AwaitYa => {
                    if self.buf.len() < KEY_LEN {
                        self.state = RespState::AwaitYa;
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
                    self.state = RespState::AwaitReq1 {
                        secret,
                        req1,
                        scanned: 0,
                    };
                }
                RespState::AwaitReq1 {
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
                        Some(at) => self.state = RespState::AwaitFixed { secret, at },
                        None if scanned > MAX_PAD => return Err(MseError::NoSync),
                        None => {
                            self.state = RespState::AwaitReq1 {
                                secret,
                                req1,
                                scanned,
                            };
                            break;
                        }
                    }
                }
                RespState::AwaitFixed { secret, at } => {
                    if self.buf.len() < at + 20 + FIXED_LEN {
                        self.state = RespState::AwaitFixed { secret, at };
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
                    let select = select(provide, self.allow)?;
                    self.state = RespState::AwaitPayload {
                        select,
                        info_hash,
                        decrypt: Box::new(decrypt),
                        reply: Box::new(reply),
                        at: at + FIXED_LEN,
                        pad_c,
                        ia: None,
                    };
                }
                RespState::AwaitPayload {
                    select,
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
                                self.state = RespState::AwaitPayload {
                                    select,
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
                        self.state = RespState::AwaitPayload {
                            select,
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
                    answer[8..12].copy_from_slice(&select.to_be_bytes());
                    reply.apply(&mut answer);
                    send.extend_from_slice(&answer);
                    let mut plaintext_after = self.buf.split_off(ia_at);
                    self.buf = Vec::new();
                    // After IA the initiator's stream is plaintext, or RC4 carried on.
                    let cipher = (select == CRYPTO_RC4).then(|| {
                        decrypt.apply(&mut plaintext_after[ia_len..]);
                        Box::new(Cipher {
                            send: *reply,
                            recv: *decrypt,
                        })
                    });
                    return Ok(Step::Established {
                        info_hash,
                        send,
                        plaintext_after,
                        cipher,
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

/// The method a responder allowing `allow` selects for an initiator providing `provide`:
/// plaintext when both allow it (it costs nothing), else RC4 when both allow that.
fn select(provide: u32, allow: Methods) -> Result<Methods, MseError> {
    let common = provide & allow;
    if common & CRYPTO_PLAINTEXT != 0 {
        Ok(CRYPTO_PLAINTEXT)
    } else if common & CRYPTO_RC4 != 0 {
        Ok(CRYPTO_RC4)
    } else if provide & CRYPTO_RC4 != 0 {
        Err(MseError::Rc4Only)
    } else if provide & CRYPTO_PLAINTEXT != 0 {
        Err(MseError::PlaintextOnly)
    } else {
        Err(MseError::NoCommonMethod)
    }
}

/// Most bytes an honest responder sends before its reply is complete: Yb, PadB, and the
/// encrypted VC, crypto_select, len(PadD) and PadD.
const MAX_REPLY: usize = KEY_LEN + MAX_PAD + FIXED_LEN + MAX_PAD;

/// Where the initiator is in the exchange.
#[derive(Debug)]
enum InitState {
    /// Ya and PadA sent; waiting for Yb.
    AwaitYb,
    /// Our request sent; looking for ENCRYPT(VC) within PadB. `scanned`: offsets (after Yb)
    /// already ruled out; `vc`: what the encrypted VC looks like.
    AwaitVc {
        streams: Box<Cipher>,
        vc: [u8; 8],
        scanned: usize,
    },
    /// VC found; waiting for crypto_select and len(PadD) at `at`, then PadD.
    AwaitSelect {
        streams: Box<Cipher>,
        at: usize,
        select: Option<(Methods, usize)>,
    },
    /// Established or failed.
    Finished,
}

/// The dialling side of an MSE handshake. Send the bytes [`Initiator::new`] returns first,
/// then feed it every byte the peer sends until it returns [`Step::Established`] or an error.
#[derive(Debug)]
pub struct Initiator {
    state: InitState,
    /// Everything received so far that is still needed (bounded by [`MAX_REPLY`]).
    buf: Vec<u8>,
    secret: [u8; SECRET_LEN],
    skey: InfoHash,
    provide: Methods,
    pad_c: Vec<u8>,
    ia: Vec<u8>,
}

impl Initiator {
    /// An initiator with private exponent `secret` (from a cryptographic generator), asking
    /// for torrent `skey`, offering `provide`, with paddings `pad_a` and `pad_c` (at most
    /// [`MAX_PAD`] bytes of each are used) and initial payload `ia` (at most
    /// [`MAX_IA_LEN`] bytes: usually our BitTorrent handshake). Returns it and what to send
    /// first (Ya and PadA).
    pub fn new(
        secret: [u8; SECRET_LEN],
        skey: InfoHash,
        provide: Methods,
        mut pad_a: Vec<u8>,
        mut pad_c: Vec<u8>,
        mut ia: Vec<u8>,
    ) -> (Initiator, Vec<u8>) {
        pad_a.truncate(MAX_PAD);
        pad_c.truncate(MAX_PAD);
        ia.truncate(MAX_IA_LEN);
        let mut first = mod_pow(&BigUint::from(2u32), &secret).to_vec();
        first.append(&mut pad_a);
        let initiator = Initiator {
            state: InitState::AwaitYb,
            buf: Vec::new(),
            secret,
            skey,
            provide,
            pad_c,
            ia,
        };
        (initiator, first)
    }

    /// Takes `data` from the peer. Returns what to do next, or why the handshake failed;
    /// after an error or [`Step::Established`] the initiator must not be fed again.
    pub fn feed(&mut self, data: &[u8]) -> Result<Step, MseError> {
        self.buf.extend_from_slice(data);
        let mut send = Vec::new();
        loop {
            match std::mem::replace(&mut self.state, InitState::Finished) {
                InitState::Finished => return Ok(Step::NeedMore),
                InitState::AwaitYb => {
                    if self.buf.len() < KEY_LEN {
                        self.state = InitState::AwaitYb;
                        break;
                    }
                    let p = BigUint::from_bytes_be(&PRIME);
                    let yb = BigUint::from_bytes_be(&self.buf[..KEY_LEN]);
                    let one = BigUint::from(1u32);
                    if yb <= one || yb >= &p - &one {
                        return Err(MseError::BadPublicKey);
                    }
                    let s = mod_pow(&yb, &self.secret);
                    let skey = self.skey.as_bytes();
                    send.extend_from_slice(&hash(&[b"req1", &s]));
                    let req2 = hash(&[b"req2", skey]);
                    let req3 = hash(&[b"req3", &s]);
                    send.extend(req2.iter().zip(req3).map(|(a, b)| a ^ b));
                    let mut plain = Vec::with_capacity(FIXED_LEN + self.pad_c.len() + 2);
                    plain.extend_from_slice(&[0u8; 8]);
                    plain.extend_from_slice(&self.provide.to_be_bytes());
                    plain.extend_from_slice(&(self.pad_c.len() as u16).to_be_bytes());
                    plain.append(&mut self.pad_c);
                    plain.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
                    plain.append(&mut self.ia);
                    let mut streams = Box::new(Cipher {
                        send: Rc4::new_mse(&hash(&[b"keyA", &s, skey])),
                        recv: Rc4::new_mse(&hash(&[b"keyB", &s, skey])),
                    });
                    streams.send.apply(&mut plain);
                    send.append(&mut plain);
                    let mut vc = [0u8; 8];
                    streams.recv.clone().apply(&mut vc);
                    self.state = InitState::AwaitVc {
                        streams,
                        vc,
                        scanned: 0,
                    };
                }
                InitState::AwaitVc {
                    mut streams,
                    vc,
                    mut scanned,
                } => {
                    let mut found = None;
                    while scanned <= MAX_PAD && KEY_LEN + scanned + 8 <= self.buf.len() {
                        let at = KEY_LEN + scanned;
                        if self.buf[at..at + 8] == vc {
                            found = Some(at + 8);
                            break;
                        }
                        scanned += 1;
                    }
                    match found {
                        Some(at) => {
                            // The VC itself: eight bytes of B's key stream spent.
                            streams.recv.apply(&mut [0u8; 8]);
                            self.state = InitState::AwaitSelect {
                                streams,
                                at,
                                select: None,
                            };
                        }
                        None if scanned > MAX_PAD => return Err(MseError::NoSync),
                        None => {
                            self.state = InitState::AwaitVc {
                                streams,
                                vc,
                                scanned,
                            };
                            break;
                        }
                    }
                }
                InitState::AwaitSelect {
                    mut streams,
                    at,
                    select,
                } => {
                    let (select, pad_d) = match select {
                        Some(known) => known,
                        None => {
                            if self.buf.len() < at + 6 {
                                self.state = InitState::AwaitSelect {
                                    streams,
                                    at,
                                    select,
                                };
                                break;
                            }
                            let region = &mut self.buf[at..at + 6];
                            streams.recv.apply(region);
                            let select =
                                u32::from_be_bytes([region[0], region[1], region[2], region[3]]);
                            let pad_d = usize::from(u16::from_be_bytes([region[4], region[5]]));
                            let one_method = select == CRYPTO_PLAINTEXT || select == CRYPTO_RC4;
                            if !one_method || select & self.provide == 0 {
                                return Err(MseError::BadSelect);
                            }
                            if pad_d > MAX_PAD {
                                return Err(MseError::PaddingTooLong);
                            }
                            (select, pad_d)
                        }
                    };
                    let end = at + 6 + pad_d;
                    if self.buf.len() < end {
                        self.state = InitState::AwaitSelect {
                            streams,
                            at,
                            select: Some((select, pad_d)),
                        };
                        break;
                    }
                    streams.recv.apply(&mut self.buf[at + 6..end]);
                    let mut plaintext_after = self.buf.split_off(end);
                    self.buf = Vec::new();
                    let cipher = (select == CRYPTO_RC4).then(|| {
                        streams.recv.apply(&mut plaintext_after);
                        streams
                    });
                    return Ok(Step::Established {
                        info_hash: self.skey,
                        send,
                        plaintext_after,
                        cipher,
                    });
                }
            }
        }
        if !matches!(self.state, InitState::Finished) && self.buf.len() > MAX_REPLY {
            self.state = InitState::Finished;
            return Err(MseError::TooMuchData);
        }
        Ok(if send.is_empty() {
            Step::NeedMore
        } else {
            Step::Send(send)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Rng;
    use proptest::prelude::{any, proptest, ProptestConfig};

    const BOTH: Methods = CRYPTO_PLAINTEXT | CRYPTO_RC4;

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

    fn hashes() -> Vec<InfoHash> {
        vec![InfoHash::from_bytes([1; 20]), InfoHash::from_bytes([2; 20])]
    }

    fn secret(seed: u64) -> [u8; SECRET_LEN] {
        let mut s = [0u8; SECRET_LEN];
        Rng::new(seed).fill(&mut s);
        s
    }

    fn initiator(seed: u64, skey: InfoHash, provide: Methods, ia: &[u8]) -> (Initiator, Vec<u8>) {
        let mut rng = Rng::new(seed ^ 0x5555);
        let pad_a = vec![0xAB; rng.index(MAX_PAD + 1)];
        let pad_c = vec![0x5A; rng.index(40)];
        Initiator::new(secret(seed), skey, provide, pad_a, pad_c, ia.to_vec())
    }

    fn responder(seed: u64, allow: Methods) -> Responder {
        let pad_b = vec![0xBB; Rng::new(seed ^ 0xAAAA).index(MAX_PAD + 1)];
        Responder::new(secret(seed.wrapping_add(1)), pad_b, allow)
    }

    /// Both ends of a connection after the handshake.
    #[derive(Debug)]
    struct Ends {
        a: Step,
        b: Step,
    }

    /// Runs a whole exchange over a pipe that delivers `chunk` bytes at a time. `a_after` and
    /// `b_after` are what each side sends right behind its handshake (A's after its IA, B's
    /// after its reply), as plaintext; they are encrypted here when RC4 is selected, as the
    /// connection would.
    fn exchange(
        mut a: Initiator,
        a_first: Vec<u8>,
        mut b: Responder,
        chunk: usize,
        a_after: &[u8],
        b_after: &[u8],
    ) -> Result<Ends, (char, MseError)> {
        let known = hashes();
        let (mut to_b, mut to_a) = (a_first, Vec::<u8>::new());
        let (mut a_done, mut b_done): (Option<Step>, Option<Step>) = (None, None);
        for _ in 0..10_000 {
            if to_b.is_empty() && to_a.is_empty() {
                break;
            }
            if !to_b.is_empty() {
                let n = chunk.min(to_b.len());
                let piece: Vec<u8> = to_b.drain(..n).collect();
                match &mut b_done {
                    Some(Step::Established {
                        plaintext_after,
                        cipher,
                        ..
                    }) => {
                        let mut piece = piece;
                        if let Some(c) = cipher {
                            c.recv.apply(&mut piece);
                        }
                        plaintext_after.extend(piece);
                    }
                    _ => match b.feed(&piece, &known).map_err(|e| ('B', e))? {
                        Step::NeedMore => {}
                        Step::Send(bytes) => to_a.extend(bytes),
                        Step::Established {
                            info_hash,
                            send,
                            plaintext_after,
                            mut cipher,
                        } => {
                            to_a.extend(&send);
                            let mut after = b_after.to_vec();
                            if let Some(c) = &mut cipher {
                                c.send.apply(&mut after);
                            }
                            to_a.extend(after);
                            b_done = Some(Step::Established {
                                info_hash,
                                send,
                                plaintext_after,
                                cipher,
                            });
                        }
                    },
                }
            }
            if !to_a.is_empty() {
                let n = chunk.min(to_a.len());
                let piece: Vec<u8> = to_a.drain(..n).collect();
                match &mut a_done {
                    Some(Step::Established {
                        plaintext_after,
                        cipher,
                        ..
                    }) => {
                        let mut piece = piece;
                        if let Some(c) = cipher {
                            c.recv.apply(&mut piece);
                        }
                        plaintext_after.extend(piece);
                    }
                    _ => match a.feed(&piece).map_err(|e| ('A', e))? {
                        Step::NeedMore => {}
                        Step::Send(bytes) => {
                            to_b.extend(bytes);
                        }
                        Step::Established {
                            info_hash,
                            send,
                            plaintext_after,
                            mut cipher,
                        } => {
                            assert!(send.is_empty(), "the initiator has nothing left to send");
                            let mut after = a_after.to_vec();
                            if let Some(c) = &mut cipher {
                                c.send.apply(&mut after);
                            }
                            to_b.extend(after);
                            a_done = Some(Step::Established {
                                info_hash,
                                send,
                                plaintext_after,
                                cipher,
                            });
                        }
                    },
                }
            }
        }
        match (a_done, b_done) {
            (Some(a), Some(b)) => Ok(Ends { a, b }),
            other => panic!("the exchange stalled: {other:?}"),
        }
    }

    fn parts(step: &Step) -> (InfoHash, &[u8], Option<&Cipher>) {
        match step {
            Step::Established {
                info_hash,
                plaintext_after,
                cipher,
                ..
            } => (*info_hash, plaintext_after, cipher.as_deref()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_roles_agree_on_every_method_in_any_chunking() {
        let skey = InfoHash::from_bytes([2; 20]);
        let ia = b"\x13BitTorrent protocol, the rest of A's handshake";
        for (provide, allow, expect) in [
            (BOTH, BOTH, CRYPTO_PLAINTEXT),
            (CRYPTO_PLAINTEXT, BOTH, CRYPTO_PLAINTEXT),
            (CRYPTO_RC4, BOTH, CRYPTO_RC4),
            (BOTH, CRYPTO_RC4, CRYPTO_RC4),
            (CRYPTO_RC4, CRYPTO_RC4, CRYPTO_RC4),
            (BOTH, CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT),
        ] {
            for (seed, chunk) in [(1, 1), (2, 7), (3, 100), (4, 100_000)] {
                let (a, first) = initiator(seed, skey, provide, ia);
                let ends = exchange(
                    a,
                    first,
                    responder(seed, allow),
                    chunk,
                    b"A then",
                    b"B then",
                )
                .unwrap_or_else(|e| panic!("{provide} {allow}: {e:?}"));
                let (ha, from_b, ca) = parts(&ends.a);
                let (hb, from_a, cb) = parts(&ends.b);
                assert_eq!((ha, hb), (skey, skey));
                assert_eq!(
                    from_a,
                    [&ia[..], b"A then"].concat(),
                    "{provide} {allow} {chunk}"
                );
                assert_eq!(from_b, b"B then", "{provide} {allow} {chunk}");
                assert_eq!(ca.is_some(), expect == CRYPTO_RC4);
                assert_eq!(cb.is_some(), expect == CRYPTO_RC4);
                if let (Some(ca), Some(cb)) = (ca, cb) {
                    // The streams carry on in step: what one encrypts the other decrypts.
                    let (mut ca, mut cb) = (ca.clone(), cb.clone());
                    let mut msg = b"later bytes".to_vec();
                    ca.send.apply(&mut msg);
                    assert_ne!(msg, b"later bytes");
                    cb.recv.apply(&mut msg);
                    assert_eq!(msg, b"later bytes");
                    cb.send.apply(&mut msg);
                    ca.recv.apply(&mut msg);
                    assert_eq!(msg, b"later bytes");
                }
            }
        }
    }

    #[test]
    fn a_method_neither_side_shares_is_refused_with_its_reason() {
        let skey = InfoHash::from_bytes([1; 20]);
        for (provide, allow, error) in [
            (CRYPTO_RC4, CRYPTO_PLAINTEXT, MseError::Rc4Only),
            (CRYPTO_PLAINTEXT, CRYPTO_RC4, MseError::PlaintextOnly),
            (0x10, BOTH, MseError::NoCommonMethod),
        ] {
            let (a, first) = initiator(9, skey, provide, b"x");
            let got = exchange(a, first, responder(9, allow), 10_000, b"", b"");
            assert_eq!(got.map(|_| ()), Err(('B', error)));
        }
    }

    #[test]
    fn an_empty_ia_gives_an_empty_plaintext() {
        let (a, first) = initiator(3, InfoHash::from_bytes([1; 20]), CRYPTO_PLAINTEXT, b"");
        let ends = exchange(a, first, responder(3, BOTH), 10_000, b"", b"").unwrap();
        assert!(parts(&ends.b).1.is_empty());
    }

    /// The responder's whole answer to `a`'s request: (Yb and PadB, the reply).
    fn answer(seed: u64, provide: Methods, allow: Methods) -> (Initiator, Vec<u8>, Vec<u8>) {
        let (mut a, first) = initiator(seed, InfoHash::from_bytes([1; 20]), provide, b"ia");
        let mut b = responder(seed, allow);
        let Ok(Step::Send(yb)) = b.feed(&first, &hashes()) else {
            panic!()
        };
        let Ok(Step::Send(request)) = a.feed(&yb[..KEY_LEN]) else {
            panic!()
        };
        let Ok(Step::Established { send, .. }) = b.feed(&request, &hashes()) else {
            panic!()
        };
        (a, yb[KEY_LEN..].to_vec(), send)
    }

    #[test]
    fn rc4_bytes_pipelined_behind_the_ia_are_decrypted() {
        // An initiator offering RC4 alone knows the method, so it may send on behind its IA
        // before the reply comes; those bytes arrive with the IA and must be decrypted too.
        let known = hashes();
        for chunk in [1, 50, 100_000] {
            let (mut a, first) = initiator(12, InfoHash::from_bytes([2; 20]), CRYPTO_RC4, b"ia");
            let mut b = responder(12, BOTH);
            let Ok(Step::Send(yb)) = b.feed(&first, &known) else {
                panic!()
            };
            let Ok(Step::Send(mut request)) = a.feed(&yb[..KEY_LEN]) else {
                panic!()
            };
            let InitState::AwaitVc { streams, .. } = &a.state else {
                panic!()
            };
            let mut more = b"pipelined".to_vec();
            streams.send.clone().apply(&mut more);
            request.extend(more);
            let mut got = None;
            for piece in request.chunks(chunk) {
                match (&mut got, b.feed(piece, &known)) {
                    (None, Ok(Step::NeedMore)) => {}
                    (
                        None,
                        Ok(Step::Established {
                            plaintext_after,
                            cipher: Some(c),
                            ..
                        }),
                    ) => got = Some((plaintext_after, c)),
                    (Some((plain, c)), _) => {
                        let mut piece = piece.to_vec();
                        c.recv.apply(&mut piece);
                        plain.extend(piece);
                    }
                    (None, other) => panic!("{other:?}"),
                }
            }
            assert_eq!(got.unwrap().0, b"iapipelined", "chunk {chunk}");
        }
    }

    #[test]
    fn the_initiator_refuses_a_reply_it_cannot_trust() {
        // B selects a method A never offered (a bit flipped in the encrypted select).
        let (mut a, pad_b, mut reply) = answer(4, CRYPTO_PLAINTEXT, BOTH);
        reply[11] ^= (CRYPTO_PLAINTEXT ^ CRYPTO_RC4) as u8;
        assert_eq!(a.feed(&[pad_b, reply].concat()), Err(MseError::BadSelect));
        // PadD longer than the specification allows.
        let (mut a, pad_b, mut reply) = answer(5, BOTH, BOTH);
        reply[12] ^= 0x80;
        assert_eq!(
            a.feed(&[pad_b, reply].concat()),
            Err(MseError::PaddingTooLong)
        );
        // No encrypted VC within PadB's 512 bytes.
        let (mut a, _, _) = answer(6, BOTH, BOTH);
        assert_eq!(a.feed(&[0x42; MAX_PAD + 8]), Err(MseError::NoSync));
        // A degenerate Yb.
        let (mut a, _) = initiator(7, InfoHash::from_bytes([1; 20]), BOTH, b"");
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        assert_eq!(a.feed(&one), Err(MseError::BadPublicKey));
        let (mut a, _) = initiator(7, InfoHash::from_bytes([1; 20]), BOTH, b"");
        assert_eq!(a.feed(&PRIME), Err(MseError::BadPublicKey));
        // A truncated reply leaves it waiting, never established.
        let (mut a, pad_b, reply) = answer(8, BOTH, BOTH);
        assert_eq!(a.feed(&pad_b), Ok(Step::NeedMore));
        assert_eq!(a.feed(&reply[..13]), Ok(Step::NeedMore));
    }

    #[test]
    fn the_responder_refuses_a_request_it_cannot_trust() {
        let known = hashes();
        // A wrong VC (a bit flipped in the encrypted VC) and a torrent we do not serve.
        let (mut a, first) = initiator(5, InfoHash::from_bytes([1; 20]), BOTH, b"x");
        let mut b = responder(5, BOTH);
        let Ok(Step::Send(yb)) = b.feed(&first, &known) else {
            panic!()
        };
        let Ok(Step::Send(mut request)) = a.feed(&yb[..KEY_LEN]) else {
            panic!()
        };
        request[40] ^= 1;
        assert_eq!(
            b.feed(&request, &known),
            Err(MseError::BadVerificationConstant)
        );
        let (a, first) = initiator(6, InfoHash::from_bytes([7; 20]), BOTH, b"x");
        assert_eq!(
            exchange(a, first, responder(6, BOTH), 33, b"", b"").map(|_| ()),
            Err(('B', MseError::UnknownTorrent))
        );
        // Garbage finds no sync; degenerate keys and floods are refused.
        let mut b = responder(1, BOTH);
        let mut garbage = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n".to_vec();
        garbage.resize(KEY_LEN + MAX_PAD + 20, b'x');
        assert!(matches!(b.feed(&garbage, &known), Err(MseError::NoSync)));
        let mut one = [0u8; KEY_LEN];
        one[KEY_LEN - 1] = 1;
        assert_eq!(
            responder(1, BOTH).feed(&one, &known),
            Err(MseError::BadPublicKey)
        );
        assert_eq!(
            responder(1, BOTH).feed(&PRIME, &known),
            Err(MseError::BadPublicKey)
        );
        assert_eq!(
            responder(1, BOTH).feed(&vec![0x42; MAX_BUFFERED + 1], &known),
            Err(MseError::TooMuchData)
        );
    }

    #[test]
    fn same_keys_same_bytes() {
        let run = |seed| {
            let (_, first) = initiator(8, InfoHash::from_bytes([1; 20]), BOTH, b"");
            responder(seed, BOTH).feed(&first, &hashes())
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_never_panic_either_side(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..400), 0..6),
            seed in any::<u64>(),
        ) {
            let known = hashes();
            let mut b = responder(seed, BOTH);
            let (mut a, _) = initiator(seed, InfoHash::from_bytes([1; 20]), BOTH, b"ia");
            let (mut b_on, mut a_on) = (true, true);
            for c in &chunks {
                if b_on {
                    b_on = matches!(b.feed(c, &known), Ok(Step::NeedMore | Step::Send(_)));
                }
                if a_on {
                    a_on = matches!(a.feed(c), Ok(Step::NeedMore | Step::Send(_)));
                }
            }
        }

        #[test]
        fn corrupted_handshakes_never_panic(flip in 0usize..1200, seed in any::<u64>()) {
            let known = hashes();
            let (mut a, first) = initiator(seed, InfoHash::from_bytes([1; 20]), BOTH, b"\x13BitTorrent protocol");
            let mut b = responder(seed, CRYPTO_RC4);
            let Ok(Step::Send(mut yb)) = b.feed(&first, &known) else { return Ok(()) };
            let Ok(Step::Send(mut request)) = a.feed(&yb[..KEY_LEN]) else { return Ok(()) };
            let at = flip % request.len();
            request[at] ^= 0x40;
            let reply = b.feed(&request, &known);
            if let Ok(Step::Established { send, .. }) = reply {
                yb.drain(..KEY_LEN);
                yb.extend(send);
                let at = flip % yb.len();
                yb[at] ^= 0x40;
                let _ = a.feed(&yb);
            }
        }
    }
}
