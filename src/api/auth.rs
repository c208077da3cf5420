//! Who may use the API: a user name with a password (stored only as an argon2id hash) who
//! logs in for a session cookie, and API keys for scripts (stored only as their SHA-256).
//!
//! - **Passwords**: [`hash_password`] makes the PHC string the config holds
//!   (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, OWASP's parameters); a login verifies it on
//!   a blocking thread, at most [`MAX_VERIFYING`] at once (19 MiB each), and a wrong user
//!   name costs the same hash as a wrong password.
//! - **Sessions**: a login sets the cookie [`SESSION_COOKIE`] to 256 random bits (`HttpOnly`,
//!   `SameSite=Strict`, `Path=/`); the server keeps only each token's SHA-256, so a lookup
//!   reveals nothing through its timing. A session ends after `session_ttl` unused, at
//!   logout, or when [`MAX_SESSIONS`] newer ones push it out.
//! - **API keys** ([`new_api_key`]): `Authorization: Bearer rtk_...`; compared in constant
//!   time against every configured hash. A login may also give a key (`api_key=...`) for a
//!   session cookie, so a browser can sign in where only keys are configured; such a session
//!   ends when its key is removed.
//! - **Failed logins** are bounded per address (an IPv6 /64 counts as one) and overall, in a
//!   table of at most [`MAX_TRACKED_ADDRESSES`] entries: past the bound a login is refused
//!   with 429 before any hashing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hyper::header::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::guard::Refusal;
use super::parse::{bearer, cookie, Credentials, Login};

/// The session cookie's name (qBittorrent's).
pub const SESSION_COOKIE: &str = "SID";

/// Sessions held at once; a login past this ends the session closest to expiry.
pub const MAX_SESSIONS: usize = 64;

/// Password verifications running at once (each holds 19 MiB for about 50 ms); a login past
/// this is answered 503.
pub const MAX_VERIFYING: usize = 2;

/// Failed logins allowed from one address (IPv6: one /64) per [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: u32 = 5;

/// Failed logins allowed from all addresses together per [`FAILURE_WINDOW`]: rotating
/// addresses buys no more guesses than this.
pub const MAX_FAILURES: u32 = 30;

/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses whose failed logins are remembered; when full, the oldest entry goes.
pub const MAX_TRACKED_ADDRESSES: usize = 1024;

/// The longest user name and password a login may send (longer ones fail without hashing).
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// The prefix of API keys, so a leaked one is recognisable.
pub const API_KEY_PREFIX: &str = "rtk_";

/// The prefix of an API key's hash in the config.
pub const API_KEY_HASH_PREFIX: &str = "sha256:";

/// `N` bytes from the kernel's CSPRNG (`getrandom`); an error where there is none, never a
/// weaker source.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    crate::entropy::fill(&mut buf)?;
    Ok(buf)
}

fn to_hex(bytes: &[u8]) -> String {
    crate::core::hex::encode(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn argon2() -> argon2::Argon2<'static> {
    // OWASP's first choice: 19 MiB, two passes, one lane.
    let params = argon2::Params::new(19 * 1024, 2, 1, None).expect("valid parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// The argon2id hash of `password` with a fresh random salt, as a PHC string for the
/// config's `api_password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = random_bytes::<16>().map_err(|e| format!("no random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks that `phc` is an argon2id hash string; `Err` says what is wrong.
pub fn check_password_hash(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc)
        .map_err(|e| format!("not a password hash (ringtorrent config hash-password): {e}"))?;
    if h.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("{} hash: expected argon2id", h.algorithm));
    }
    argon2::Params::try_from(&h).map_err(|e| format!("bad argon2id parameters: {e}"))?;
    if h.hash.is_none() {
        return Err("the hash string has no hash".into());
    }
    Ok(())
}

/// Whether `password` matches the argon2id hash `phc` (false for a malformed hash). Slow on
/// purpose: call it off the event loop.
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new API key and the hash the config holds for it.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key, for the script (`Authorization: Bearer KEY`): shown once, stored nowhere.
    pub key: String,
    /// Its hash, for the config's `api_keys`.
    pub hash: String,
}

/// Makes a new API key: 256 random bits.
pub fn new_api_key() -> std::io::Result<NewApiKey> {
    let key = format!("{API_KEY_PREFIX}{}", to_hex(&random_bytes::<32>()?));
    let hash = api_key_hash(&key);
    Ok(NewApiKey { key, hash })
}

