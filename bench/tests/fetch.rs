//! The copying blob receiver (`berth-bench fetch` and the pull scenarios) against a small
//! server run by the test, over http and https: it checks sizes and digests, trusts
//! `--ca-file` and nothing else, refuses hosts that are neither loopback nor link-local,
//! and a cold pull with nothing to evict fails instead of measuring warm.

mod common;
use common::{bench, temp_dir, text};

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// The served blob: 3 MiB and a few bytes, so that it spans several 1 MiB reads.
const SIZE: usize = 3 * (1 << 20) + 5;

fn blob() -> Vec<u8> {
    let mut s = 0x1234_5678u32;
    (0..SIZE)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect()
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Runs berth-bench, expecting exit status 1 and every one of `needles` in its output.
fn fails_saying(args: &[&str], needles: &[&str]) {
    let out = bench(args);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
    for n in needles {
        assert!(all.contains(n), "{args:?}: no {n:?} in {all}");
    }
}

/// Whether the output's row of `scenario` says `what`.
fn row_says(o: &Output, scenario: &str, what: &str) -> bool {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(scenario) && l.contains(what))
}

/// A server on 127.0.0.1 that answers one request per connection (`Connection: close`),
/// for at most `connections` connections, over TLS when given a configuration:
/// - `GET /v2/`: 200; `POST .../blobs/uploads/`: 202 to `/upload/1`; `PUT /upload/1`: 201
///   (the body is read and dropped), enough for a blob push;
/// - `GET /blob/right`: the blob; `/blob/short`: 100 bytes less than its Content-Length;
///   `/blob/long`: 100 bytes more; `/blob/flipped`: one byte changed;
///   `/blob/redirect`: a 307 to `/blob/right`.
fn serve(tls: Option<Arc<rustls::ServerConfig>>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let data = Arc::new(blob());
    let scheme = if tls.is_some() { "https" } else { "http" };
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
            // A client that refuses the certificate ends its connection here: not an error.
            let _ = match &tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(conn) => answer(rustls::StreamOwned::new(conn, stream), &data),
                    Err(_) => continue,
                },
                None => answer(stream, &data),
            };
        }
    });
    format!("{scheme}://127.0.0.1:{port}")
}

fn answer<S: Read + Write>(mut s: S, data: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || s.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let length: u64 = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    std::io::copy(&mut (&mut s).take(length), &mut std::io::sink())?;
    let reply = |s: &mut S, status: &str, headers: &str, body: &[u8], length: usize| {
        write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Length: {length}\r\n{headers}Connection: close\r\n\r\n"
        )?;
        s.write_all(body)?;
        s.flush()
    };
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/v2/") => reply(&mut s, "200 OK", "", b"{}", 2),
        ("POST", p) if p.ends_with("/blobs/uploads/") => {
            reply(&mut s, "202 Accepted", "Location: /upload/1\r\n", b"", 0)
        }
        ("PUT", "/upload/1") => {
            let d = target.split("digest=").nth(1).unwrap_or("");
            let h = format!("Docker-Content-Digest: {d}\r\n");
            reply(&mut s, "201 Created", &h, b"", 0)
        }
        ("GET", "/blob/right") => reply(&mut s, "200 OK", "", data, data.len()),
        ("GET", "/blob/short") => {
            reply(&mut s, "200 OK", "", &data[..data.len() - 100], data.len())
        }
        ("GET", "/blob/long") => {
            let mut more = data.to_vec();
            more.extend_from_slice(&[0u8; 100]);
            reply(&mut s, "200 OK", "", &more, data.len())
        }
        ("GET", "/blob/flipped") => {
            let mut wrong = data.to_vec();
            wrong[SIZE / 2] ^= 1;
            reply(&mut s, "200 OK", "", &wrong, data.len())
        }
        ("GET", "/blob/redirect") => reply(
            &mut s,
            "307 Temporary Redirect",
            "Location: /blob/right\r\n",
            b"",
            0,
        ),
        _ => reply(&mut s, "404 Not Found", "", b"", 0),
    }
}

/// A CA and a server certificate it signed for IP 127.0.0.1 (openssl CLI), in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        &["-subj", "/CN=berth-bench test CA"],
        &["-addext", "basicConstraints=critical,CA:TRUE"],
        &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

fn tls_config(dir: &Path) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("server.pem certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    Arc::new(cfg)
}

#[test]
fn the_copying_receiver_takes_the_right_bytes_and_refuses_short_long_or_wrong_ones() {
    let base = serve(None, 20);
    let (size, d) = (SIZE.to_string(), digest(&blob()));
    for path in ["/blob/right", "/blob/redirect"] {
        let url = format!("{base}{path}");
        let out = bench(&["fetch", &url, "--size", &size, "--digest", &d]);
        assert!(out.status.success(), "{}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("{SIZE} bytes")) && said.contains("SHA-256 verified"),
            "{said}"
        );
    }
    let url = |p: &str| format!("{base}{p}");
    fails_saying(
        &[
            "fetch",
            &url("/blob/short"),
            "--size",
            &size,
            "--digest",
            &d,
        ],
        &[
            &url("/blob/short"),
            "the body ended after 3145633 of 3145733 bytes",
        ],
    );
    // Short is short without a digest to check too.
    fails_saying(
        &["fetch", &url("/blob/short"), "--size", &size],
        &[&url("/blob/short"), "the body ended after"],
    );
    fails_saying(
        &["fetch", &url("/blob/long"), "--size", &size, "--digest", &d],
        &[&url("/blob/long"), "more than Content-Length 3145733 bytes"],
    );
    fails_saying(
        &[
            "fetch",
            &url("/blob/flipped"),
            "--size",
            &size,
            "--digest",
            &d,
        ],
        &[
            &url("/blob/flipped"),
            "the body's digest is sha256:",
            &format!("expected {d}"),
        ],
    );
    // A Content-Length other than the expected size fails before the body is read.
    let one_more = (SIZE + 1).to_string();
    fails_saying(
        &["fetch", &url("/blob/right"), "--size", &one_more],
        &[
            &url("/blob/right"),
            "Content-Length 3145733, expected 3145734",
        ],
    );
    fails_saying(
        &["fetch", &url("/nothing"), "--size", &size],
        &[&url("/nothing"), "expected 200, got 404"],
    );
}

