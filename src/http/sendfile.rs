//! Zero-copy blob responses on plain-HTTP/1 connections: the kernel sends file pages
//! straight to the socket (`sendfile(2)`) instead of Berth reading them into buffers and
//! writing the buffers out (two copies and a blocking thread per response).
//!
//! hyper owns the connection and writes whatever body frames it is given, so the zero-copy
//! body hands hyper *placeholder* frames: slices of one large zeroed allocation that is never
//! written to or read from. When the body yields a placeholder frame it queues the file
//! region the frame stands for on the connection's [`FileRegions`]; when hyper writes a
//! placeholder slice, [`SendfileStream`] sends that region from the file instead. hyper's
//! vectored write strategy (chosen because the stream reports vectored writes) queues body
//! frames by reference, so the slices it writes are the very ones the body yielded, in order,
//! and every placeholder write must match the front region's length exactly; anything else is
//! an error that closes the connection rather than sending wrong bytes.
//!
//! Only HTTP/1 on plain TCP: TLS encrypts in user space and HTTP/2 frames its own data.
//!
//! `sendfile` reads the file's pages on the thread that calls it, a runtime worker, so a
//! frame whose pages are not all in the page cache and up to date (`resident`) is first
//! read from disk on a blocking thread: warm blobs go straight out, and cold ones do not
//! stall other requests on the disk (docs/performance.md, "Cold blobs and sendfile").

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use axum_server::accept::Accept;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tower_http::add_extension::AddExtension;

/// Bytes one placeholder frame (and one region) stands for. Large frames mean few polls of
/// the body; the kernel sends what the socket buffer takes per call either way.
const FRAME: usize = 4 << 20;

/// The placeholder bytes. Allocated zeroed (fresh pages from the kernel) and never touched,
/// so they cost address space, not memory.
fn placeholder() -> &'static [u8] {
    static PLACEHOLDER: OnceLock<&'static [u8]> = OnceLock::new();
    PLACEHOLDER.get_or_init(|| Box::leak(vec![0u8; FRAME].into_boxed_slice()))
}

fn is_placeholder(buf: &[u8]) -> bool {
    let p = placeholder().as_ptr_range();
    let b = buf.as_ptr_range();
    !buf.is_empty() && b.start >= p.start && b.end <= p.end
}

/// One placeholder frame's bytes: where they really come from.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: usize,
}

/// The regions a connection's zero-copy bodies have yielded and its stream has not sent yet,
/// in order. Bodies and the stream of one connection run in the same task; the lock is
/// never contended.
#[derive(Default)]
pub struct FileRegions(Mutex<VecDeque<Region>>);

impl FileRegions {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Region>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Request extension: the request came on a connection that can send files zero-copy.
#[derive(Clone)]
pub struct ZeroCopy(Arc<FileRegions>);

impl ZeroCopy {
    /// A response body of `len` bytes of `file` from `offset`, sent by the kernel.
    pub fn body(&self, file: File, offset: u64, len: u64) -> SendfileBody {
        // The kernel reads ahead further for files declared sequential.
        // SAFETY: advice only; the descriptor is open.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_SEQUENTIAL,
            );
        }
        SendfileBody {
            regions: self.0.clone(),
            file: Arc::new(file),
            offset,
            remaining: len,
            warming: None,
            resident_next: false,
        }
    }
}

/// A response body whose bytes the connection's [`SendfileStream`] sends from a file.
pub struct SendfileBody {
    regions: Arc<FileRegions>,
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    /// A frame being read into the page cache on a blocking thread: the one at `offset`,
    /// which was not resident, or (started when the frame before it was yielded) the
    /// next one, read while the one before is sent.
    warming: Option<Warming>,
    /// The frame at `offset` was found resident when the one before it was yielded (it is
    /// not asked again: `sendfile` reads what went missing since itself).
    resident_next: bool,
}

