//! Whole-blob GETs as the pull scenarios time them, on a connection of their own (raw
//! HTTP/1.1, `Connection: close`, redirects followed), with one of two receivers:
//!
//! - [`Receiver::Copy`]: the body is read with `read(2)` (through rustls over https) into
//!   one 1 MiB buffer in user space and counted, as containerd's content writer reads a
//!   layer; with a digest to check, it is also hashed (SHA-256) and the digest and size
//!   compared. This is what a pulling client pays, and what the pull checks are held on.
//! - [`Receiver::Splice`]: plain http only. The body goes from the socket into a pipe
//!   and from the pipe into `/dev/null` with `splice(2)`, never copied to user space. On a
//!   2-core machine a copying client shares the cores with the server, and this one does
//!   not: it shows what the server alone can send, not what a client sees.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::client::{LARGE_TIMEOUT, Net, Registry, check_loopback};

/// The copying receiver's buffer (containerd's content writer copies in 1 MiB reads).
pub const COPY_BUFFER: usize = 1 << 20;
/// Bytes moved per `splice` call (and the pipe's size when the system allows it).
const STEP: usize = 1 << 20;
/// The most a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// How long the copying receiver waits, when it checks a digest, for the server to close
/// the connection after the body (bytes past `Content-Length` are an error).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How a whole-blob GET receives its body.
#[derive(Clone, Debug)]
pub enum Receiver {
    /// Read into a 1 MiB user-space buffer; with `digest` (`sha256:<hex>`), hashed and
    /// compared with it.
    Copy { digest: Option<String> },
    /// Spliced to `/dev/null` in the kernel (plain http only).
    Splice,
}

/// What a response head says to do next.
enum Next {
    /// A body of this length follows.
    Body(u64),
    /// Follow the redirect to this (absolute) URL.
    Redirect(String),
}

/// GETs `url` (http or https), following up to 5 redirects to allowed hosts, and receives
/// the body with `receiver`; returns the body's length, which must be `want`.
/// Credentials go only to the registry's own base URL, as reqwest does on a redirect to
/// another origin.
pub async fn get(reg: &Registry, url: &str, want: u64, receiver: &Receiver) -> Result<u64> {
    tokio::time::timeout(LARGE_TIMEOUT, async {
        let mut url = url.to_string();
        for _ in 0..=5 {
            let https = url.starts_with("https://");
            let (tcp, host) = connect(&url).await?;
            let req = request_text(reg, &url).await?;
            let got = match (https, receiver) {
                (true, Receiver::Splice) => {
                    bail!("GET {url}: the splice receiver takes plain http only")
                }
                (true, Receiver::Copy { digest }) => {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .with_context(|| format!("GET {url}: {host:?} is no TLS server name"))?;
                    let mut tls = tokio_rustls::TlsConnector::from(Net::get().tls.clone())
                        .connect(name, tcp)
                        .await
                        .with_context(|| format!("GET {url}: TLS handshake"))?;
                    match exchange(&mut tls, &req, &url, want, reg).await? {
                        (Next::Body(len), early) => {
                            copy_body(&mut tls, early, len, digest.as_deref(), &url).await?
                        }
                        (Next::Redirect(to), _) => {
                            url = to;
                            continue;
                        }
                    }
                }
                (false, receiver) => {
                    let mut tcp = tcp;
                    match (exchange(&mut tcp, &req, &url, want, reg).await?, receiver) {
                        ((Next::Redirect(to), _), _) => {
                            url = to;
                            continue;
                        }
                        ((Next::Body(len), early), Receiver::Copy { digest }) => {
                            copy_body(&mut tcp, early, len, digest.as_deref(), &url).await?
                        }
                        ((Next::Body(len), early), Receiver::Splice) => {
                            let already = early.len() as u64;
                            if already > len {
                                bail!("GET {url}: more body than Content-Length {len}");
                            }
                            splice_away(&tcp, len - already)
                                .await
                                .with_context(|| format!("GET {url}: reading the body"))?;
                            len
                        }
                    }
                }
            };
            return Ok(got);
        }
        bail!("GET {url}: more than 5 redirects")
    })
    .await
    .with_context(|| format!("GET {url}: exceeded {} s", LARGE_TIMEOUT.as_secs()))?
}

/// A TCP connection to `url`'s host (which must be allowed), and the host's name.
async fn connect(url: &str) -> Result<(TcpStream, String)> {
    check_loopback(url)?;
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().context("URL without a host")?;
    let port = u.port_or_known_default().context("URL without a port")?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if ip == "localhost" { "127.0.0.1" } else { ip };
    let stream = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_nodelay(true)?;
    Ok((stream, ip.to_string()))
}