/// The config form of an API key's hash: `sha256:` and 64 hex digits.
pub fn api_key_hash(key: &str) -> String {
    format!("{API_KEY_HASH_PREFIX}{}", to_hex(&sha256(key.as_bytes())))
}

/// The digest in an `api_keys` entry; `Err` when it is not `sha256:` and 64 hex digits.
pub fn parse_api_key_hash(entry: &str) -> Result<[u8; 32], String> {
    entry
        .strip_prefix(API_KEY_HASH_PREFIX)
        .and_then(crate::core::hex::decode::<32>)
        .ok_or_else(|| {
            format!(
                "api_keys: `{entry}` is not sha256:<64 hex digits> (ringtorrent config api-key)"
            )
        })
}

/// What [`Auth`] is built from.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The user name that logs in ("" for none).
    pub username: String,
    /// Its argon2id hash ([`hash_password`]; "" for none).
    pub password_hash: String,
    /// API keys' hashes ([`api_key_hash`]).
    pub api_keys: Vec<String>,
    /// How long an unused session lasts.
    pub session_ttl: Duration,
}

/// How a request was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// No credentials are configured: the API is open (and only on loopback).
    Open,
    /// A session cookie from a login.
    Session,
    /// An API key.
    ApiKey,
}

impl Principal {
    /// Its name in the API's answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Principal::Open => "open",
            Principal::Session => "session",
            Principal::ApiKey => "api_key",
        }
    }
}

/// The answer of `auth/status`: see [`Auth::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStatus {
    /// Credentials are configured, so requests need them.
    pub required: bool,
    /// A user name and password can log in.
    pub password: bool,
    /// API keys are configured (and can log in for a session too).
    pub api_key: bool,
    /// How this request is let in, if it is.
    pub signed_in: Option<Principal>,
}

impl AuthStatus {
    /// As `auth/status` answers it: `{"required", "password", "api_key", "signed_in"}`, the
    /// last one `"open"`, `"session"`, `"api_key"` or `null`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "required": self.required,
            "password": self.password,
            "api_key": self.api_key,
            "signed_in": self.signed_in.map(Principal::as_str),
        })
    }
}

/// The credentials, the sessions and the failed-login counters.
#[derive(Debug)]
pub struct Auth {
    creds: std::sync::RwLock<Creds>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<Limiter>,
    verifying: Arc<tokio::sync::Semaphore>,
}

/// What [`AuthConfig`] gives, checked: what [`Auth::reconfigure`] swaps.
#[derive(Debug, Clone, PartialEq)]
struct Creds {
    username: Option<[u8; 32]>,
    password_hash: Option<String>,
    keys: Vec<[u8; 32]>,
    ttl: Duration,
}

impl Creds {
    fn new(config: AuthConfig) -> Result<Creds, String> {
        let AuthConfig {
            username,
            password_hash,
            api_keys,
            session_ttl,
        } = config;
        match (username.is_empty(), password_hash.is_empty()) {
            (false, true) => {
                return Err(
                    "api_username is set without api_password_hash (or --api-password)".into(),
                )
            }
            (true, false) => return Err("api_password_hash is set without api_username".into()),
            _ => {}
        }
        if !password_hash.is_empty() {
            check_password_hash(&password_hash).map_err(|e| format!("api_password_hash: {e}"))?;
        }
        let keys = api_keys
            .iter()
            .map(|k| parse_api_key_hash(k))
            .collect::<Result<Vec<_>, _>>()?;
        if session_ttl.is_zero() {
            return Err("api_session_timeout must be at least 1 second".into());
        }
        Ok(Creds {
            username: (!username.is_empty()).then(|| sha256(username.as_bytes())),
            password_hash: (!password_hash.is_empty()).then_some(password_hash),
            keys,
            ttl: session_ttl,
        })
    }
}

impl Auth {
    /// Checks and takes `config`: a user name and a password hash come together; every hash
    /// must parse. `Err` names the key at fault.
    pub fn new(config: AuthConfig) -> Result<Auth, String> {
        Ok(Auth {
            creds: std::sync::RwLock::new(Creds::new(config)?),
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(Limiter::default()),
            verifying: Arc::new(tokio::sync::Semaphore::new(MAX_VERIFYING)),
        })
    }

