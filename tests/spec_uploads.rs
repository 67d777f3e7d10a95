//! Blob uploads: monolithic (POST then PUT, single POST), chunked and streamed PATCH,
//! status, cancel, cross-repository mount, and digest verification.

mod common;
use common::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

async fn patch(
    c: &reqwest::Client,
    url: &str,
    range: Option<&str>,
    body: &[u8],
) -> reqwest::Response {
    let mut rq = c
        .patch(url)
        .header("content-type", "application/octet-stream")
        .body(body.to_vec());
    if let Some(range) = range {
        rq = rq.header("content-range", range);
    }
    rq.send().await.unwrap()
}

async fn status(c: &reqwest::Client, url: &str) -> reqwest::Response {
    c.get(url).send().await.unwrap()
}

/// Closes an upload with `PUT <location>?digest=` and an empty body.
async fn close(c: &reqwest::Client, url: &str, digest: &str) -> reqwest::Response {
    c.put(with_query(url, &format!("digest={digest}")))
        .header("content-length", "0")
        .send()
        .await
        .unwrap()
}

/// Asserts the 201 that makes a blob visible, and that the blob reads back as `bytes`.
async fn assert_created(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    r: reqwest::Response,
    bytes: &[u8],
) {
    let digest = sha256(bytes);
    assert_eq!(r.status(), 201, "{:?}", r.headers());
    assert_api_version(&r);
    assert_eq!(
        header_str(&r, "location"),
        format!("/v2/{repo}/blobs/{digest}")
    );
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    let got = c
        .get(location_url(b, &header_str(&r, "location")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(
        got.bytes().await.unwrap().as_ref() == bytes,
        "blob {digest} does not read back byte-exact"
    );
    assert_eq!(b.stored_blob(&digest), bytes);
    assert!(
        b.upload_files().is_empty(),
        "upload files left: {:?}",
        b.upload_files()
    );
}

#[tokio::test]
async fn post_opens_a_session_with_location_and_upload_uuid() {
    let b = Berth::start();
    let c = client();
    let r = c
        .post(b.url("/v2/app/blobs/uploads/"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    let location = header_str(&r, "location");
    let uuid = header_str(&r, "docker-upload-uuid");
    assert!(!uuid.is_empty());
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    assert!(
        location.contains(&uuid),
        "Location {location} names the session {uuid}"
    );
    assert_eq!(header_str(&r, "range"), "0-0");
    assert_eq!(b.upload_files().len(), 1);
    assert!(b.blob_files().is_empty());
}

#[tokio::test]
async fn post_then_put_uploads_monolithically() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(1000);
    let url = open_upload(&c, &b, "app").await;
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "app", r, &bytes).await;
    // The session is finished.
    expect_error(status(&c, &url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn single_post_with_digest_uploads_monolithically() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(1000);
    let r = c
        .post(b.url(&format!("/v2/app/blobs/uploads/?digest={}", sha256(&bytes))))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "app", r, &bytes).await;
}

#[tokio::test]
async fn chunked_upload_with_content_range() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(30);
    let url = open_upload(&c, &b, "app").await;
    let r = patch(&c, &url, Some("0-9"), &bytes[..10]).await;
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "range"), "0-9");
    let url = location_url(&b, &header_str(&r, "location"));
    let r = patch(&c, &url, Some("10-19"), &bytes[10..20]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header_str(&r, "range"), "0-19");
    let url = location_url(&b, &header_str(&r, "location"));
    let r = patch(&c, &url, Some("20-29"), &bytes[20..]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header_str(&r, "range"), "0-29");
    let url = location_url(&b, &header_str(&r, "location"));
    let r = close(&c, &url, &sha256(&bytes)).await;
    assert_created(&c, &b, "app", r, &bytes).await;
}

