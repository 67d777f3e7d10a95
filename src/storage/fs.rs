//! Filesystem blob store.
//!
//! Layout under the root:
//! - `blobs/<alg>/<hex[0..2]>/<hex>`: committed blobs, content-addressed, shared by every
//!   repository;
//! - `uploads/<id>`: the bytes of an upload session so far.
//!
//! Upload data is written around the page cache (`O_DIRECT`, see [`UploadIo`]) while at
//! most one append per core runs, else through it; either way it is fsynced before a
//! request is acknowledged. The first megabyte of a large body is hashed on the task that
//! receives it and the rest on a thread of its own, again while at most one append per core
//! runs. A commit renames the upload file to its digest's path and fsyncs the directory, so
//! a blob is either wholly visible or absent, across crashes too. Several processes may
//! share a root.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{BlobReader, BlobStore, ByteStream, Space, StorageError, Verify, check_range};
use crate::oci::{Digest, Hasher};

/// Read buffer for streaming blobs out: large enough that a 1 GiB pull is a few thousand
/// writes.
const READ_BUF: usize = 256 * 1024;

/// Upload body bytes received but not yet written, all uploads together, are held to this
/// many: chunks queue so the network and the hash go on while a write waits, and a slow
/// disk holds back the sockets, not memory. Small, since a queued chunk can keep its
/// connection's whole read buffer alive (docs/performance.md, "Upload buffer budget").
const UPLOAD_BUFFER: usize = 8 * 1024 * 1024;

/// Concurrent blob responses share this much for their read buffers (each holds up to
/// about three at a time: one being read, one queued, one being sent), so memory stays
/// flat as downloads pile up (docs/performance.md, "Read buffers").
const READ_BUDGET: usize = 8 * 1024 * 1024;

/// The smallest read buffer, however many responses stream at once.
const READ_BUF_MIN: usize = 64 * 1024;

/// Counts the transfers of one kind running in a store (blob responses, upload appends);
/// the count sets their share of a buffer budget.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn start(active: &Arc<AtomicUsize>) -> Active {
        active.fetch_add(1, Ordering::Relaxed);
        Active(active.clone())
    }

    /// How many run now, this one included.
    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// `budget` divided among the running transfers, within `min..=max`.
    fn share(&self, budget: usize, min: usize, max: usize) -> usize {
        (budget / self.count().max(1)).clamp(min, max)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The first this many bytes of a request body are hashed on the task that receives them;
/// past it a blocking thread takes the hash over, so receiving and hashing run on two cores
/// instead of taking turns on one. Small bodies stay inline, where a thread hand-off would
/// cost more than their hash (docs/performance.md, "Hashing on a thread of its own").
const HASH_INLINE: u64 = 1024 * 1024;

/// A chunk of an upload body on its way to the writer (and the hasher thread), holding its
/// share of [`UPLOAD_BUFFER`] until both are done with it.
type Queued = (Bytes, Arc<OwnedSemaphorePermit>);

/// Once this many bytes arrived since the last flush, a second thread `fdatasync`s the
/// upload file while the writer goes on through the page cache: the device's cache flush
/// costs time in proportion to what was written since the last one, so it is paid while
/// bytes still arrive and the acknowledging fsync has only the tail left. At most one flush
/// runs per upload (flushes that would queue behind it are merged). Small, so the disk
/// starts early on each request; bodies smaller than this get one `fdatasync` at the end
/// and no second thread (docs/performance.md, "Flushing while an upload streams").
const FLUSH_EVERY: u64 = 512 * 1024;

/// The same for direct writes, where every write has reached the device by the time it
/// returns and a flush is the journal commit and the device's cache flush, so flushing
/// as often as [`FLUSH_EVERY`] holds the writes up (docs/performance.md, "Direct writes for
/// pushes").
const DIRECT_FLUSH_EVERY: u64 = 32 * 1024 * 1024;

/// Direct (`O_DIRECT`) writes are aligned to this: file offsets, lengths and memory. 4 KiB
/// covers every common logical block size (512 B and 4 KiB).
const DIRECT_ALIGN: usize = 4096;

/// Each direct write is this large at most; smaller writes, issued one at a time, reach
/// the device more slowly (docs/performance.md, "Direct writes for pushes").
const DIRECT_BUF: usize = 1024 * 1024;

/// An append hands its hash to a thread of its own (past [`HASH_INLINE`]) and writes
/// directly (`O_DIRECT`, see [`UploadIo`]) only while at most this many appends run per
/// core, itself included; others hash on their task and write through the page cache. Both
/// pay off only where the receiving side's CPU is the limit (a few large pushes); with many
/// at once the disk is the limit and they only hold memory longer (docs/performance.md,
/// "One append per core").
const SOLO_APPENDS_PER_CORE: usize = 1;

/// How upload data reaches the filesystem store's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadIo {
    /// Through the page cache (`write`), the portable way.
    Buffered,
    /// Around it (`O_DIRECT`). The bytes of a push are not read again soon, and copying them
    /// into the page cache costs the receiving side CPU (docs/performance.md, "Direct writes
    /// for pushes").
    Direct,
}

