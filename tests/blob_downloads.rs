//! Blob downloads as bytes on the wire: big blobs (several of the zero-copy path's 4 MiB
//! frames), ranges across frame boundaries, pipelined and mixed requests on one HTTP/1.1
//! connection, a client hanging up mid-blob, concurrent downloads — with `sendfile` on (the
//! default for plain HTTP on the filesystem store) and off (Berth's own buffers).

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Bigger than two 4 MiB frames, and not a multiple of anything.
const BIG: usize = 9 * 1024 * 1024 + 12_345;

fn sendfile_off() -> Berth {
    Berth::start_with(Options {
        env: vec![("BERTH_SERVER__SENDFILE".into(), "false".into())],
        ..Options::default()
    })
}

/// One response read off a raw connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 response with a Content-Length body (`head`: a response to HEAD, whose
/// Content-Length describes a body that is not sent).
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>, head: bool) -> RawResponse {
    let mut buf = [0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).expect("read response head");
        assert!(n > 0, "connection closed before a response head");
        pending.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8(pending[..end].to_vec()).expect("head is text");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    pending.drain(..end);
    let mut r = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = if head {
        0
    } else {
        r.header("content-length")
            .expect("responses here have a Content-Length")
            .parse()
            .expect("numeric Content-Length")
    };
    while pending.len() < len {
        let n = s.read(&mut buf).expect("read response body");
        assert!(
            n > 0,
            "connection closed {} bytes into a {len}-byte body",
            pending.len()
        );
        pending.extend_from_slice(&buf[..n]);
    }
    r.body = pending.drain(..len).collect();
    r
}

