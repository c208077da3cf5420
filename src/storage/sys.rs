//! Thin, checked wrappers over the Linux calls the standard library lacks: `openat2` with
//! `RESOLVE_BENEATH`, `mkdirat`, `fallocate`, `fstatvfs`, `fstat` and `eventfd`. Each returns
//! `io::Result`; errors keep their `errno` so callers can tell ENOSPC from EACCES.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

/// `struct open_how` from `linux/openat2.h`. libc's is `#[non_exhaustive]`, so it cannot be
/// built outside libc; the layout is fixed by the kernel ABI.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Path resolution must stay below the starting folder: no `..` past it, no absolute
/// symlinks, no symlink whose target leaves it (EXDEV).
const RESOLVE_BENEATH: u64 = 0x08;
/// Refuse `/proc/self/fd`-style "magic" links.
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// Whether `openat2` works here: unknown, yes, or no (kernel before 5.6, or a seccomp
/// profile that refuses it).
static OPENAT2: AtomicU8 = AtomicU8::new(OPENAT2_UNKNOWN);
const OPENAT2_UNKNOWN: u8 = 0;
const OPENAT2_YES: u8 = 1;
const OPENAT2_NO: u8 = 2;

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a folder by absolute or relative path (following symlinks: the user chose it).
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How [`open_beneath`] resolves paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// `openat2(RESOLVE_BENEATH)` when the kernel allows it, else [`Resolve::NoSymlinks`].
    Auto,
    /// Walk component by component with `O_NOFOLLOW`: any symlink is refused (ELOOP or
    /// ENOTDIR), even one that stays inside. Stricter; works on every kernel.
    NoSymlinks,
}

/// Opens `rel` (a relative path of plain components) below the folder `root`, never leaving
/// it: a symlink that leads outside fails with EXDEV (or, without `openat2`, any symlink
/// fails with ELOOP/ENOTDIR). Race-free: the kernel checks during resolution.
pub(crate) fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: Resolve,
) -> io::Result<OwnedFd> {
    debug_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
    // openat2 refuses flags that mean nothing with O_PATH (EINVAL), O_NOCTTY among them.
    let flags = if flags & libc::O_PATH != 0 {
        flags | libc::O_CLOEXEC
    } else {
        flags | libc::O_CLOEXEC | libc::O_NOCTTY
    };
    if resolve == Resolve::Auto && OPENAT2.load(Ordering::Relaxed) != OPENAT2_NO {
        let c = cstr(rel)?;
        let how = OpenHow {
            flags: flags as u64,
            mode: if flags & libc::O_CREAT != 0 {
                u64::from(mode)
            } else {
                0
            },
            resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: `c` and `how` are valid for the duration of the call and `how`'s size is
        // passed alongside it, as openat2(2) requires.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc >= 0 {
            OPENAT2.store(OPENAT2_YES, Ordering::Relaxed);
            // SAFETY: a non-negative return is a new descriptor that we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) });
        }
        let err = io::Error::last_os_error();
        let unsupported = matches!(err.raw_os_error(), Some(libc::ENOSYS));
        // A seccomp filter that does not know openat2 answers EPERM; only believe that on
        // the first call, before openat2 was ever seen to work.
        let filtered = matches!(err.raw_os_error(), Some(libc::EPERM))
            && OPENAT2.load(Ordering::Relaxed) == OPENAT2_UNKNOWN;
        if !(unsupported || filtered) {
            return Err(err);
        }
        OPENAT2.store(OPENAT2_NO, Ordering::Relaxed);
    }
    open_nofollow_walk(root, rel, flags, mode)
}

/// The fallback of [`open_beneath`]: each folder opened with `O_NOFOLLOW | O_DIRECTORY`
/// relative to the previous one, the last component with `O_NOFOLLOW`.
fn open_nofollow_walk(
    root: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let parts: Vec<_> = rel.components().collect();
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
    let mut held: Option<OwnedFd> = None;
    for dir in dirs {
        let at = held.as_ref().map_or(root.as_raw_fd(), |f| f.as_raw_fd());
        let c = cstr(Path::new(dir.as_os_str()))?;
        // SAFETY: `c` is valid for the call; `at` is an open descriptor.
        let fd = check(unsafe {
            libc::openat(
                at,
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| symlink_as_eloop(at, &c, e))?;
        // SAFETY: a new descriptor that we own.
        held = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let at = held.as_ref().map_or(root.as_raw_fd(), |f| f.as_raw_fd());
    let c = cstr(Path::new(last.as_os_str()))?;
    // SAFETY: as above; `mode` is only read with O_CREAT.
    let fd = check(unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `O_NOFOLLOW | O_DIRECTORY` on a symlink fails with ENOTDIR, the same as on a file; tell
/// the two apart so that a refused symlink reads as one (ELOOP).
fn symlink_as_eloop(at: RawFd, name: &CString, err: io::Error) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOTDIR) {
        return err;
    }
    // SAFETY: `stat` is plain old data; all-zero is valid and fstatat overwrites it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is valid for the call, `st` is writable, `at` is an open descriptor.
    let rc = unsafe { libc::fstatat(at, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        io::Error::from_raw_os_error(libc::ELOOP)
    } else {
        err
    }
}

/// Creates the folder `name` (one plain component) inside the open folder `dir`.
pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: `c` is valid for the call; `dir` is an open descriptor.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) }).map(drop)
}

/// Creates the symlink `name` inside the open folder `dir`, holding `target` (not followed,
/// not checked: the caller made it relative and inside the download folder).
pub(crate) fn symlinkat(target: &Path, dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: `t` and `c` are valid NUL-terminated strings for the call; `dir` is an open
    // descriptor.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) }).map(drop)
}