/// A frame being read into the page cache.
struct Warming {
    offset: u64,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Warming {
    fn start(file: &Arc<File>, offset: u64, len: usize) -> Warming {
        let file = file.clone();
        Warming {
            offset,
            task: tokio::task::spawn_blocking(move || warm(&file, offset, len)),
        }
    }
}

/// Whether `len` bytes of `file` from `offset` can be sent without waiting for the disk.
/// `cachestat(2)` counts the range's pages in the page cache, but pages still being read
/// count too, so the first and last byte are also read with `RWF_NOWAIT`, which fails when
/// its page is not up to date (read-ahead in flight). Without `cachestat` (before Linux 6.5),
/// `mincore(2)`, which reports up-to-date pages only. `true` when it cannot tell (the send
/// then reads what is missing itself).
fn resident(file: &File, offset: u64, len: usize) -> bool {
    let page = page_size();
    let start = offset & !(page - 1);
    let span = offset + len as u64 - start;
    match cached_pages(file, start, span) {
        Some(cached) if cached < span.div_ceil(page) => false,
        _ => ready_now(file, offset) && ready_now(file, offset + len as u64 - 1),
    }
}

/// The system's page size (the unit of `cachestat` and `mincore`, and of mapping offsets).
fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system value.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Reads the byte at `pos` only if its page is in the page cache and up to date.
fn ready_now(file: &File, pos: u64) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: one iovec over a local byte, valid for the call.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            pos as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}

/// Pages of the range in the page cache: `cachestat(2)` (Linux 6.5), else `mincore(2)` on a
/// mapping of the range; `None` when neither can tell.
fn cached_pages(file: &File, start: u64, span: u64) -> Option<u64> {
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
    static NO_CACHESTAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !NO_CACHESTAT.load(std::sync::atomic::Ordering::Relaxed) {
        let range = Range {
            off: start,
            len: span,
        };
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
            return Some(stat.nr_cache);
        }
        NO_CACHESTAT.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let map_len = span as usize;
    // SAFETY: a fresh read-only shared mapping of an open file, only passed to mincore
    // (which touches no page) and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            start as libc::off_t,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        let mut pages = vec![0u8; map_len.div_ceil(page_size() as usize)];
        let known = libc::mincore(p, map_len, pages.as_mut_ptr()) == 0;
        libc::munmap(p, map_len);
        known.then(|| pages.iter().filter(|v| *v & 1 == 1).count() as u64)
    }
}

/// Reads `len` bytes of `file` from `offset` (into a scratch buffer, discarded) so that
/// they are in the page cache when `sendfile` wants them. Blocking.
fn warm(file: &File, offset: u64, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut scratch = vec![0u8; 256 * 1024];
    let (mut pos, end) = (offset, offset + len as u64);
    while pos < end {
        let n = scratch.len().min((end - pos) as usize);
        file.read_exact_at(&mut scratch[..n], pos)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => shorter_than_opened(),
                _ => e,
            })?;
        pos += n as u64;
    }
    Ok(())
}

impl Body for SendfileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = this.remaining.min(FRAME as u64) as usize;
        loop {
            // Always this frame's: started for it below, or for it as the next frame
            // while the one before was sent (offsets only advance by yielded frames).
            if let Some(w) = this.warming.as_mut() {
                let warmed = ready!(Pin::new(&mut w.task).poll(cx));
                debug_assert_eq!(w.offset, this.offset);
                this.warming = None;
                match warmed {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                }
            }
            if std::mem::take(&mut this.resident_next) || resident(&this.file, this.offset, len) {
                break;
            }
            this.warming = Some(Warming::start(&this.file, this.offset, len));
        }
        // A next frame not all in the page cache is read while this one is sent, so that a
        // cold blob's disk reads and its sending overlap instead of taking turns.
        let next = this.offset + len as u64;
        let next_len = (this.remaining - len as u64).min(FRAME as u64) as usize;
        if next_len > 0 {
            this.resident_next = resident(&this.file, next, next_len);
            if !this.resident_next {
                this.warming = Some(Warming::start(&this.file, next, next_len));
            }
        }
        this.regions.lock().push_back(Region {
            file: this.file.clone(),
            offset: this.offset,
            len,
        });
        this.offset += len as u64;
        this.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &placeholder()[..len],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A plain TCP connection that sends placeholder slices from their files.
