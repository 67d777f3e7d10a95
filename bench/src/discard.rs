//! A blob GET whose body the client never copies: the response head is read as usual, and
//! the body goes from the socket into a pipe and from the pipe into `/dev/null` with
//! `splice(2)`, inside the kernel.
//!
//! Why: on a 2-core machine the client shares the cores with the server, and a client that
//! copies every received byte into its own memory (reqwest, curl) tops out near what the
//! loopback then carries (1.2-1.7 GB/s on the machines of docs/performance.md), for every
//! server alike, so a 1 GiB pull measured the client. Received this way, the same servers
//! spread out (nginx's sendfile 2.5-6 GB/s, the reference 1.6-2 GB/s). Used for the timed
//! whole-blob GETs when `--verify` is not given (verifying needs the bytes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::client::{LARGE_TIMEOUT, Registry, check_loopback};

/// Bytes moved per `splice` call (and the pipe's size when the system allows it).
const STEP: usize = 1 << 20;
/// The most a response head may take.
const MAX_HEAD: usize = 64 * 1024;

/// GETs `url`, following up to 5 redirects on loopback, and discards the body; returns the
/// body's length, which must be `want`. Credentials go only to the registry's own base
/// URL, as reqwest does on a redirect to another origin.
pub async fn get_discard(reg: &Registry, url: &str, want: u64) -> Result<u64> {
    tokio::time::timeout(LARGE_TIMEOUT, async {
        let mut url = url.to_string();
        for _ in 0..=5 {
            let (status, head, body_start, stream) = request(reg, &url).await?;
            match status {
                200 => {
                    let len: u64 = header(&head, "content-length")
                        .with_context(|| format!("GET {url}: no Content-Length"))?
                        .parse()
                        .with_context(|| format!("GET {url}: bad Content-Length"))?;
                    if len != want {
                        bail!("GET {url}: Content-Length {len}, expected {want}");
                    }
                    let already = body_start as u64;
                    if already > len {
                        bail!("GET {url}: more body than Content-Length");
                    }
                    splice_away(&stream, len - already)
                        .await
                        .with_context(|| format!("GET {url}: reading the body"))?;
                    return Ok(len);
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = header(&head, "location")
                        .with_context(|| format!("GET {url}: redirect without Location"))?;
                    url = reg.resolve(&location)?;
                }
                s => bail!(
                    "GET {url}: expected 200, got {s}: {}",
                    head.lines().next().unwrap_or("")
                ),
            }
        }
        bail!("GET {url}: more than 5 redirects")
    })
    .await
    .context("a whole-blob GET exceeded its timeout")?
}

/// Sends the GET and reads the response head: the status, the head's text, how many body
/// bytes arrived with it, and the connection.
async fn request(reg: &Registry, url: &str) -> Result<(u16, String, usize, TcpStream)> {
    check_loopback(url)?;
    let u = reqwest::Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let host = u.host_str().context("URL without a host")?;
    let port = u.port_or_known_default().context("URL without a port")?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if ip == "localhost" { "127.0.0.1" } else { ip };
    let mut stream = TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_nodelay(true)?;
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
    stream.write_all(req.as_bytes()).await?;
    // Read the head in small pieces, so that little of the body lands in user memory.
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("GET {url}: response head over {MAX_HEAD} bytes");
        }
        let mut piece = [0u8; 4096];
        let n = stream.read(&mut piece).await?;
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
    Ok((status, head, buf.len() - end, stream))
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