#[test]
fn over_tls_the_copying_receiver_trusts_the_ca_file_and_nothing_else() {
    let dir = temp_dir("tls");
    make_certs(dir.path());
    let base = serve(Some(tls_config(dir.path())), 10);
    let url = format!("{base}/blob/right");
    let (size, d) = (SIZE.to_string(), digest(&blob()));
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().expect("path");
    let out = bench(&[
        "fetch",
        &url,
        "--size",
        &size,
        "--digest",
        &d,
        "--ca-file",
        ca,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{SIZE} bytes")),
        "{}",
        text(&out)
    );
    // Flipped bytes are caught over TLS too.
    let flipped = format!("{base}/blob/flipped");
    fails_saying(
        &[
            "fetch",
            &flipped,
            "--size",
            &size,
            "--digest",
            &d,
            "--ca-file",
            ca,
        ],
        &[&flipped, "the body's digest is"],
    );
    // Without the CA the server's certificate is not trusted.
    fails_saying(
        &["fetch", &url, "--size", &size, "--digest", &d],
        &[&url, "TLS handshake", "certificate", "UnknownIssuer"],
    );
    // The splice receiver does not do TLS.
    fails_saying(
        &["fetch", &url, "--size", &size, "--splice", "--ca-file", ca],
        &["the splice receiver takes plain http only"],
    );
    // reqwest (the registry client of every scenario) trusts the CA file as well: the
    // splice pull is skipped over https (not failed), after the registry answered.
    let out = bench(&[
        &base,
        "--quick",
        "--scenario",
        "pull-100MiB-splice",
        "--ca-file",
        ca,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        row_says(
            &out,
            "pull-100MiB-splice",
            "skipped: the splice receiver takes plain http only"
        ),
        "{}",
        text(&out)
    );
    fails_saying(
        &[&base, "--quick", "--scenario", "pull-100MiB-splice"],
        &["the registry does not answer"],
    );
}

#[test]
fn link_hosts_must_be_link_local_and_other_hosts_are_refused_before_any_request() {
    for bad in [
        "10.0.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.253.0.1",
        "fe80::1",
        "host",
    ] {
        fails_saying(
            &[
                "fetch",
                "http://127.0.0.1:1/x",
                "--size",
                "1",
                "--link-host",
                bad,
            ],
            &["--link-host", "169.254.0.0/16"],
        );
        fails_saying(
            &[
                "http://127.0.0.1:1",
                "--scenario",
                "pull-1GiB",
                "--link-host",
                bad,
            ],
            &["--link-host", "169.254.0.0/16"],
        );
    }
    // A link-local host that was not named is refused too, as is one other than the named.
    fails_saying(
        &["fetch", "http://169.254.7.7:1/x", "--size", "1"],
        &["berth-bench only drives 127.0.0.1"],
    );
    fails_saying(
        &[
            "http://169.254.7.7:1",
            "--scenario",
            "manifest-get-tag-c1",
            "--link-host",
            "169.254.7.8",
        ],
        &["berth-bench only drives 127.0.0.1"],
    );
    fails_saying(
        &[
            "http://127.0.0.1:1",
            "--scenario",
            "pull-1GiB",
            "--reference-url",
            "http://169.254.7.7:1",
        ],
        &["berth-bench only drives 127.0.0.1"],
    );
}

#[test]
fn a_cold_pull_with_nothing_to_evict_fails_and_without_evict_dirs_is_skipped() {
    let base = serve(None, 10);
    let empty = temp_dir("evict");
    std::fs::write(empty.path().join("not-the-blob"), b"small").expect("write");
    let dir = empty.path().to_str().expect("path");
    // Pushes the 100 MiB blob (the server drops it), then finds nothing of its size.
    fails_saying(
        &[
            &base,
            "--quick",
            "--scenario",
            "pull-100MiB-cold",
            "--evict-dir",
            dir,
        ],
        &[
            "pull-100MiB-cold",
            "FAILED",
            "no file of 104857600 bytes (the blob's size) under --evict-dir",
            "would be measured warm",
        ],
    );
    let out = bench(&[&base, "--quick", "--scenario", "pull-100MiB-cold"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        row_says(
            &out,
            "pull-100MiB-cold",
            "skipped: a cold pull needs --evict-dir"
        ),
        "{}",
        text(&out)
    );
    // The single fetch evicts too, and refuses the same way.
    let url = format!("{base}/blob/right");
    fails_saying(
        &[
            "fetch",
            &url,
            "--size",
            &SIZE.to_string(),
            "--evict-dir",
            dir,
        ],
        &["no file of 3145733 bytes"],
    );
}
