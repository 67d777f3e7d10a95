//! Connections cannot be hoarded: half-sent headers are cut off after the header timeout
//! (plain and TLS, where a handshake that never completes counts the same), idle
//! keep-alive connections are closed, the connection cap holds with the process's
//! descriptors bounded, and a request body that stops arriving fails its request and leaves
//! the upload resumable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raises this process's soft open-file limit to at least `want` (bounded by the hard
/// limit); returns the limit in force.
fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits (at most `within`) for the server to close `conn`: a read sees the end of the
/// stream or an error. Any bytes the server sends first (an error response) are skipped.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens `n` connections to `addr`, `batch` at a time (the listen backlog is short), each
/// having sent `prefix`. Bounded by `within`.
async fn open_many(
    addr: std::net::SocketAddr,
    n: usize,
    prefix: &'static [u8],
    within: Duration,
) -> Vec<TcpStream> {
    let deadline = Instant::now() + within;
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        assert!(
            Instant::now() < deadline,
            "opened only {} connections in {within:?}",
            conns.len()
        );
        let batch = (n - conns.len()).min(200);
        let opening = (0..batch).map(|_| async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            if !prefix.is_empty() {
                s.write_all(prefix).await.ok()?;
            }
            Some(s)
        });
        conns.extend(
            futures::future::join_all(opening)
                .await
                .into_iter()
                .flatten(),
        );
    }
    conns
}