impl UploadIo {
    pub fn name(self) -> &'static str {
        match self {
            UploadIo::Buffered => "buffered",
            UploadIo::Direct => "direct",
        }
    }
}

/// An upload's bytes on their way to the file.
enum Sink<'f> {
    /// Through the page cache.
    Buffered(&'f std::fs::File),
    /// Around it: gathered in an aligned buffer and written with `O_DIRECT`.
    Direct(DirectWriter<'f>),
}

impl Sink<'_> {
    fn flush_every(&self) -> u64 {
        match self {
            Sink::Buffered(_) => FLUSH_EVERY,
            Sink::Direct(_) => DIRECT_FLUSH_EVERY,
        }
    }

    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Buffered(f) => {
                let mut w = *f;
                w.write_all(data)
            }
            Sink::Direct(d) => d.put(data),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Buffered(_) => Ok(()),
            Sink::Direct(d) => d.finish(),
        }
    }
}

/// Writes through an aligned buffer to a file opened with `O_DIRECT`, starting at any
/// offset: a partial first block is read back and written again whole, and a partial last
/// block is written padded, the file then cut to its real length (bytes past the length a
/// request acknowledged are dropped by the next append or the commit anyway).
struct DirectWriter<'f> {
    f: &'f std::fs::File,
    mem: Vec<u8>,
    /// Where the aligned buffer starts in `mem`.
    start: usize,
    /// The aligned buffer's size, a multiple of [`DIRECT_ALIGN`].
    cap: usize,
    /// Bytes gathered in the buffer.
    fill: usize,
    /// The file offset of the buffer's first byte (aligned).
    pos: u64,
}