pub struct SendfileStream {
    tcp: TcpStream,
    regions: Arc<FileRegions>,
}

impl SendfileStream {
    /// Sends up to `want` bytes (the length of the placeholder slice at the front of the
    /// write) of the front region.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let mut regions = self.regions.lock();
        let Some(region) = regions.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "zero-copy send: a placeholder was written with no file region queued",
            )));
        };
        if region.len != want {
            return Poll::Ready(Err(io::Error::other(format!(
                "zero-copy send out of step: {want} placeholder bytes written, {} queued",
                region.len
            ))));
        }
        let sent = ready!(poll_write_with(&self.tcp, cx, || {
            let mut offset = region.offset as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call; the kernel
            // advances `offset` and returns the bytes sent.
            syscall_len(unsafe {
                libc::sendfile(
                    self.tcp.as_raw_fd(),
                    region.file.as_raw_fd(),
                    &mut offset,
                    region.len,
                )
            })
        }))?;
        if sent == 0 {
            return Poll::Ready(Err(shorter_than_opened()));
        }
        region.offset += sent as u64;
        region.len -= sent;
        if region.len == 0 {
            regions.pop_front();
        }
        Poll::Ready(Ok(sent))
    }

    /// Writes the leading ordinary slices of `bufs` (a response head before its body).
    /// When placeholder bytes follow, the kernel is told more is coming (`MSG_MORE`) so that
    /// the head leaves in the same packet as the first file bytes.
    fn poll_write_plain(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        more: bool,
    ) -> Poll<io::Result<usize>> {
        if !more {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        poll_write_with(&self.tcp, cx, || {
            // SAFETY: a zeroed msghdr is valid; the iovecs point at `bufs`, which outlive the
            // call (IoSlice is ABI-compatible with iovec on Unix).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            syscall_len(unsafe {
                libc::sendmsg(
                    self.tcp.as_raw_fd(),
                    &msg,
                    libc::MSG_MORE | libc::MSG_NOSIGNAL,
                )
            })
        })
    }
}

/// Runs the write `f` on `tcp` once it is writable, again whenever it would block or was
/// interrupted.
fn poll_write_with(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut f: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match tcp.try_io(Interest::WRITABLE, &mut f) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            done => return Poll::Ready(done),
        }
    }
}

/// A system call's byte count, or the error it set.
fn syscall_len(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn shorter_than_opened() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob file is shorter than it was when opened",
    )
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_placeholder(buf) {
            self.poll_sendfile(cx, buf.len())
        } else {
            Pin::new(&mut self.tcp).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let bufs = &bufs[first..];
        if is_placeholder(&bufs[0]) {
            return self.poll_sendfile(cx, bufs[0].len());
        }
        match bufs.iter().position(|b| is_placeholder(b)) {
            Some(end) => self.poll_write_plain(cx, &bufs[..end], true),
            None => self.poll_write_plain(cx, bufs, false),
        }
    }

    /// hyper picks its write strategy from this: `true` makes it queue body frames by
    /// reference (which zero-copy relies on) instead of copying them into one buffer.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Accepts plain TCP connections as [`SendfileStream`]s and marks their requests with
/// [`ZeroCopy`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SendfileAcceptor;

impl<S> Accept<TcpStream, S> for SendfileAcceptor {
    type Stream = SendfileStream;
    type Service = AddExtension<S, ZeroCopy>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, tcp: TcpStream, service: S) -> Self::Future {
        // A response head is written before its file bytes; without NODELAY a short last
        // segment could wait for the client's delayed acknowledgement.
        let result = tcp.set_nodelay(true).map(|()| {
            let regions = Arc::new(FileRegions::default());
            let service = AddExtension::new(service, ZeroCopy(regions.clone()));
            (SendfileStream { tcp, regions }, service)
        });
        std::future::ready(result)
    }
}