/// Requests `/v2/` on a fresh connection each time every 100 ms until `stop`, returning how
/// many were answered 200 and how many failed.
async fn normal_client(b: &Berth, stop: tokio::sync::watch::Receiver<bool>) -> (u32, u32) {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..1200 {
        if *stop.borrow() {
            break;
        }
        match c.get(b.url("/v2/")).send().await {
            Ok(r) if r.status() == 200 => ok += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_cut_off_while_a_normal_client_is_served() {
    raise_fd_limit(8192);
    let b = Berth::start_with(Options {
        env: vec![
            (
                "BERTH_SERVER__HEADER_READ_TIMEOUT_SECONDS".into(),
                "3".into(),
            ),
            ("BERTH_SERVER__MAX_CONNECTIONS".into(), "4000".into()),
        ],
        ..Options::default()
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = {
        let b = &b;
        async move { normal_client(b, stop_rx).await }
    };
    let hoarding = async {
        let started = Instant::now();
        let mut conns = open_many(
            b.addr,
            2000,
            b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
            Duration::from_secs(60),
        )
        .await;
        let opened = started.elapsed();
        // Every one is closed by the server, 3 s after it was accepted (plus slack for a
        // busy machine).
        let closing = conns
            .iter_mut()
            .map(|c| closed_within(c, Duration::from_secs(20)));
        let closed = futures::future::join_all(closing).await;
        let still_open = closed.iter().filter(|c| !**c).count();
        let _ = stop_tx.send(true);
        (opened, still_open, started.elapsed())
    };
    let ((ok, failed), (opened, still_open, took)) = tokio::join!(serving, hoarding);
    assert_eq!(
        still_open, 0,
        "connections still open after the header timeout"
    );
    assert!(
        took < opened + Duration::from_secs(20),
        "closing took {took:?} (opening {opened:?})"
    );
    assert_eq!(
        failed, 0,
        "the normal client failed {failed} times ({ok} ok)"
    );
    assert!(ok >= 10, "the normal client was answered {ok} times");
}

#[tokio::test]
async fn half_sent_headers_are_cut_off_without_sendfile_too() {
    let b = Berth::start_with(Options {
        env: vec![
            (
                "BERTH_SERVER__HEADER_READ_TIMEOUT_SECONDS".into(),
                "2".into(),
            ),
            ("BERTH_SERVER__SENDFILE".into(), "false".into()),
        ],
        ..Options::default()
    });
    let mut conns = open_many(
        b.addr,
        50,
        b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        Duration::from_secs(30),
    )
    .await;
    let started = Instant::now();
    for conn in conns.iter_mut() {
        assert!(closed_within(conn, Duration::from_secs(10)).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let r = client().get(b.url("/v2/")).send().await.expect("v2");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_the_server_answers_after_the_hoarders_go() {
    raise_fd_limit(4096);
    let cap = 100;
    let b = Berth::start_with(Options {
        env: vec![("BERTH_SERVER__MAX_CONNECTIONS".into(), cap.to_string())],
        ..Options::default()
    });
    let c = client();
    let r = c.get(b.url("/v2/")).send().await.expect("v2");
    assert_eq!(r.status(), 200);
    drop(c);
    let baseline = fd_count(b.pid());
    assert!(baseline > 0, "cannot read /proc/{}/fd", b.pid());
    // Connections that send nothing: the first `cap` hold their slots, the rest are closed.
    let mut conns = open_many(b.addr, 3 * cap, b"", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = fd_count(b.pid());
    assert!(
        during <= baseline + cap + 16,
        "{during} descriptors open with {} connections tried (baseline {baseline}, cap {cap})",
        conns.len()
    );
    let mut refused = 0;
    for conn in conns.iter_mut() {
        if closed_within(conn, Duration::from_millis(20)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 2 * cap - 10,
        "only {refused} of {} connections past the cap of {cap} were closed",
        conns.len()
    );
    let s = reqwest::get(b.url("/metrics"))
        .await
        .map(|r| r.status().as_u16());
    // At the cap a new connection is refused too (that is the point).
    assert!(s.is_err(), "a connection past the cap was served: {s:?}");
    drop(conns);
    // Once the hoarders are gone, their slots free and the server answers.
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = c.get(b.url("/v2/")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not answering after the hoarders left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused_total = metric_value(&c, &b, "berth_connections_refused_total")
        .await
        .expect("berth_connections_refused_total");
    assert!(refused_total >= (2 * cap - 10) as f64, "{refused_total}");
    assert!(fd_count(b.pid()) <= baseline + 16);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_SERVER__KEEPALIVE_TIMEOUT_SECONDS".into(), "1".into())],
        ..Options::default()
    });
    let mut conn = TcpStream::connect(b.addr).await.expect("connect");
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("response");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let started = Instant::now();
    assert!(
        closed_within(&mut conn, Duration::from_secs(10)).await,
        "idle connection kept"
    );
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(800),
        "closed after {idle:?}, before the keep-alive timeout"
    );
    // A connection that never sends a byte is idle too.
    let mut silent = TcpStream::connect(b.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_is_cut_off() {
    let cert = TestCert::generate();
    let b = Berth::start_with(Options {
        tls: Some((cert.cert.clone(), cert.key.clone())),
        env: vec![(
            "BERTH_SERVER__HEADER_READ_TIMEOUT_SECONDS".into(),
            "2".into(),
        )],
        ..Options::default()
    });
    // Nothing at all, and the first bytes of a ClientHello record.
    let mut silent = TcpStream::connect(b.addr).await.expect("connect");
    let mut partial = TcpStream::connect(b.addr).await.expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("partial hello");
    let started = Instant::now();
    for conn in [&mut silent, &mut partial] {
        assert!(
            closed_within(conn, Duration::from_secs(8)).await,
            "a stalled TLS handshake was kept for 8 s"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn a_stalled_upload_body_times_out_and_the_upload_resumes() {
    let b = Berth::start_with(Options {
        env: vec![("BERTH_SERVER__BODY_TIMEOUT_SECONDS".into(), "2".into())],
        ..Options::default()
    });
    let c = client();
    let repo = "library/stalled";
    let data = pattern(300_000, 7);
    let (first, rest) = data.split_at(100_000);
    let url = open_upload(&c, &b, repo).await;
    let r = c
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .expect("first chunk");
    assert_eq!(r.status(), 202);
    let url = location_url(&b, &header_str(&r, "location"));
    // The second chunk on a raw connection: its header promises all of it, half comes,
    // then nothing.
    let path = url.strip_prefix(&b.base).expect("same server").to_string();
    let mut conn = TcpStream::connect(b.addr).await.expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}-{}\r\nContent-Length: {}\r\n\r\n",
        b.host(),
        first.len(),
        data.len() - 1,
        rest.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(&rest[..rest.len() / 2])
        .await
        .expect("half the body");
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled request was kept for 15 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "failed after {waited:?}, before the body timeout"
    );
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "stalled request answered: {answer}"
    );
    drop(conn);
    // The session is where the first chunk left it, and nobody holds it: the client
    // resumes at once.
    let r = c.get(&url).send().await.expect("status");
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), format!("0-{}", first.len() - 1));
    let resumed = Instant::now();
    let r = c
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .header(
            "content-range",
            format!("{}-{}", first.len(), data.len() - 1),
        )
        .body(rest.to_vec())
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    assert!(
        resumed.elapsed() < Duration::from_secs(2),
        "the stalled request's claim was still held"
    );
    let url = location_url(&b, &header_str(&r, "location"));
    let digest = sha256(&data);
    let r = c
        .put(with_query(&url, &format!("digest={digest}")))
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .get(b.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .expect("pull");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("blob").as_ref(), data.as_slice());
}