#[tokio::test]
async fn chunk_with_a_gap_is_416_and_leaves_the_session_unchanged() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(30);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-9"), &bytes[..10]).await.status(),
        202
    );

    let r = patch(&c, &url, Some("15-24"), &bytes[15..25]).await;
    assert_eq!(header_str(&r, "range"), "0-9");
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;

    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-9");

    // The right chunk still goes on where the session stands.
    assert_eq!(
        patch(&c, &url, Some("10-29"), &bytes[10..]).await.status(),
        202
    );
    assert_created(
        &c,
        &b,
        "app",
        close(&c, &url, &sha256(&bytes)).await,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn chunk_that_overlaps_is_416_and_leaves_the_session_unchanged() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(30);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-9"), &bytes[..10]).await.status(),
        202
    );
    assert_eq!(
        patch(&c, &url, Some("10-19"), &bytes[10..20])
            .await
            .status(),
        202
    );

    // Resending bytes 15..25, which overlaps what the session holds.
    let r = patch(&c, &url, Some("15-24"), &bytes[15..25]).await;
    assert_eq!(header_str(&r, "range"), "0-19");
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    // So does a chunk starting over from zero.
    let r = patch(&c, &url, Some("0-9"), &bytes[..10]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header_str(&r, "range"), "0-19");

    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-19");
    assert_eq!(std::fs::metadata(&b.upload_files()[0]).unwrap().len(), 20);

    assert_eq!(
        patch(&c, &url, Some("20-29"), &bytes[20..]).await.status(),
        202
    );
    assert_created(
        &c,
        &b,
        "app",
        close(&c, &url, &sha256(&bytes)).await,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn patch_without_content_range_appends() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(64);
    let url = open_upload(&c, &b, "app").await;
    let r = patch(&c, &url, None, &bytes[..40]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header_str(&r, "range"), "0-39");
    let r = patch(&c, &url, None, &bytes[40..]).await;
    assert_eq!(r.status(), 202);
    assert_eq!(header_str(&r, "range"), "0-63");
    assert_created(
        &c,
        &b,
        "app",
        close(&c, &url, &sha256(&bytes)).await,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn streamed_patch_without_content_length_or_range() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(300_000);
    let url = open_upload(&c, &b, "app").await;
    // A body of unknown length goes out with Transfer-Encoding: chunked.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(header_str(&r, "range"), format!("0-{}", bytes.len() - 1));
    let url = location_url(&b, &header_str(&r, "location"));
    assert_created(
        &c,
        &b,
        "app",
        close(&c, &url, &sha256(&bytes)).await,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn upload_status_reports_range_location_and_uuid() {
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "team/app").await;
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_api_version(&r);
    assert_eq!(header_str(&r, "range"), "0-0");
    let uuid = header_str(&r, "docker-upload-uuid");
    assert!(!uuid.is_empty());
    assert_eq!(location_url(&b, &header_str(&r, "location")), url);
    assert!(url.contains(&uuid));

    assert_eq!(
        patch(&c, &url, Some("0-24"), &pattern(25)).await.status(),
        202
    );
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-24");
    assert_eq!(header_str(&r, "docker-upload-uuid"), uuid);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn cancelled_upload_is_gone_with_its_bytes() {
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-99"), &pattern(100)).await.status(),
        202
    );
    assert_eq!(b.upload_files().len(), 1);

    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_api_version(&r);
    expect_error(status(&c, &url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch(&c, &url, Some("100-109"), &pattern(10)).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        c.delete(&url).send().await.unwrap(),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    assert!(b.blob_files().is_empty());
}

#[tokio::test]
async fn mount_from_a_repository_that_has_the_blob_answers_201() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(500);
    let digest = push_blob(&c, &b, "source", &bytes).await;
    let r = c
        .post(b.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=source"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_api_version(&r);
    assert_eq!(
        header_str(&r, "location"),
        format!("/v2/target/blobs/{digest}")
    );
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    let got = c
        .get(b.url(&format!("/v2/target/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // No new session, no new copy.
    assert!(b.upload_files().is_empty());
    assert_eq!(b.blob_files(), vec![b.blob_path(&digest)]);
    assert!(catalog_of(&c, &b).await.contains(&"target".to_string()));
}

#[tokio::test]
async fn mount_from_a_repository_without_the_blob_opens_an_upload() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(500);
    let digest = sha256(&bytes);
    push_blob(&c, &b, "source", b"something else").await;
    let r = c
        .post(b.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=source"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_api_version(&r);
    assert!(!header_str(&r, "docker-upload-uuid").is_empty());
    let url = location_url(&b, &header_str(&r, "location"));
    assert!(url.contains("/v2/target/blobs/uploads/"), "{url}");
    assert_eq!(blob_status(&c, &b, "target", &digest).await, 404);

    // The session it opened is an ordinary one.
    let r = c
        .put(with_query(&url, &format!("digest={digest}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "target", r, &bytes).await;
}

#[tokio::test]
async fn mount_from_an_unknown_repository_opens_an_upload() {
    let b = Berth::start();
    let c = client();
    let digest = sha256(b"x");
    let r = c
        .post(b.url(&format!(
            "/v2/target/blobs/uploads/?mount={digest}&from=nowhere"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(!header_str(&r, "location").is_empty());
}

#[tokio::test]
async fn put_with_a_digest_that_does_not_match_is_digest_invalid_and_discards_the_upload() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(100);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(patch(&c, &url, Some("0-99"), &bytes).await.status(), 202);
    let wrong = sha256(b"not these bytes");
    let message = expect_error(close(&c, &url, &wrong).await, 400, "DIGEST_INVALID").await;
    assert!(message.contains(&wrong), "{message}");
    assert!(b.blob_files().is_empty(), "{:?}", b.blob_files());
    assert!(b.upload_files().is_empty(), "{:?}", b.upload_files());
    expect_error(status(&c, &url).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(blob_status(&c, &b, "app", &wrong).await, 404);
    assert_eq!(blob_status(&c, &b, "app", &sha256(&bytes)).await, 404);
    assert_eq!(tags_of(&c, &b, "app").await, None);
}

#[tokio::test]
async fn single_post_with_a_wrong_digest_leaves_nothing() {
    let b = Berth::start();
    let c = client();
    let wrong = sha256(b"not these bytes");
    let r = c
        .post(b.url(&format!("/v2/app/blobs/uploads/?digest={wrong}")))
        .body(pattern(100))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    assert!(b.blob_files().is_empty());
    assert!(b.upload_files().is_empty());
    assert!(catalog_of(&c, &b).await.is_empty());
}

#[tokio::test]
async fn final_put_may_carry_the_last_chunk() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(50);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-29"), &bytes[..30]).await.status(),
        202
    );
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .header("content-type", "application/octet-stream")
        .header("content-range", "30-49")
        .body(bytes[30..].to_vec())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "app", r, &bytes).await;
}

#[tokio::test]
async fn final_put_without_content_range_carries_the_rest() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(50);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-29"), &bytes[..30]).await.status(),
        202
    );
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .body(bytes[30..].to_vec())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "app", r, &bytes).await;
}

#[tokio::test]
async fn blob_of_ten_mib_in_several_chunks_round_trips_byte_exact() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(10 * 1024 * 1024 + 12_345);
    let chunk = 3 * 1024 * 1024;
    let mut url = open_upload(&c, &b, "big").await;
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + chunk).min(bytes.len());
        let r = patch(
            &c,
            &url,
            Some(&format!("{at}-{}", end - 1)),
            &bytes[at..end],
        )
        .await;
        assert_eq!(r.status(), 202);
        assert_eq!(header_str(&r, "range"), format!("0-{}", end - 1));
        url = location_url(&b, &header_str(&r, "location"));
        at = end;
    }
    let r = close(&c, &url, &sha256(&bytes)).await;
    assert_eq!(r.status(), 201);
    let digest = header_str(&r, "docker-content-digest");
    let got = c
        .get(b.url(&format!("/v2/big/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(header_str(&got, "content-length"), bytes.len().to_string());
    let got = got.bytes().await.unwrap();
    assert!(
        got.as_ref() == bytes.as_slice(),
        "10 MiB blob is not byte-exact"
    );
    assert_eq!(b.stored_blob_len(&digest), bytes.len() as u64);
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn chunked_upload_under_a_sha512_digest() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(5000);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-2999"), &bytes[..3000])
            .await
            .status(),
        202
    );
    assert_eq!(
        patch(&c, &url, Some("3000-4999"), &bytes[3000..])
            .await
            .status(),
        202
    );
    let digest = sha512(&bytes);
    let r = close(&c, &url, &digest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header_str(&r, "docker-content-digest"), digest);
    assert_eq!(b.stored_blob(&digest), bytes);
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn zero_byte_blob_by_post_then_empty_put() {
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "app").await;
    let r = close(&c, &url, &sha256(b"")).await;
    assert_created(&c, &b, "app", r, b"").await;
}

#[tokio::test]
async fn upload_sessions_belong_to_their_repository() {
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "repo-a").await;
    let other = url.replace("/v2/repo-a/", "/v2/repo-b/");
    expect_error(status(&c, &other).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch(&c, &other, Some("0-9"), &pattern(10)).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    // The session in repo-a is untouched.
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-0");
}

#[tokio::test]
async fn concurrent_sessions_for_the_same_blob_make_one_file() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(2048);
    let u1 = open_upload(&c, &b, "app").await;
    let u2 = open_upload(&c, &b, "app").await;
    assert_ne!(u1, u2);
    assert_eq!(patch(&c, &u1, Some("0-2047"), &bytes).await.status(), 202);
    assert_eq!(patch(&c, &u2, Some("0-2047"), &bytes).await.status(), 202);
    assert_eq!(close(&c, &u1, &sha256(&bytes)).await.status(), 201);
    assert_eq!(close(&c, &u2, &sha256(&bytes)).await.status(), 201);
    assert_eq!(b.blob_files(), vec![b.blob_path(&sha256(&bytes))]);
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn final_put_whose_content_range_is_not_at_the_offset_is_416() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(50);
    let url = open_upload(&c, &b, "app").await;
    assert_eq!(
        patch(&c, &url, Some("0-29"), &bytes[..30]).await.status(),
        202
    );
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "35-49")
        .body(bytes[35..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(header_str(&r, "range"), "0-29");
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    assert!(b.blob_files().is_empty());
    let r = status(&c, &url).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header_str(&r, "range"), "0-29");
    // The right final chunk still completes it.
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .header("content-range", "30-49")
        .body(bytes[30..].to_vec())
        .send()
        .await
        .unwrap();
    assert_created(&c, &b, "app", r, &bytes).await;
}

#[tokio::test]
async fn completed_upload_cannot_be_completed_again() {
    let b = Berth::start();
    let c = client();
    let bytes = pattern(10);
    let url = open_upload(&c, &b, "app").await;
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        patch(&c, &url, None, &bytes).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    assert_eq!(b.blob_files(), vec![b.blob_path(&sha256(&bytes))]);
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn concurrent_patches_to_one_session_cannot_corrupt_the_blob() {
    // A client retrying a PATCH while its first attempt is still streaming must not end
    // up with a blob whose bytes differ from the digest it was committed under: the
    // request in flight holds the session, the retry is refused with the resumable state.
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "app").await;
    let first = vec![b'a'; 64 * 1024];
    let second = vec![b'b'; 256 * 1024];

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let slow = {
        let c = c.clone();
        let url = url.clone();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        tokio::spawn(async move {
            let r = c.patch(&url).body(body).send().await.unwrap();
            (r.status().as_u16(), header_str(&r, "range"))
        })
    };
    tx.send(Ok(first.clone())).await.unwrap();
    // Wait until the slow request's first chunk is in the upload file.
    let upload_file = b.upload_files()[0].clone();
    for _ in 0..500 {
        if std::fs::metadata(&upload_file)
            .map(|m| m.len())
            .unwrap_or(0)
            >= first.len() as u64
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The retry is refused while the first attempt writes, and told where the upload is.
    let r = patch(&c, &url, None, &second).await;
    assert_eq!(header_str(&r, "range"), "0-0");
    assert!(
        header_str(&r, "location").contains("/v2/app/blobs/uploads/"),
        "416 names the session to resume"
    );
    assert_eq!(
        header_str(&r, "connection"),
        "close",
        "the unread body leaves the connection unusable, and the client is told"
    );
    let message = expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;
    assert!(message.contains("another request is writing"), "{message}");
    // A PUT that would finish the upload is refused the same way.
    let r = close(&c, &url, &sha256(&first)).await;
    expect_error(r, 416, "BLOB_UPLOAD_INVALID").await;

    // The first attempt sends the rest of its body and is acknowledged.
    tx.send(Ok(first.clone())).await.unwrap();
    drop(tx);
    let (status, range) = slow.await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(range, format!("0-{}", 2 * first.len() - 1));

    // The session is free again: the refused PUT changed nothing, and it now completes.
    let whole = [first.clone(), first.clone()].concat();
    let digest = sha256(&whole);
    let r = close(&c, &url, &digest).await;
    assert_eq!(r.status(), 201);
    let got = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), whole.as_slice(), "blob served under {digest}");
    assert!(b.upload_files().is_empty());
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_patch_does_not_lock_the_session() {
    // The request in flight holds the session; when its client disconnects the hold is
    // released at once (not after the lease runs out), and nothing it sent is acknowledged.
    let b = Berth::start();
    let c = client();
    let url = open_upload(&c, &b, "app").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let hung = {
        let c = c.clone();
        let url = url.clone();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        tokio::spawn(async move { c.patch(&url).body(body).send().await })
    };
    tx.send(Ok(vec![b'x'; 32 * 1024])).await.unwrap();
    let upload_file = b.upload_files()[0].clone();
    for _ in 0..500 {
        if std::fs::metadata(&upload_file)
            .map(|m| m.len())
            .unwrap_or(0)
            > 0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    hung.abort();
    drop(tx);

    let bytes = b"after the hang-up".to_vec();
    let mut status = 0;
    for _ in 0..50 {
        let r = patch(&c, &url, Some(&format!("0-{}", bytes.len() - 1)), &bytes).await;
        status = r.status().as_u16();
        if status == 202 {
            assert_eq!(header_str(&r, "range"), format!("0-{}", bytes.len() - 1));
            break;
        }
        assert_eq!(
            status, 416,
            "only 'busy' is acceptable while the hang-up is noticed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 202,
        "the session stayed locked after its client hung up"
    );
    let digest = sha256(&bytes);
    let r = close(&c, &url, &digest).await;
    assert_eq!(r.status(), 201);
    let got = c
        .get(b.url(&format!("/v2/app/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
}