fn connect(b: &Berth) -> TcpStream {
    let s = TcpStream::connect(b.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

async fn pulls_big_blobs_whole_and_in_ranges(b: Berth) {
    let c = client();
    let big = pattern(BIG, 41);
    let digest = push_blob(&c, &b, "dl/big", &big).await;

    for round in 0..2 {
        let r = c
            .get(b.url(&format!("/v2/dl/big/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(header_str(&r, "content-length"), BIG.to_string());
        assert_eq!(header_str(&r, "docker-content-digest"), digest);
        let got = r.bytes().await.unwrap();
        assert_eq!(got.len(), BIG);
        assert_eq!(sha256(&got), digest, "round {round}: whole blob");
    }

    // Ranges that start, cross and end on the 4 MiB frame boundaries.
    let mib4 = 4 * 1024 * 1024;
    for (start, end) in [
        (0, 0),
        (mib4 - 10, mib4 + 10),
        (mib4, 2 * mib4 - 1),
        (1, BIG - 2),
        (2 * mib4 - 1, BIG - 1),
    ] {
        let r = c
            .get(b.url(&format!("/v2/dl/big/blobs/{digest}")))
            .header("range", format!("bytes={start}-{end}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "range {start}-{end}");
        assert_eq!(
            header_str(&r, "content-range"),
            format!("bytes {start}-{end}/{BIG}")
        );
        let got = r.bytes().await.unwrap();
        assert!(
            got[..] == big[start..=end],
            "range {start}-{end} bytes differ"
        );
    }
}

#[tokio::test]
async fn big_blob_and_its_ranges_come_back_byte_for_byte() {
    pulls_big_blobs_whole_and_in_ranges(Berth::start()).await;
}

#[tokio::test]
async fn big_blob_and_its_ranges_come_back_byte_for_byte_without_sendfile() {
    pulls_big_blobs_whole_and_in_ranges(sendfile_off()).await;
}

async fn pipelined_requests_get_their_own_answers_in_order(b: Berth) {
    let c = client();
    let big = pattern(BIG, 42);
    let small = pattern(3000, 43);
    let big_digest = push_blob(&c, &b, "dl/pipe", &big).await;
    let small_digest = push_blob(&c, &b, "dl/pipe", &small).await;
    let missing = sha256(b"never pushed");

    let mut s = connect(&b);
    let host = b.host();
    let get =
        |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    // Six requests in one write: zero-copy bodies, ordinary bodies, an error, a HEAD.
    let requests = [
        get(&format!("/v2/dl/pipe/blobs/{big_digest}"), ""),
        get("/v2/", ""),
        get(
            &format!("/v2/dl/pipe/blobs/{small_digest}"),
            "Range: bytes=100-199\r\n",
        ),
        get(&format!("/v2/dl/pipe/blobs/{missing}"), ""),
        format!("HEAD /v2/dl/pipe/blobs/{big_digest} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        get(&format!("/v2/dl/pipe/blobs/{small_digest}"), ""),
    ]
    .concat();
    s.write_all(requests.as_bytes()).unwrap();

    let mut pending = Vec::new();
    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG);
    assert_eq!(sha256(&r.body), big_digest, "first response: the big blob");

    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}", "second response: the API base");

    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/3000"));
    assert_eq!(
        r.body,
        small[100..200],
        "third response: a range of the small blob"
    );

    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status, 404);
    let err: serde_json::Value = serde_json::from_slice(&r.body).expect("error body is JSON");
    assert_eq!(err["errors"][0]["code"], "BLOB_UNKNOWN");

    let r = read_response(&mut s, &mut pending, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));

    let r = read_response(&mut s, &mut pending, false);
    assert_eq!(r.status, 200);
    assert_eq!(
        sha256(&r.body),
        small_digest,
        "last response: the small blob"
    );
    assert!(pending.is_empty(), "no bytes after the last response");
}

#[tokio::test]
async fn pipelined_requests_get_their_own_answers_in_order_with_sendfile() {
    pipelined_requests_get_their_own_answers_in_order(Berth::start()).await;
}

#[tokio::test]
async fn pipelined_requests_get_their_own_answers_in_order_without_sendfile() {
    pipelined_requests_get_their_own_answers_in_order(sendfile_off()).await;
}

#[tokio::test]
async fn client_hanging_up_mid_blob_leaves_the_server_serving() {
    let b = Berth::start();
    let c = client();
    let big = pattern(BIG, 44);
    let digest = push_blob(&c, &b, "dl/hangup", &big).await;
    let host = b.host();
    for _ in 0..5 {
        let mut s = connect(&b);
        s.write_all(
            format!("GET /v2/dl/hangup/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut some = [0u8; 1024];
        assert!(s.read(&mut some).unwrap() > 0);
        drop(s);
    }
    let r = c
        .get(b.url(&format!("/v2/dl/hangup/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn concurrent_downloads_each_get_the_whole_blob() {
    let b = Berth::start();
    let c = client();
    let blobs: Vec<Vec<u8>> = (0..3)
        .map(|i| pattern(BIG - i * 1000, 50 + i as u64))
        .collect();
    let mut digests = Vec::new();
    for blob in &blobs {
        digests.push(push_blob(&c, &b, "dl/many", blob).await);
    }
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = b.url(&format!("/v2/dl/many/blobs/{}", digests[i % 3]));
        // A client each, so that every download has its own connection.
        tasks.push(tokio::spawn(async move {
            let r = client().get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            sha256(&r.bytes().await.unwrap())
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), digests[i % 3], "download {i}");
    }
}

/// Pages of `path` in the page cache, out of all its pages.
fn cached_pages(path: &std::path::Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open blob file");
    let len = f.metadata().unwrap().len() as usize;
    let mut pages = vec![0u8; len.div_ceil(4096)];
    // SAFETY: a read-only mapping of an open file, passed to mincore only, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap blob file");
        assert_eq!(libc::mincore(p, len, pages.as_mut_ptr()), 0, "mincore");
        libc::munmap(p, len);
    }
    (pages.iter().filter(|v| *v & 1 == 1).count(), pages.len())
}

/// Drops a file's (clean) pages from the page cache.
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open blob file");
    // SAFETY: advice on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED)");
}

/// A blob that is not in the page cache is read from disk (off the runtime's workers) and
/// still arrives whole, as do ranges of it.
#[tokio::test]
async fn blob_not_in_the_page_cache_comes_back_whole() {
    let b = Berth::start();
    if b.options.s3 {
        return; // no local file to evict
    }
    let c = client();
    let big = pattern(BIG, 45);
    let digest = push_blob(&c, &b, "dl/cold", &big).await;
    let path = b.blob_path(&digest);
    evict(&path);
    let (cached, total) = cached_pages(&path);
    assert!(
        cached < total / 2,
        "could not evict the blob from the page cache ({cached} of {total} pages stay)"
    );
    let r = c
        .get(b.url(&format!("/v2/dl/cold/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);

    evict(&path);
    let (start, end) = (5 * 1024 * 1024 + 7, BIG - 3);
    let r = c
        .get(b.url(&format!("/v2/dl/cold/blobs/{digest}")))
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let got = r.bytes().await.unwrap();
    assert!(got[..] == big[start..=end], "cold range bytes differ");
}
