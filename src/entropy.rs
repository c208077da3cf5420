//! The operating system's cryptographic generator (`getrandom(2)`): the only source of secret
//! material in the process. The protocol core draws none itself (it is deterministic); the
//! drivers hand it an [`OsKeys`] for the private keys of encrypted handshakes, and the API
//! draws session ids, salts and API keys here.

use std::io;

use crate::core::mse::KeySource;

/// Fills `buf` from the kernel's CSPRNG; an error where there is none, never a weaker source.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, the unfilled tail of `buf`, valid
        // for writes for the whole call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Private Diffie-Hellman keys for MSE/PE handshakes, from the kernel's CSPRNG.
#[derive(Debug)]
pub struct OsKeys(());

impl OsKeys {
    /// The kernel's generator, checked once: an error (at start, not mid-handshake) where the
    /// kernel has none.
    pub fn new() -> io::Result<OsKeys> {
        fill(&mut [0u8; 16])?;
        Ok(OsKeys(()))
    }
}

impl KeySource for OsKeys {
    fn fill(&mut self, out: &mut [u8]) {
        if let Err(e) = fill(out) {
            // It worked in `new`; a kernel that stops giving randomness leaves no safe way to
            // make a key, and a predictable key is worse than no process.
            panic!("getrandom failed after working at start: {e}");
        }
    }
}