/// What the symlink `name` inside the open folder `dir` holds (at most 4 KiB; an error if
/// `name` is not a symlink).
pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is valid for the call; `buf` is writable for `buf.len()` bytes, the length
    // passed, and readlinkat writes no more than that.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Removes the file `name` inside the open folder `dir` (`rmdir` too with `folder`).
pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &Path, folder: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if folder { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is valid for the call; `dir` is an open descriptor.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) }).map(drop)
}

/// Renames `from` in the open folder `from_dir` to `to` in the open folder `to_dir` (each a
/// plain component), replacing what is there; EXDEV across file systems.
pub(crate) fn renameat(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both strings are valid for the call; both folders are open descriptors.
    check(unsafe {
        libc::renameat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
        )
    })
    .map(drop)
}

/// `fstatat` of `name` in the open folder `dir`, not following a symlink.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &Path) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: `stat` is plain old data; all-zero is valid and fstatat overwrites it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is valid for the call, `st` is writable, `dir` is an open descriptor.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `fsync`.
pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Allocates `len` bytes from offset 0 (mode 0: the size grows to `len` if it was smaller;
/// data already there is kept).
pub(crate) fn fallocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    loop {
        // SAFETY: plain syscall on an open descriptor.
        match check(unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, len) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(drop),
        }
    }
}

/// `fstat`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain old data; all-zero is a valid value that fstat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The status of `path` itself, a symlink not followed (`fstatat(AT_SYMLINK_NOFOLLOW)`): one
/// system call, where an `O_PATH` open, `fstat` and close are three.
pub(crate) fn lstat(path: &Path) -> io::Result<libc::stat> {
    let c = cstr(path)?;
    // SAFETY: `stat` is plain old data; all-zero is a valid value that fstatat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call and `st` a valid,
    // writable stat buffer.
    check(unsafe {
        libc::fstatat(
            libc::AT_FDCWD,
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// Bytes that can still be allocated on the filesystem holding `fd`: the blocks available to
/// unprivileged users, or all free blocks for root (which may use the reserve).
pub(crate) fn free_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: `statvfs` is plain old data; all-zero is valid and fstatvfs overwrites it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statvfs buffer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    // SAFETY: geteuid cannot fail.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        st.f_bfree
    } else {
        st.f_bavail
    };
    // Both fields are `c_ulong`, 64 bits on every target ringtorrent builds for.
    Ok((blocks as u64).saturating_mul(st.f_frsize as u64))
}

/// `posix_fadvise` over a range (`len` 0: to the end).
pub(crate) fn fadvise(fd: BorrowedFd<'_>, offset: u64, len: u64, advice: libc::c_int) {
    // Advice is a hint: failure changes nothing but speed, so it is ignored.
    // SAFETY: plain syscall on an open descriptor.
    unsafe {
        libc::posix_fadvise(
            fd.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            advice,
        )
    };
}

/// A new non-blocking, close-on-exec eventfd with counter 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd's counter, waking whoever polls or reads it.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // The only possible failure is EAGAIN when the counter would pass 2^64 - 2, which means
    // it is already readable: the wake-up is not lost.
    // SAFETY: writes 8 bytes from a valid u64.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter to 0; returns whether it was set.
pub(crate) fn eventfd_clear(fd: BorrowedFd<'_>) -> bool {
    let mut value: u64 = 0;
    // EAGAIN (counter already 0) is the only expected failure.
    // SAFETY: reads 8 bytes into a valid u64.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    n == 8
}

/// Modification time in nanoseconds since the Unix epoch.
pub(crate) fn mtime_ns(st: &libc::stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn beneath_refuses_escaping_symlinks_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"secret").unwrap();
        std::fs::write(root.join("inside/g"), b"ok").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink("inside", root.join("in")).unwrap();
        let dir = open_dir(&root).unwrap();
        let open = |rel: &str, resolve| {
            open_beneath(dir.as_fd(), Path::new(rel), libc::O_RDONLY, 0, resolve)
        };

        for resolve in [Resolve::Auto, Resolve::NoSymlinks] {
            let err = open("out/f", resolve).unwrap_err();
            assert!(
                matches!(err.raw_os_error(), Some(libc::EXDEV | libc::ELOOP)),
                "{resolve:?}: {err}"
            );
            assert!(open("inside/g", resolve).is_ok());
        }
        // A relative symlink that stays inside is followed only by openat2; without it (Linux
        // before 5.6, or a seccomp filter) every link is refused. The opens above settled
        // which, so one of the two assertions runs, never neither.
        let inside_link = open("in/g", Resolve::Auto);
        match OPENAT2.load(Ordering::Relaxed) {
            OPENAT2_YES => assert!(inside_link.is_ok(), "{inside_link:?}"),
            OPENAT2_NO => assert!(
                matches!(
                    inside_link.as_ref().map_err(io::Error::raw_os_error),
                    Err(Some(libc::ELOOP | libc::ENOTDIR))
                ),
                "{inside_link:?}"
            ),
            other => panic!("openat2 still untried after four opens: {other}"),
        }
        assert!(open("in/g", Resolve::NoSymlinks).is_err());
    }

    #[test]
    fn eventfd_counts_and_clears() {
        let fd = eventfd().unwrap();
        assert!(!eventfd_clear(fd.as_fd()));
        eventfd_signal(fd.as_fd());
        eventfd_signal(fd.as_fd());
        assert!(eventfd_clear(fd.as_fd()));
        assert!(!eventfd_clear(fd.as_fd()));
    }
}