impl<'f> DirectWriter<'f> {
    /// A writer appending at `offset`, where the file ends.
    fn new(f: &'f std::fs::File, offset: u64, cap: usize) -> std::io::Result<DirectWriter<'f>> {
        let cap = cap - cap % DIRECT_ALIGN;
        let mem = vec![0u8; cap + DIRECT_ALIGN];
        let start = mem.as_ptr().align_offset(DIRECT_ALIGN);
        if start >= DIRECT_ALIGN {
            return Err(std::io::Error::other("cannot align a direct-write buffer"));
        }
        let pos = offset - offset % DIRECT_ALIGN as u64;
        let mut w = DirectWriter {
            f,
            mem,
            start,
            cap,
            fill: 0,
            pos,
        };
        let head = (offset - pos) as usize;
        if head > 0 {
            // The file ends at `offset`, so its last block holds `head` bytes.
            let block = &mut w.mem[start..start + DIRECT_ALIGN];
            let got = std::os::unix::fs::FileExt::read_at(f, block, pos)?;
            if got != head {
                return Err(std::io::Error::other(format!(
                    "upload file: read {got} bytes of its last block, expected {head}"
                )));
            }
            w.fill = head;
        }
        Ok(w)
    }

    fn put(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = data.len().min(self.cap - self.fill);
            let at = self.start + self.fill;
            self.mem[at..at + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.cap {
                let buf = &self.mem[self.start..self.start + self.cap];
                std::os::unix::fs::FileExt::write_all_at(self.f, buf, self.pos)?;
                self.pos += self.cap as u64;
                self.fill = 0;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let padded = self.fill.next_multiple_of(DIRECT_ALIGN);
        let buf = &mut self.mem[self.start..self.start + padded];
        buf[self.fill..].fill(0);
        std::os::unix::fs::FileExt::write_all_at(self.f, buf, self.pos)?;
        self.f.set_len(self.pos + self.fill as u64)
    }
}

/// Writes everything `rx` delivers to `sink` (writing to `f`), keeping device flushes going
/// meanwhile (see [`FLUSH_EVERY`]), and returns the byte count once every byte is durable.
fn write_durably(
    f: &std::fs::File,
    mut sink: Sink<'_>,
    rx: &mut tokio::sync::mpsc::Receiver<Queued>,
) -> std::io::Result<u64> {
    std::thread::scope(|scope| {
        let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let mut flush_rx = Some(flush_rx);
        let mut flusher = None;
        let mut written = 0u64;
        let every = sink.flush_every();
        let mut flush_at = every;
        // Each chunk's permit goes back to the shared budget once it is written.
        while let Some((chunk, _permit)) = rx.blocking_recv() {
            sink.put(&chunk)?;
            written += chunk.len() as u64;
            if written >= flush_at {
                flush_at = written + every;
                if let Some(rx) = flush_rx.take() {
                    flusher = Some(scope.spawn(move || -> std::io::Result<()> {
                        while rx.recv().is_ok() {
                            f.sync_data()?;
                        }
                        Ok(())
                    }));
                }
                // Full: a flush is running and one is queued behind it already.
                let _ = flush_tx.try_send(());
            }
        }
        sink.finish()?;
        drop(flush_tx);
        // An error the flusher saw is reported to it only (the open file is shared), so
        // it must fail the request here.
        if let Some(flusher) = flusher {
            flusher
                .join()
                .map_err(|_| std::io::Error::other("upload flusher thread panicked"))??;
        }
        f.sync_data()?;
        Ok(written)
    })
}

/// Starts a blocking thread that feeds `hasher` every chunk sent to it, in order, and
/// returns it once the sender is dropped.
fn spawn_hasher(
    mut hasher: Hasher,
) -> (
    tokio::sync::mpsc::Sender<Queued>,
    tokio::task::JoinHandle<Hasher>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(16);
    let handle = tokio::task::spawn_blocking(move || {
        // Each chunk's share of the budget is released once the writer is done with it too.
        while let Some((chunk, _permit)) = rx.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher
    });
    (tx, handle)
}

/// After a write failed mid-body, the rest of the body is read and dropped for a while
/// (up to [`DRAIN_BYTES`] or [`DRAIN_TIME`]) before the error is answered: a server that
/// closes a connection with a request's bytes unread resets it, and the client (docker in
/// the middle of a layer) would see "connection reset" instead of the answer that says
/// why (a full disk).
async fn drain(data: &mut ByteStream) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = data.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// See [`drain`].
const DRAIN_BYTES: u64 = 256 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Blocks until this process holds `f`'s exclusive `flock`; it is released when `f` is
/// closed. (`File::lock` from Rust 1.89 does the same; the crate still builds with 1.85.)
fn lock_exclusive(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor `f` keeps open.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Tries a direct write in `dir`: the filesystem accepts `O_DIRECT` and [`DIRECT_ALIGN`].
fn probe_direct(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".direct-probe-{}", uuid::Uuid::new_v4()));
    let tried = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .and_then(|f| {
            let mut w = DirectWriter::new(&f, 0, DIRECT_ALIGN)?;
            w.put(b"probe")?;
            w.finish()
        });
    let removed = std::fs::remove_file(&path);
    tried.and(removed)
}

/// How long a measure of the free space is trusted: new uploads and readiness probes ask
/// for it, and `statvfs` runs at most this often.
const SPACE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last measure of the filesystem's free space.
#[derive(Default)]
struct FreeSpace {
    /// When and what `statvfs` said; `None` until measured, or after a write ran out.
    measured: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl FreeSpace {
    /// Bytes free under `root`, measured at most [`SPACE_TTL`] ago; `None` when the
    /// filesystem cannot tell.
    fn get(&self, root: &Path) -> Option<u64> {
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, free)) = *measured {
            if at.elapsed() < SPACE_TTL {
                return Some(free);
            }
        }
        match free_bytes(root) {
            Ok(Some(free)) => {
                *measured = Some((std::time::Instant::now(), free));
                Some(free)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot measure the blob store's free space");
                None
            }
        }
    }

    /// A write ran out of space: the next question measures again.
    fn forget(&self) {
        *self.measured.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The bytes an unprivileged writer may still use on the filesystem holding `path`;
/// `None` for a filesystem without a size (ramfs and some FUSE filesystems report no
/// blocks at all).
fn free_bytes(path: &Path) -> std::io::Result<Option<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `st` a buffer statvfs fills.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    if st.f_blocks == 0 {
        return Ok(None);
    }
    #[allow(clippy::unnecessary_cast)] // c_ulong: u32 on 32-bit targets
    Ok(Some(
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64),
    ))
}

pub struct FsBlobStore {
    root: PathBuf,
    io: UploadIo,
    active_reads: Arc<AtomicUsize>,
    active_appends: Arc<AtomicUsize>,
    /// Up to this many appends at once get a hasher thread and direct writes (see
    /// [`SOLO_APPENDS_PER_CORE`]).
    solo_max: usize,
    /// Bytes of upload bodies received and not yet written, all uploads together.
    upload_buffer: Arc<Semaphore>,
    /// New uploads are refused while less than this is free (`storage.min_free_bytes`).
    min_free_bytes: u64,
    free: FreeSpace,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`, writing upload data with direct
    /// I/O where the filesystem allows it.
    pub async fn open(root: impl Into<PathBuf>) -> Result<FsBlobStore, StorageError> {
        FsBlobStore::open_with(root, UploadIo::Direct).await
    }

    /// Opens a store writing upload data as `io` says; `Direct` falls back to `Buffered` on
    /// a filesystem that refuses it (tried here, once).
    pub async fn open_with(
        root: impl Into<PathBuf>,
        io: UploadIo,
    ) -> Result<FsBlobStore, StorageError> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join("blobs")).await?;
        let uploads = root.join("uploads");
        tokio::fs::create_dir_all(&uploads).await?;
        let io = match io {
            UploadIo::Buffered => UploadIo::Buffered,
            UploadIo::Direct => match tokio::task::spawn_blocking(move || probe_direct(&uploads))
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            {
                Ok(()) => UploadIo::Direct,
                Err(e) => {
                    tracing::info!(
                        error = %e,
                        "direct I/O refused in the blob store's directory; upload data goes through the page cache"
                    );
                    UploadIo::Buffered
                }
            },
        };
        tracing::info!(root = %root.display(), upload_io = io.name(), "filesystem blob store");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(FsBlobStore {
            root,
            io,
            active_reads: Arc::default(),
            active_appends: Arc::default(),
            solo_max: SOLO_APPENDS_PER_CORE * cores,
            upload_buffer: Arc::new(Semaphore::new(UPLOAD_BUFFER)),
            min_free_bytes: 0,
            free: FreeSpace::default(),
        })
    }

    /// Refuses new uploads while less than `bytes` are free on the store's filesystem (the
    /// low-water mark; 0: only when it is full), so that what shares the disk (the SQLite
    /// database) keeps room to record what happens.
    pub fn with_min_free_bytes(mut self, bytes: u64) -> FsBlobStore {
        self.min_free_bytes = bytes;
        self
    }

    /// How this store writes upload data.
    pub fn upload_io(&self) -> UploadIo {
        self.io
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// A committed blob's file, open for reading.
    async fn open_blob(&self, digest: &Digest) -> Result<std::fs::File, StorageError> {
        match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(f) => Ok(f.into_std().await),
            Err(e) => not_found_as(e, || StorageError::BlobNotFound(digest.clone())),
        }
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        // Upload ids are generated by the registry; refuse anything that could name
        // another path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StorageError::UploadNotFound(id.to_string()));
        }
        Ok(self.root.join("uploads").join(id))
    }
}

fn not_found_as<T>(e: std::io::Error, f: impl FnOnce() -> StorageError) -> Result<T, StorageError> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Err(f())
    } else {
        Err(StorageError::Io(e))
    }
}

/// Reads up to `len` bytes at `offset` into a new buffer, without zeroing it first
/// (docs/performance.md, "Read buffers"); an error at the end of the file.
fn read_chunk(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut buf = bytes::BytesMut::with_capacity(len);
    // SAFETY: pread writes at most `len` bytes into the buffer's spare capacity, which is
    // at least `len` long and borrowed for the call, and the length is set to what it wrote.
    let n = loop {
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.spare_capacity_mut().as_mut_ptr().cast(),
                len,
                offset as libc::off_t,
            )
        };
        if n >= 0 {
            break n;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    match n {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob file is shorter than it was when opened",
        )),
        n => {
            // SAFETY: the first `n` bytes were just written by pread.
            unsafe { buf.set_len(n as usize) };
            Ok(buf.freeze())
        }
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for FsBlobStore {
    /// The root's `blobs` and `uploads` directories exist, and `uploads` may be written
    /// (`access(2)`: refused on a read-only filesystem, even to root).
    async fn reachable(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            for dir in ["blobs", "uploads"] {
                let path = root.join(dir);
                let meta = std::fs::metadata(&path).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                })?;
                if !meta.is_dir() {
                    return Err(std::io::Error::other(format!(
                        "{} is not a directory",
                        path.display()
                    )));
                }
            }
            let uploads = root.join("uploads");
            let c = std::ffi::CString::new(uploads.as_os_str().as_encoded_bytes())
                .map_err(std::io::Error::other)?;
            // SAFETY: a NUL-terminated path, valid for the call.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{} is not writable: {e}", uploads.display()),
                ));
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
        .map_err(StorageError::Io)
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobReader, StorageError> {
        let file = self.open_blob(digest).await?;
        let total = file.metadata()?.len();
        let range = match range {
            Some(r) => {
                check_range(&r, total)?;
                r
            }
            None => 0..total,
        };
        let len = range.end - range.start;
        // One blocking loop per response reads straight into the buffers the response
        // sends (no second copy, as tokio's File would make), one buffer ahead.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
        let active = Active::start(&self.active_reads);
        tokio::task::spawn_blocking(move || {
            let mut pos = range.start;
            while pos < range.end {
                let n = ((range.end - pos) as usize).min(active.share(
                    READ_BUDGET,
                    READ_BUF_MIN,
                    READ_BUF,
                ));
                let item = read_chunk(&file, pos, n).inspect(|buf| pos += buf.len() as u64);
                let failed = item.is_err();
                // The receiver is gone when the client hung up: stop reading.
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(BlobReader { body, len, total })
    }

    async fn open_file(&self, digest: &Digest) -> Result<Option<std::fs::File>, StorageError> {
        self.open_blob(digest).await.map(Some)
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(()),
            Err(e) => not_found_as(e, || StorageError::BlobNotFound(digest.clone())),
        }
    }

    fn space(&self) -> Option<Space> {
        Some(Space {
            free_bytes: self.free.get(&self.root)?,
            min_free_bytes: self.min_free_bytes,
        })
    }

    async fn upload_start(&self, id: &str) -> Result<Vec<u8>, StorageError> {
        if let Some(space) = self.space().filter(Space::low) {
            return Err(StorageError::LowSpace {
                free: space.free_bytes,
                min: space.min_free_bytes,
            });
        }
        let path = self.upload_path(id)?;
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            std::fs::File::create(&path)?;
            // The session is acknowledged once this returns, so the file's name must be
            // durable too, not only the bytes later appended to it.
            fsync_dir(path.parent().expect("upload paths have a parent"))?;
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        // The file's length is all the state there is.
        Ok(Vec::new())
    }

    async fn upload_append(
        &self,
        id: &str,
        _state: &mut Vec<u8>,
        offset: u64,
        mut data: ByteStream,
        hasher: &mut Hasher,
    ) -> Result<u64, StorageError> {
        let path = self.upload_path(id)?;
        let id_owned = id.to_string();
        // A blocking thread writes while this task receives (and hashes, see
        // [`HASH_INLINE`]), so the network, the hash and the disk overlap.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(16);
        let appends = Active::start(&self.active_appends);
        let solo = appends.count() <= self.solo_max;
        let io = if solo { self.io } else { UploadIo::Buffered };
        let writer = tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            let mut open = std::fs::OpenOptions::new();
            open.read(true).write(true);
            if io == UploadIo::Direct {
                open.custom_flags(libc::O_DIRECT);
            }
            let f = match open.open(&path) {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::UploadNotFound(id_owned)),
            };
            // One writer per upload file at a time, across processes too: a request whose
            // client went away gives its claim on the session up at once, while its writer
            // still drains what it had received (and then pads and cuts the file), so the
            // retry's writer waits for it here. Released when `f` is closed.
            lock_exclusive(&f)?;
            let have = f.metadata()?.len();
            if have < offset {
                return Err(StorageError::UploadShort {
                    id: id_owned,
                    expected: offset,
                    actual: have,
                });
            }
            if have > offset {
                f.set_len(offset)?;
            }
            let sink = match io {
                UploadIo::Buffered => {
                    let mut w = &f;
                    w.seek(SeekFrom::Start(offset))?;
                    Sink::Buffered(&f)
                }
                UploadIo::Direct => Sink::Direct(DirectWriter::new(&f, offset, DIRECT_BUF)?),
            };
            match write_durably(&f, sink, &mut rx) {
                Ok(written) => Ok(written),
                Err(e) => {
                    // Back to what was acknowledged, at once (not at the next append): on
                    // a full disk this gives the room the failed request took back.
                    if let Err(cut) = f.set_len(offset) {
                        tracing::warn!(upload = %id_owned, error = %cut, "cannot cut a failed upload back to its acknowledged length");
                    }
                    Err(e.into())
                }
            }
        });
        let mut hash_thread = None;
        let mut received = 0u64;
        let mut body_error = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(chunk) => {
                    // Bytes received but not yet written count against the budget all
                    // uploads share; when the disk is slow, the socket waits, not memory.
                    let n = chunk.len().clamp(1, UPLOAD_BUFFER) as u32;
                    let Ok(permit) = self.upload_buffer.clone().acquire_many_owned(n).await else {
                        break; // never closed
                    };
                    let permit = Arc::new(permit);
                    // The writer gets each chunk before it is hashed, so the disk starts
                    // on a request's first bytes one hash sooner.
                    if tx.send((chunk.clone(), permit.clone())).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    received += chunk.len() as u64;
                    if solo && hash_thread.is_none() && received > HASH_INLINE {
                        hash_thread = Some(spawn_hasher(std::mem::replace(
                            hasher,
                            Hasher::new(hasher.algorithm()),
                        )));
                    }
                    match &hash_thread {
                        Some((hash_tx, _)) => {
                            if hash_tx.send((chunk, permit)).await.is_err() {
                                break; // the hasher panicked; reported below
                            }
                        }
                        None => hasher.update(&chunk),
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let hashed = hash_thread.map(|(hash_tx, handle)| {
            drop(hash_tx);
            handle
        });
        let written = writer
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .inspect_err(|e| {
                if e.is_out_of_space() {
                    self.free.forget();
                }
            });
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                drain(&mut data).await;
                return Err(e);
            }
        };
        if let Some(handle) = hashed {
            *hasher = handle
                .await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        }
        if let Some(e) = body_error {
            return Err(StorageError::Body(e));
        }
        Ok(written)
    }

    async fn upload_commit(
        &self,
        id: &str,
        _state: &[u8],
        size: u64,
        digest: &Digest,
        verify: Verify,
    ) -> Result<(), StorageError> {
        let upload = self.upload_path(id)?;
        let target = self.blob_path(digest);
        let id = id.to_string();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut f = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&upload)
            {
                Ok(f) => f,
                Err(e) => return not_found_as(e, || StorageError::UploadNotFound(id)),
            };
            // After any writer still draining an abandoned request (see `upload_append`).
            lock_exclusive(&f)?;
            let have = f.metadata()?.len();
            if have < size {
                return Err(StorageError::UploadShort {
                    id,
                    expected: size,
                    actual: have,
                });
            }
            if have > size {
                // Bytes of an unacknowledged request: cut them, durably.
                f.set_len(size)?;
                f.sync_all()?;
            }
            if verify == Verify::Rehash {
                let mut h = Hasher::new(digest.algorithm());
                let mut buf = vec![0u8; READ_BUF];
                f.seek(SeekFrom::Start(0))?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let actual = h.finish();
                if actual != digest {
                    return Err(StorageError::DigestMismatch {
                        expected: digest,
                        actual,
                    });
                }
            }
            // Every acknowledged append was fsynced already.
            drop(f);
            let dir = target.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&upload, &target)?;
            // The rename, and the entries of `<alg>/` and `<hex[0..2]>/` if this commit (or
            // a concurrent one in another process) just created them.
            for d in dir.ancestors().take(3) {
                fsync_dir(d)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }

    async fn upload_abort(&self, id: &str, _state: &[u8]) -> Result<(), StorageError> {
        let path = self.upload_path(id)?;
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn purge_orphan_uploads(
        &self,
        before: i64,
        live: &HashSet<String>,
    ) -> Result<u64, StorageError> {
        let dir = self.root.join("uploads");
        let live = live.clone();
        tokio::task::spawn_blocking(move || -> Result<u64, StorageError> {
            let cutoff =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(before.max(0) as u64);
            let mut removed = 0;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if live.contains(&name) {
                    continue;
                }
                let modified = entry.metadata()?.modified()?;
                if modified < cutoff {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }
}