    /// Takes new credentials while running (`serve`'s reload), checked as [`Auth::new`]
    /// checks them; on `Err` the current ones stay. When the user name or the password
    /// changes, every login session ends (a session proves the old password). Returns
    /// whether anything changed.
    pub fn reconfigure(&self, config: AuthConfig) -> Result<bool, String> {
        let new = Creds::new(config)?;
        let mut creds = self.creds.write().unwrap_or_else(|e| e.into_inner());
        if *creds == new {
            return Ok(false);
        }
        let login_changed =
            creds.username != new.username || creds.password_hash != new.password_hash;
        let keys = new.keys.clone();
        *creds = new;
        drop(creds);
        // A session lasts only as long as what it was opened with.
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .retain(|_, s| match s.key {
                None => !login_changed,
                Some(k) => keys.contains(&k),
            });
        Ok(true)
    }

    fn creds(&self) -> std::sync::RwLockReadGuard<'_, Creds> {
        self.creds.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether requests need credentials (some are configured).
    pub fn required(&self) -> bool {
        let creds = self.creds();
        creds.password_hash.is_some() || !creds.keys.is_empty()
    }

    /// Whether a user name and password are configured (a password login can succeed).
    pub fn can_log_in(&self) -> bool {
        self.creds().password_hash.is_some()
    }

    /// What a login page needs to know: which ways in are configured, and whether the
    /// request (its cookie or key) is already in. Reveals nothing a refused request does not.
    pub fn status(&self, headers: &HeaderMap) -> AuthStatus {
        let (password, api_key) = {
            let creds = self.creds();
            (creds.password_hash.is_some(), !creds.keys.is_empty())
        };
        AuthStatus {
            required: password || api_key,
            password,
            api_key,
            signed_in: self.authenticate(headers).ok(),
        }
    }

