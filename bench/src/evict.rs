//! Cold pulls: the blob's bytes pushed out of the page cache before a GET.
//!
//! Every server keeps the blob in a file of exactly the blob's size somewhere under its
//! directory (Berth's data dir, the reference's root, nginx's root), so each regular file
//! of that size under the `--evict-dir` directories is synced (`fdatasync`: the reference
//! does not sync what it writes, and dirty pages cannot be dropped) and dropped
//! (`posix_fadvise(POSIX_FADV_DONTNEED)`), and then checked: at most [`MAX_LEFT`] of its
//! pages may still be cached, else the GET would be measured warm.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The share of a file's pages that may still be cached after it was dropped.
pub const MAX_LEFT: f64 = 0.05;
/// Directory entries looked at per eviction, at most (a bound on the walk).
const MAX_ENTRIES: usize = 1_000_000;

/// What one eviction did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evicted {
    /// Files of the blob's size synced and dropped.
    pub files: usize,
    /// The largest share of one file's pages still cached afterwards.
    pub left: f64,
}

/// Syncs and drops from the page cache every regular file of exactly `size` bytes under
/// `dirs` (symbolic links are not followed). Fails when there is none (the GET would
/// be warm), or when a file stays more than [`MAX_LEFT`] cached. Blocking.
pub fn evict(dirs: &[PathBuf], size: u64) -> Result<Evicted> {
    let mut files = Vec::new();
    let mut seen = 0;
    for d in dirs {
        walk(d, size, &mut files, &mut seen)
            .with_context(|| format!("--evict-dir {}", d.display()))?;
    }
    if files.is_empty() {
        bail!(
            "no file of {size} bytes (the blob's size) under --evict-dir {}: a cold pull would be \
             measured warm",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut out = Evicted::default();
    for path in &files {
        let left =
            drop_cached(path, size).with_context(|| format!("evicting {}", path.display()))?;
        if left > MAX_LEFT {
            bail!(
                "{} still has {:.0}% of its pages cached after fdatasync + POSIX_FADV_DONTNEED \
                 (at most {:.0}% allowed)",
                path.display(),
                left * 100.0,
                MAX_LEFT * 100.0
            );
        }
        out.files += 1;
        out.left = out.left.max(left);
    }
    Ok(out)
}

/// Collects the regular files of `size` bytes under `dir`, looking at no more than
/// [`MAX_ENTRIES`] entries in all.
fn walk(dir: &Path, size: u64, out: &mut Vec<PathBuf>, seen: &mut usize) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            *seen += 1;
            if *seen > MAX_ENTRIES {
                return Err(io::Error::other(format!(
                    "more than {MAX_ENTRIES} entries under the evict directories"
                )));
            }
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && entry.metadata()?.len() == size {
                out.push(entry.path());
            }
        }
    }
    Ok(())
}

/// `fdatasync` + `POSIX_FADV_DONTNEED` on the file; the share of its pages still cached.
fn drop_cached(path: &Path, size: u64) -> io::Result<f64> {
    let file = File::open(path)?;
    file.sync_data()?;
    // SAFETY: an advice on an open descriptor; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let pages = size.div_ceil(page_size()).max(1);
    Ok(cached_pages(&file, size)? as f64 / pages as f64)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// The file's pages in the page cache: `cachestat(2)` (Linux 6.5), else `mincore(2)` on a
/// mapping of the file.
pub fn cached_pages(file: &File, size: u64) -> io::Result<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// The same number on every architecture (system calls added since 5.x are shared).
    const SYS_CACHESTAT: libc::c_long = 451;
    if size == 0 {
        return Ok(0);
    }
    let range = Range { off: 0, len: size };
    let mut stat = Stat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both valid for the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    if rc == 0 {
        return Ok(stat.nr_cache);
    }
    let len = size as usize;
    // SAFETY: a fresh read-only shared mapping of an open file, only passed to mincore
    // (which touches no page) and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut pages = vec![0u8; len.div_ceil(page_size() as usize)];
        let rc = libc::mincore(p, len, pages.as_mut_ptr());
        let err = io::Error::last_os_error();
        libc::munmap(p, len);
        if rc != 0 {
            return Err(err);
        }
        Ok(pages.iter().filter(|v| *v & 1 == 1).count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_file_of_the_size_is_dropped_from_the_cache_and_others_are_left_alone() {
        let dir = std::env::temp_dir().join(format!("berth-bench-evict-{}", std::process::id()));
        let sub = dir.join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let size = 4 << 20;
        let data = vec![7u8; size];
        std::fs::write(sub.join("blob"), &data).unwrap();
        std::fs::write(dir.join("other"), &data[..size - 1]).unwrap();
        // Read both, so that both are cached.
        for p in [sub.join("blob"), dir.join("other")] {
            let mut v = Vec::new();
            File::open(&p).unwrap().read_to_end(&mut v).unwrap();
        }
        let got = evict(std::slice::from_ref(&dir), size as u64).unwrap();
        assert_eq!(got.files, 1);
        assert!(got.left <= MAX_LEFT, "{got:?}");
        let other = File::open(dir.join("other")).unwrap();
        assert!(cached_pages(&other, size as u64 - 1).unwrap() > 0);
        let none = evict(std::slice::from_ref(&dir), 12345).unwrap_err();
        assert!(
            format!("{none:#}").contains("no file of 12345 bytes"),
            "{none:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
