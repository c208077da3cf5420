//! Moving a torrent's files from one data folder to another (`TorrentHandle::move_storage`,
//! qBittorrent's `setLocation`), safely across file systems.
//!
//! Each file is renamed into place when both folders are on one file system. Otherwise it
//! is copied to a temporary name beside its destination (`<name>.rtmove`), synced, renamed
//! into place, its folder synced, and only then is the source unlinked: at every moment each
//! file is whole in at least one of the two folders. The copy keeps the source's
//! modification time, so resume data stays valid and no check is needed afterwards.
//!
//! A move is idempotent, so an interrupted one is finished by running it again: a file whose
//! source is gone was moved already; one present in both places is moved again over the
//! copy (the source is never written, so it is whole); a leftover temporary file is replaced
//! or removed. Rolling back is the same move the other way.
//!
//! Paths never leave either folder: every folder on the way to a file is opened relative to
//! its parent without following any symlink (as [`super::delete_files`] does), and a file
//! that is itself a symlink is refused, never followed.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::sys::{self, Resolve};
use crate::metainfo::Info;

/// The suffix of a file being copied into its destination.
pub const MOVE_SUFFIX: &str = ".rtmove";

/// The bytes a move of `info` carries: its stored files' lengths.
pub fn move_size(info: &Info) -> u64 {
    info.files()
        .iter()
        .filter(|f| !f.attr.padding)
        .map(|f| f.length)
        .sum()
}

/// Moves `info`'s files from below `from` to below `to` (created if missing), then removes
/// the torrent's folders the move left empty in `from`. `progress` is told the bytes done so
/// far (a file counts when it is in place; a copy also counts as it goes). Files missing from
/// both folders are skipped (a later open notices). On an error, the path and the error:
/// what was moved so far stays where it is, each file whole in one place or both.
pub fn move_files(
    info: &Info,
    from: &Path,
    to: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), (PathBuf, io::Error)> {
    std::fs::create_dir_all(to).map_err(|e| (to.to_path_buf(), e))?;
    let src_root = match sys::open_dir(from) {
        Ok(fd) => fd,
        // Nothing left to move (all of it went before, or it is missing everywhere).
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Ok(())
        }
        Err(e) => return Err((from.to_path_buf(), e)),
    };
    let dst_root = sys::open_dir(to).map_err(|e| (to.to_path_buf(), e))?;
    let mut done = 0u64;
    let mut folders = std::collections::BTreeSet::new();
    for f in info.files() {
        if f.attr.padding {
            continue;
        }
        let rel = f.relative_path();
        folders.extend(
            rel.ancestors()
                .skip(1)
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf),
        );
        let base = done;
        move_one(src_root.as_fd(), dst_root.as_fd(), &rel, &mut |n| {
            progress(base + n)
        })
        .map_err(|(at_dst, e)| (if at_dst { to } else { from }.join(&rel), e))?;
        done += f.length;
        progress(done);
    }
    // Deepest first; a folder that still holds something (or is a symlink) stays.
    let mut folders: Vec<PathBuf> = folders.into_iter().collect();
    folders.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in folders {
        let _ = super::remove_beneath(src_root.as_fd(), &rel, true, Resolve::NoSymlinks);
    }
    let _ = sys::fsync(src_root.as_fd());
    Ok(())
}

/// The open folder holding `rel` below `root` (`None` when it does not exist), without
/// following symlinks.
fn parent_of(root: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<OwnedFd>> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        None => root.try_clone_to_owned().map(Some),
        Some(parent) => match sys::open_beneath(root, parent, flags, 0, Resolve::NoSymlinks) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// The folder holding `rel` below `root`, its missing folders created, no symlink followed.
pub(super) fn make_parent(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let mut held = root.try_clone_to_owned()?;
    if let Some(parent) = rel.parent() {
        for comp in parent.components() {
            let name = Path::new(comp.as_os_str());
            let next = match sys::open_beneath(held.as_fd(), name, flags, 0, Resolve::NoSymlinks) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match sys::mkdirat(held.as_fd(), name) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    sys::open_beneath(held.as_fd(), name, flags, 0, Resolve::NoSymlinks)?
                }
                other => other?,
            };
            held = next;
        }
    }
    Ok(held)
}

/// Moves one file; on an error, whether it happened at the destination, and the error.
fn move_one(
    src_root: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    rel: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(), (bool, io::Error)> {
    let name = Path::new(rel.file_name().expect("a file path has a name"));
    let mut tmp = name.as_os_str().to_owned();
    tmp.push(MOVE_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let src_dir = parent_of(src_root, rel).map_err(|e| (false, e))?;
    let src_dir = match src_dir {
        Some(dir) => dir,
        // Moved before (its folder went with it), or missing everywhere: nothing to do but
        // tidy a leftover temporary file.
        None => {
            if let Ok(Some(d)) = parent_of(dst_root, rel) {
                let _ = sys::unlinkat(d.as_fd(), &tmp, false);
            }
            return Ok(());
        }
    };
    match sys::lstatat(src_dir.as_fd(), name) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
        Ok(_) => return Err((false, io::Error::from_raw_os_error(libc::ELOOP))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Ok(Some(d)) = parent_of(dst_root, rel) {
                let _ = sys::unlinkat(d.as_fd(), &tmp, false);
            }
            return Ok(());
        }
        Err(e) => return Err((false, e)),
    }
    let dst_dir = make_parent(dst_root, rel).map_err(|e| (true, e))?;
    match sys::renameat(src_dir.as_fd(), name, dst_dir.as_fd(), name) {
        Ok(()) => {
            let _ = sys::unlinkat(dst_dir.as_fd(), &tmp, false);
            sys::fsync(dst_dir.as_fd()).map_err(|e| (true, e))?;
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => return Err((true, e)),
    }
    // Across file systems: copy beside the destination, make it durable, put it in place,
    // and only then let go of the source.
    let src = sys::open_beneath(
        src_dir.as_fd(),
        name,
        libc::O_RDONLY,
        0,
        Resolve::NoSymlinks,
    )
    .map_err(|e| (false, e))?;
    let stat = sys::fstat(src.as_fd()).map_err(|e| (false, e))?;
    let out = sys::open_beneath(
        dst_dir.as_fd(),
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        // The source's permission bits (an executable stays executable); the umask applies.
        stat.st_mode & 0o777,
        Resolve::NoSymlinks,
    )
    .map_err(|e| (true, e))?;
    let (mut src, mut out) = (std::fs::File::from(src), std::fs::File::from(out));
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((false, e)),
        };
        out.write_all(&buf[..n]).map_err(|e| (true, e))?;
        copied += n as u64;
        progress(copied);
    }
    let mtime = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            stat.st_mtime.max(0) as u64,
            stat.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    out.set_times(std::fs::FileTimes::new().set_modified(mtime))
        .map_err(|e| (true, e))?;
    out.sync_all().map_err(|e| (true, e))?;
    drop(out);
    sys::renameat(dst_dir.as_fd(), &tmp, dst_dir.as_fd(), name).map_err(|e| (true, e))?;
    sys::fsync(dst_dir.as_fd()).map_err(|e| (true, e))?;
    sys::unlinkat(src_dir.as_fd(), name, false).map_err(|e| (false, e))?;
    let _ = sys::fsync(src_dir.as_fd());
    Ok(())
}