    /// Lets a request in by its API key (`Authorization: Bearer`) or its session cookie, or
    /// refuses it with 401; anything goes when no credentials are configured.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Refusal> {
        if !self.required() {
            return Ok(Principal::Open);
        }
        if let Some(key) = bearer(headers) {
            let digest = sha256(key.as_bytes());
            // Every configured key compared, in constant time.
            let known = self
                .creds()
                .keys
                .iter()
                .fold(subtle::Choice::from(0), |any, k| any | k.ct_eq(&digest));
            return if bool::from(known) {
                Ok(Principal::ApiKey)
            } else {
                Err(Refusal::new(401, "unknown API key"))
            };
        }
        if let Some(token) = cookie(headers, SESSION_COOKIE) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let ttl = self.creds().ttl;
            return if sessions.touch(token, Instant::now(), ttl) {
                Ok(Principal::Session)
            } else {
                Err(Refusal::new(
                    401,
                    "the session expired or is unknown: log in again",
                ))
            };
        }
        Err(Refusal::new(
            401,
            "authentication required: log in with POST /auth/login (username, password) or \
             send Authorization: Bearer KEY",
        ))
    }

    /// Checks a login from `peer` (a user name with its password, or an API key); on
    /// success returns the `Set-Cookie` value of a new session (`Secure` too when `secure`:
    /// the client reached us over TLS, through a proxy). Refusals: 401 (wrong user name,
    /// password or key), 429 (too many failures, with the seconds to wait), 503 (too many
    /// logins being checked), 404 (that way in is not configured). Runs the password hash on
    /// tokio's blocking pool: call it on a tokio runtime.
    pub async fn login(
        &self,
        peer: IpAddr,
        login: Login,
        secure: bool,
    ) -> Result<HeaderValue, Refusal> {
        let (ttl, key) = match login {
            Login::Password(creds) => (self.check_password(peer, creds).await?, None),
            Login::ApiKey(key) => {
                let (ttl, digest) = self.check_key(peer, &key)?;
                (ttl, Some(digest))
            }
        };
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .succeeded(peer);
        let token = to_hex(
            &random_bytes::<32>()
                .map_err(|e| Refusal::new(500, format!("no random session token: {e}")))?,
        );
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(&token, Instant::now(), ttl, key);
        let cookie = format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).map_err(|e| Refusal::new(500, e.to_string()))
    }

    /// Counts a failed login from `peer` and returns `r`.
    fn failed(&self, peer: IpAddr, r: Refusal) -> Refusal {
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed(peer, Instant::now());
        r
    }

    /// A password login: `Ok` with the session's lifetime.
    async fn check_password(&self, peer: IpAddr, creds: Credentials) -> Result<Duration, Refusal> {
        let (username, ttl, hash) = {
            let creds = self.creds();
            (creds.username, creds.ttl, creds.password_hash.clone())
        };
        let Some(hash) = hash else {
            return Err(Refusal::new(
                404,
                "no user name and password are configured",
            ));
        };
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(peer, Instant::now())?;
        let wrong = || Refusal::new(401, "wrong user name or password");
        if creds.username.len() > MAX_CREDENTIAL_LEN || creds.password.len() > MAX_CREDENTIAL_LEN {
            return Err(self.failed(peer, wrong()));
        }
        let Ok(_permit) = self.verifying.clone().try_acquire_owned() else {
            return Err(Refusal::new(503, "too many logins at once: try again"));
        };
        let user_ok =
            username.is_some_and(|u| bool::from(u.ct_eq(&sha256(creds.username.as_bytes()))));
        let password = creds.password;
        let checked = hash.clone();
        let pass_ok = tokio::task::spawn_blocking(move || verify_password(&checked, &password))
            .await
            .unwrap_or(false);
        if !(user_ok && pass_ok) {
            return Err(self.failed(peer, wrong()));
        }
        // A reload may have changed the password while this one was being checked.
        if self.creds().password_hash.as_ref() != Some(&hash) {
            return Err(wrong());
        }
        Ok(ttl)
    }

    /// An API key login: `Ok` with the session's lifetime and the key's digest. Failures
    /// count as a wrong password does: guessing keys through the login is no cheaper.
    fn check_key(&self, peer: IpAddr, key: &str) -> Result<(Duration, [u8; 32]), Refusal> {
        if self.creds().keys.is_empty() {
            return Err(Refusal::new(404, "no API keys are configured"));
        }
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(peer, Instant::now())?;
        let digest = sha256(key.as_bytes());
        let creds = self.creds();
        let known = creds
            .keys
            .iter()
            .fold(subtle::Choice::from(0), |any, k| any | k.ct_eq(&digest));
        let ttl = creds.ttl;
        drop(creds);
        if key.len() > MAX_CREDENTIAL_LEN || !bool::from(known) {
            return Err(self.failed(peer, Refusal::new(401, "unknown API key")));
        }
        Ok((ttl, digest))
    }

    /// Ends the session of the request's cookie (if any) and returns the `Set-Cookie` value
    /// that clears it.
    pub fn logout(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(token) = cookie(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(token);
        }
        HeaderValue::from_static("SID=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    }

    /// Sessions held now (expired ones not counted).
    pub fn session_count(&self) -> usize {
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.map.values().filter(|s| s.expires > now).count()
    }
}

/// One live session: when it expires, and the digest of the API key it was opened with
/// (`None`: the password).
#[derive(Debug, Clone, Copy)]
struct Session {
    expires: Instant,
    key: Option<[u8; 32]>,
}

/// Live sessions by their token's SHA-256.
#[derive(Debug, Default)]
struct Sessions {
    map: HashMap<[u8; 32], Session>,
}

impl Sessions {
    fn insert(&mut self, token: &str, now: Instant, ttl: Duration, key: Option<[u8; 32]>) {
        self.map.retain(|_, s| s.expires > now);
        if self.map.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(
            sha256(token.as_bytes()),
            Session {
                expires: now + ttl,
                key,
            },
        );
    }

    /// Whether `token` is a live session; if so, its expiry moves to `now + ttl`.
    fn touch(&mut self, token: &str, now: Instant, ttl: Duration) -> bool {
        let key = sha256(token.as_bytes());
        match self.map.get_mut(&key) {
            Some(s) if s.expires > now => {
                s.expires = now + ttl;
                true
            }
            Some(_) => {
                self.map.remove(&key);
                false
            }
            None => false,
        }
    }

    fn remove(&mut self, token: &str) {
        self.map.remove(&sha256(token.as_bytes()));
    }
}

/// An address as failed logins count it: IPv4 whole, IPv6 by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a.into()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.into()),
                None => Source::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// Failed logins in the current window, per address and overall.
#[derive(Debug, Default)]
struct Limiter {
    /// Failures and when its window started, per address.
    per_source: HashMap<Source, (u32, Instant)>,
    /// All failures in the window that started at the instant.
    all: Option<(u32, Instant)>,
}

impl Limiter {
    /// `Ok` when `peer` may try; else 429 with the seconds to wait.
    fn check(&mut self, peer: IpAddr, now: Instant) -> Result<(), Refusal> {
        let busy = |since: Instant| {
            let wait = FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(since));
            Refusal::new(
                429,
                format!(
                    "too many failed logins: try again in {} s",
                    wait.as_secs().max(1)
                ),
            )
        };
        if let Some((n, since)) = self.all {
            if now.saturating_duration_since(since) < FAILURE_WINDOW && n >= MAX_FAILURES {
                return Err(busy(since));
            }
        }
        if let Some(&(n, since)) = self.per_source.get(&peer.into()) {
            if now.saturating_duration_since(since) < FAILURE_WINDOW
                && n >= MAX_FAILURES_PER_ADDRESS
            {
                return Err(busy(since));
            }
        }
        Ok(())
    }

    fn failed(&mut self, peer: IpAddr, now: Instant) {
        let fresh = |e: &(u32, Instant)| now.saturating_duration_since(e.1) < FAILURE_WINDOW;
        self.all = Some(match self.all {
            Some((n, since)) if fresh(&(n, since)) => (n + 1, since),
            _ => (1, now),
        });
        let source = Source::from(peer);
        if !self.per_source.contains_key(&source) && self.per_source.len() >= MAX_TRACKED_ADDRESSES
        {
            self.per_source.retain(|_, e| fresh(e));
            if self.per_source.len() >= MAX_TRACKED_ADDRESSES {
                if let Some(oldest) = self
                    .per_source
                    .iter()
                    .min_by_key(|(_, e)| e.1)
                    .map(|(k, _)| *k)
                {
                    self.per_source.remove(&oldest);
                }
            }
        }
        let entry = self.per_source.entry(source).or_insert((0, now));
        if !fresh(entry) {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    fn succeeded(&mut self, peer: IpAddr) {
        self.per_source.remove(&peer.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{AUTHORIZATION, COOKIE};

    fn auth(keys: Vec<String>) -> Auth {
        Auth::new(AuthConfig {
            username: "admin".into(),
            password_hash: hash_password("secret").unwrap(),
            api_keys: keys,
            session_ttl: Duration::from_secs(60),
        })
        .unwrap()
    }

    fn creds(u: &str, p: &str) -> Login {
        Login::Password(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn password_hashes_are_salted_argon2id_and_verify() {
        let a = hash_password("secret").unwrap();
        let b = hash_password("secret").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(!a.contains("secret"));
        check_password_hash(&a).unwrap();
        assert!(verify_password(&a, "secret"));
        assert!(!verify_password(&a, "Secret"));
        assert!(!verify_password("garbage", "secret"));
        assert!(check_password_hash("secret").is_err());
        assert!(check_password_hash(
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
        )
        .is_err());
    }

    #[test]
    fn api_keys_are_random_and_stored_as_hashes() {
        let k = new_api_key().unwrap();
        assert!(k.key.starts_with(API_KEY_PREFIX) && k.key.len() == 4 + 64);
        assert_ne!(k.key, new_api_key().unwrap().key);
        assert_eq!(
            parse_api_key_hash(&k.hash).unwrap(),
            sha256(k.key.as_bytes())
        );
        assert!(parse_api_key_hash("sha256:xyz").is_err());
        let a = auth(vec![k.hash.clone()]);
        let mut h = HeaderMap::new();
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        h.insert(AUTHORIZATION, format!("Bearer {}", k.key).parse().unwrap());
        assert_eq!(a.authenticate(&h), Ok(Principal::ApiKey));
        h.insert(AUTHORIZATION, format!("Bearer {}x", k.key).parse().unwrap());
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        h.insert(AUTHORIZATION, k.hash.parse().unwrap());
        assert_eq!(
            a.authenticate(&h).unwrap_err().status,
            401,
            "the hash is no key"
        );
    }

    #[test]
    fn configs_that_make_no_sense_are_refused() {
        let ttl = Duration::from_secs(1);
        let bad = [
            ("admin", "", vec![]),
            ("", "$argon2id$...", vec![]),
            ("admin", "plain text", vec![]),
            ("", "", vec!["abc".to_string()]),
        ];
        for (u, p, k) in bad {
            let c = AuthConfig {
                username: u.into(),
                password_hash: p.into(),
                api_keys: k,
                session_ttl: ttl,
            };
            assert!(Auth::new(c).is_err(), "{u} {p}");
        }
        let open = Auth::new(AuthConfig {
            session_ttl: ttl,
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(!open.required());
        assert_eq!(open.authenticate(&HeaderMap::new()), Ok(Principal::Open));
    }

    #[test]
    fn a_login_sets_a_session_cookie_and_logout_ends_it() {
        let a = auth(vec![]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let secure = block_on(a.login(peer, creds("admin", "secret"), true)).unwrap();
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
        let cookie = block_on(a.login(peer, creds("admin", "secret"), false)).unwrap();
        let cookie = cookie.to_str().unwrap();
        assert!(!cookie.contains("Secure"));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(cookie.contains(attr), "{cookie}");
        }
        let sid = cookie.split(';').next().unwrap();
        assert_eq!(sid.len(), "SID=".len() + 64, "256 bits");
        let mut h = HeaderMap::new();
        h.insert(COOKIE, sid.parse().unwrap());
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        assert_eq!(a.session_count(), 2);
        let cleared = a.logout(&h);
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        h.insert(COOKIE, "SID=00".parse().unwrap());
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        // Wrong user or password: 401, no cookie.
        for (u, p) in [("admin", "Secret"), ("root", "secret"), ("", "")] {
            let r = block_on(a.login(peer, creds(u, p), false));
            assert_eq!(r.unwrap_err().status, 401, "{u}");
        }
    }

    fn cookie_of(v: &HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        let pair = v.to_str().unwrap().split(';').next().unwrap().to_owned();
        h.insert(COOKIE, pair.parse().unwrap());
        h
    }

    #[test]
    fn an_api_key_logs_in_for_a_session_that_ends_with_the_key() {
        let key = new_api_key().unwrap();
        let other = new_api_key().unwrap();
        let only_keys = |keys: Vec<String>| AuthConfig {
            api_keys: keys,
            session_ttl: Duration::from_secs(60),
            ..AuthConfig::default()
        };
        let a = Auth::new(only_keys(vec![key.hash.clone(), other.hash.clone()])).unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let nobody = HeaderMap::new();
        let st = a.status(&nobody);
        assert_eq!(
            (st.required, st.password, st.api_key, st.signed_in),
            (true, false, true, None)
        );
        // No password is configured: a password login is not a way in.
        let r = block_on(a.login(peer, creds("admin", "x"), false));
        assert_eq!(r.unwrap_err().status, 404);
        let wrong = block_on(a.login(peer, Login::ApiKey(format!("{}x", key.key)), false));
        assert_eq!(wrong.unwrap_err().status, 401);
        let cookie = block_on(a.login(peer, Login::ApiKey(key.key.clone()), false)).unwrap();
        let h = cookie_of(&cookie);
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        assert_eq!(a.status(&h).signed_in, Some(Principal::Session));
        // Removing another key leaves this session; removing its key ends it.
        assert_eq!(a.reconfigure(only_keys(vec![key.hash.clone()])), Ok(true));
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        assert_eq!(a.reconfigure(only_keys(vec![other.hash.clone()])), Ok(true));
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        // Failed key logins count towards the same limit as wrong passwords.
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            let r = block_on(a.login(peer, Login::ApiKey("rtk_guess".into()), false));
            assert_eq!(r.unwrap_err().status, 401);
        }
        let r = block_on(a.login(peer, Login::ApiKey(other.key.clone()), false));
        assert_eq!(
            r.unwrap_err().status,
            429,
            "limited even with the right key"
        );
        // Without credentials the status says the API is open.
        let open = Auth::new(only_keys(vec![])).unwrap();
        let st = open.status(&nobody);
        assert_eq!(
            (st.required, st.password, st.api_key, st.signed_in),
            (false, false, false, Some(Principal::Open))
        );
    }

    #[test]
    fn reconfigure_swaps_credentials_and_refuses_bad_ones() {
        let a = auth(vec![]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let cookie = block_on(a.login(peer, creds("admin", "secret"), false)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            cookie
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .parse()
                .unwrap(),
        );
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        let same = AuthConfig {
            username: "admin".into(),
            password_hash: a.creds().password_hash.clone().unwrap(),
            api_keys: vec![],
            session_ttl: Duration::from_secs(60),
        };
        // Nothing changed: the session lives on.
        assert_eq!(a.reconfigure(same.clone()), Ok(false));
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        // A bad config changes nothing.
        let bad = AuthConfig {
            password_hash: "not a hash".into(),
            ..same.clone()
        };
        assert!(a.reconfigure(bad).is_err());
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        // A new key is accepted at once; the login is untouched, so is the session.
        let key = new_api_key().unwrap();
        let with_key = AuthConfig {
            api_keys: vec![key.hash.clone()],
            ..same.clone()
        };
        assert_eq!(a.reconfigure(with_key), Ok(true));
        assert_eq!(a.authenticate(&h), Ok(Principal::Session));
        let mut k = HeaderMap::new();
        k.insert(
            AUTHORIZATION,
            format!("Bearer {}", key.key).parse().unwrap(),
        );
        assert_eq!(a.authenticate(&k), Ok(Principal::ApiKey));
        // A new password ends every session, and the old password no longer logs in.
        let new_password = AuthConfig {
            password_hash: hash_password("other").unwrap(),
            ..same
        };
        assert_eq!(a.reconfigure(new_password), Ok(true));
        assert_eq!(a.authenticate(&h).unwrap_err().status, 401);
        let r = block_on(a.login(peer, creds("admin", "secret"), false));
        assert_eq!(r.unwrap_err().status, 401);
        assert!(block_on(a.login(peer, creds("admin", "other"), false)).is_ok());
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let mut s = Sessions::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        s.insert("a", t0, ttl, None);
        assert!(s.touch("a", t0 + Duration::from_secs(9), ttl));
        assert!(
            s.touch("a", t0 + Duration::from_secs(18), ttl),
            "use extends it"
        );
        assert!(!s.touch("a", t0 + Duration::from_secs(29), ttl));
        assert!(s.map.is_empty(), "an expired session is forgotten");
        for i in 0..MAX_SESSIONS + 10 {
            s.insert(
                &i.to_string(),
                t0 + Duration::from_millis(i as u64),
                ttl,
                None,
            );
        }
        assert_eq!(s.map.len(), MAX_SESSIONS);
        assert!(!s.touch("0", t0, ttl), "the oldest went first");
        assert!(s.touch(&(MAX_SESSIONS + 9).to_string(), t0, ttl));
    }

    #[test]
    fn failed_logins_are_limited_per_address_and_overall_in_a_bounded_table() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            assert!(l.check(a, t0).is_ok());
            l.failed(a, t0);
        }
        let r = l.check(a, t0).unwrap_err();
        assert_eq!(r.status, 429);
        assert!(r.message.contains("60 s"), "{}", r.message);
        assert!(
            l.check("10.0.0.2".parse().unwrap(), t0).is_ok(),
            "others may"
        );
        assert!(l.check(a, t0 + FAILURE_WINDOW).is_ok(), "a new window");
        // One /64 is one source.
        let v6 = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i));
        let mut l = Limiter::default();
        for i in 0..MAX_FAILURES_PER_ADDRESS as u16 {
            l.failed(v6(i), t0);
        }
        assert_eq!(l.check(v6(999), t0).unwrap_err().status, 429);
        // Rotating addresses: the overall bound, and the table stays bounded.
        let mut l = Limiter::default();
        for i in 0..5000u32 {
            l.failed(IpAddr::V4(i.into()), t0);
        }
        assert!(l.per_source.len() <= MAX_TRACKED_ADDRESSES);
        let fresh: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(l.check(fresh, t0).unwrap_err().status, 429);
        assert!(l.check(fresh, t0 + FAILURE_WINDOW).is_ok());
        l.succeeded(fresh);
    }

    #[test]
    fn logins_are_refused_while_limited_without_hashing() {
        let a = auth(vec![]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES_PER_ADDRESS {
            let r = block_on(a.login(peer, creds("admin", "nope"), false));
            assert_eq!(r.unwrap_err().status, 401);
        }
        let r = block_on(a.login(peer, creds("admin", "secret"), false));
        assert_eq!(
            r.unwrap_err().status,
            429,
            "even the right password, for now"
        );
        let long = "x".repeat(MAX_CREDENTIAL_LEN + 1);
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            block_on(a.login(other, creds("admin", &long), false))
                .unwrap_err()
                .status,
            401
        );
    }
}