/// The GET request's text for `url`, with the registry's credentials when `url` is the
/// registry's own.
async fn request_text(reg: &Registry, url: &str) -> Result<String> {
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().context("URL without a host")?;
    let port = u.port_or_known_default().context("URL without a port")?;
    let mut req = format!(
        "GET {}{} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nConnection: close\r\n",
        u.path(),
        u.query().map(|q| format!("?{q}")).unwrap_or_default()
    );
    let auth = if url.starts_with(&reg.base) {
        reg.auth_for(url).await?
    } else {
        None
    };
    if let Some(auth) = auth {
        req.push_str("Authorization: ");
        req.push_str(auth.to_str().context("credentials are not text")?);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    Ok(req)
}

/// Sends `req` and reads the response head: what to do next, and the body bytes that
/// arrived with the head.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    req: &str,
    url: &str,
    want: u64,
    reg: &Registry,
) -> Result<(Next, Vec<u8>)> {
    stream
        .write_all(req.as_bytes())
        .await
        .with_context(|| format!("GET {url}: sending the request"))?;
    stream.flush().await?;
    // Read the head in small pieces, so that little of the body lands here.
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("GET {url}: response head over {MAX_HEAD} bytes");
        }
        let mut piece = [0u8; 4096];
        let n = stream
            .read(&mut piece)
            .await
            .with_context(|| format!("GET {url}: reading the response head"))?;
        if n == 0 {
            bail!("GET {url}: connection closed before the response head ended");
        }
        buf.extend_from_slice(&piece[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("GET {url}: bad status line"))?;
    let early = buf[end..].to_vec();
    let next = match status {
        200 => {
            let len: u64 = header(&head, "content-length")
                .with_context(|| format!("GET {url}: no Content-Length"))?
                .parse()
                .with_context(|| format!("GET {url}: bad Content-Length"))?;
            if len != want {
                bail!("GET {url}: Content-Length {len}, expected {want}");
            }
            Next::Body(len)
        }
        301 | 302 | 303 | 307 | 308 => {
            let location = header(&head, "location")
                .with_context(|| format!("GET {url}: redirect without Location"))?;
            Next::Redirect(reg.resolve(&location)?)
        }
        s => bail!(
            "GET {url}: expected 200, got {s}: {}",
            head.lines().next().unwrap_or("")
        ),
    };
    Ok((next, early))
}

/// Reads a body of `len` bytes (`early` of them already read) into one [`COPY_BUFFER`],
/// counting them; with `digest`, hashes them, compares, and checks that nothing follows
/// the body. Returns `len`.
async fn copy_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    early: Vec<u8>,
    len: u64,
    digest: Option<&str>,
    url: &str,
) -> Result<u64> {
    let mut got = early.len() as u64;
    if got > len {
        bail!("GET {url}: more body than Content-Length {len}");
    }
    let mut hasher = digest.map(|_| Sha256::new());
    if let Some(h) = hasher.as_mut() {
        h.update(&early);
    }
    let mut buf = vec![0u8; COPY_BUFFER];
    while got < len {
        let room = (len - got).min(COPY_BUFFER as u64) as usize;
        let n = stream
            .read(&mut buf[..room])
            .await
            .with_context(|| format!("GET {url}: reading the body after {got} of {len} bytes"))?;
        if n == 0 {
            bail!("GET {url}: the body ended after {got} of {len} bytes (Content-Length {len})");
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        got += n as u64;
    }
    let (Some(want), Some(h)) = (digest, hasher) else {
        return Ok(len);
    };
    // The server closes after the body (`Connection: close`): anything more is an error.
    if let Ok(Ok(n @ 1..)) = tokio::time::timeout(CLOSE_WAIT, stream.read(&mut buf[..1])).await {
        bail!("GET {url}: more than Content-Length {len} bytes (at least {n} past the end)");
    }
    let seen = format!("sha256:{}", hex::encode(h.finalize()));
    if seen != want {
        bail!("GET {url}: the body's digest is {seen}, expected {want} ({len} bytes)");
    }
    Ok(len)
}

/// A header's value from a response head (names compared case-insensitively).
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Moves `left` bytes from the socket to /dev/null through a pipe.
async fn splice_away(stream: &TcpStream, mut left: u64) -> Result<()> {
    let (pipe_r, pipe_w) = pipe()?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let sock = stream.as_raw_fd();
    while left > 0 {
        stream.readable().await?;
        let step = left.min(STEP as u64) as usize;
        // The pipe is empty here (each step is drained below), so only the socket can
        // make this call wait; tokio then waits for it to be readable again.
        match stream.try_io(Interest::READABLE, || {
            splice(sock, pipe_w.as_raw_fd(), step, libc::SPLICE_F_NONBLOCK)
        }) {
            Ok(0) => bail!("the server closed the connection with {left} bytes to go"),
            Ok(n) => {
                let mut moved = 0;
                while moved < n {
                    moved += splice(pipe_r.as_raw_fd(), null.as_raw_fd(), n - moved, 0)?;
                }
                left -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn splice(from: RawFd, to: RawFd, len: usize, flags: libc::c_uint) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; no offsets (pipes and sockets).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A pipe (read end, write end), as large as the system lets it be up to [`STEP`].
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; a refusal leaves the default size, which works.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, STEP as libc::c_int) };
    Ok((r, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case_and_the_status_line() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nlocation: /x\r\n\r\n";
        assert_eq!(header(head, "content-length").as_deref(), Some("42"));
        assert_eq!(header(head, "Location").as_deref(), Some("/x"));
        assert_eq!(header(head, "http/1.1 200 ok"), None);
        assert_eq!(header(head, "etag"), None);
    }
}
