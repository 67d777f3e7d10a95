//! The one `BlobStore` suite: every rule below runs against every backend.
//!
//! Each rule is a plain async function over a [`Backend`]; `blobstore_suite!` turns the list
//! of rules into `#[tokio::test]`s for one backend, so a new backend (S3) is one more
//! `blobstore_suite!(name, opener)` line. After every rule the backend is asked for
//! upload leftovers: a rule that ends with every upload committed or aborted must leave none.

mod common;
use common::pattern;

use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth::oci::{Algorithm, Digest, Hasher};
use berth::storage::fs::{FsBlobStore, UploadIo};
use berth::storage::s3::{S3BlobStore, S3Config};
use berth::storage::{BlobStore, ByteStream, StorageError, Verify};
use bytes::Bytes;
use futures::{StreamExt, stream};
use sha2::Digest as _;

/// A store under test, and how to see what it holds besides committed blobs.
struct Backend {
    store: Arc<dyn BlobStore>,
    /// Objects the backend holds that are not committed blobs (upload data, temporary
    /// files), named for the failure message.
    leftovers: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Filesystem backends: the temporary directory holding the root, checked for writes
    /// outside the root.
    fs_dir: Option<tempfile::TempDir>,
    /// Whether the store itself knows which uploads exist (the filesystem store has a file
    /// per session; the S3 store keeps nothing for a session that has no data yet, and
    /// leaves "which sessions exist" to the metadata store).
    knows_uploads: bool,
}

/// The filesystem store as `berth serve` opens it: upload data written with direct I/O.
/// (The test's temporary directory is on a filesystem that allows it: ext4 on these
/// machines, as on most; tmpfs since Linux 6.6.)
async fn open_fs() -> Backend {
    open_fs_with(UploadIo::Direct).await
}

/// The filesystem store writing through the page cache (`storage.direct_io = false`, and
/// where the filesystem refuses direct I/O).
async fn open_fs_buffered() -> Backend {
    open_fs_with(UploadIo::Buffered).await
}

async fn open_fs_with(io: UploadIo) -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let store = FsBlobStore::open_with(&root, io)
        .await
        .expect("open fs store");
    assert_eq!(store.upload_io(), io, "the store writes as asked");
    Backend {
        store: Arc::new(store),
        leftovers: Box::new(move || fs_leftovers(&root)),
        fs_dir: Some(dir),
        knows_uploads: true,
    }
}

/// Every file under the root that is not `blobs/<alg>/<hex[0..2]>/<hex>`.
fn fs_leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read store dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel: Vec<String> = p
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let is_blob = rel.len() == 4
                && rel[0] == "blobs"
                && format!("{}:{}", rel[1], rel[3]).parse::<Digest>().is_ok()
                && rel[3].starts_with(rel[2].as_str())
                && rel[2].len() == 2;
            if !is_blob {
                out.push(rel.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// The filesystem store's root, for rules that check the backend does not write outside it.
fn fs_root(b: &Backend) -> Option<PathBuf> {
    b.fs_dir.as_ref().map(|d| d.path().to_path_buf())
}

macro_rules! blobstore_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            macro_rules! rule {
                ($rule:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $rule() {
                        let backend = $open().await;
                        super::$rule(&backend).await;
                        let left = (backend.leftovers)();
                        assert!(
                            left.is_empty(),
                            "upload data left behind after the rule: {left:?}"
                        );
                    }
                };
            }

            rule!(the_store_is_reachable);
            rule!(commit_makes_the_blob_readable_byte_exact);
            rule!(the_hasher_sees_exactly_the_appended_bytes);
            rule!(append_at_the_old_offset_after_an_unacknowledged_partial_append);
            rule!(append_past_what_the_store_holds_is_upload_short);
            rule!(commit_publishes_only_the_first_size_bytes);
            rule!(commit_with_rehash_checks_the_digest_itself);
            rule!(range_reads);
            rule!(out_of_range_reads_are_not_satisfiable);
            rule!(absent_blobs_are_not_found);
            rule!(a_blob_is_invisible_before_commit);
            rule!(upload_abort_removes_the_upload_and_is_fine_twice);
            rule!(committing_the_same_content_twice_deduplicates);
            rule!(zero_byte_blob);
            rule!(delete_removes_a_committed_blob);
            rule!(upload_ids_with_path_characters_are_refused);
            rule!(a_64_mib_streamed_upload_commits_with_the_right_digest);
            rule!(appends_at_unaligned_offsets_keep_every_byte_and_nothing_more);
            rule!(concurrent_appends_each_keep_their_own_bytes);
        }
    };
}

blobstore_suite!(fs, super::open_fs);
blobstore_suite!(fs_buffered, super::open_fs_buffered);
blobstore_suite!(s3, super::open_s3);

/// The S3 store on the S3-compatible server the test command starts
/// (`BERTH_TEST_S3_ENDPOINT`), in a bucket of its own, with the smallest part size S3
/// allows so that multipart uploads happen at test sizes.
async fn open_s3() -> Backend {
    let endpoint = std::env::var("BERTH_TEST_S3_ENDPOINT").expect(
        "BERTH_TEST_S3_ENDPOINT is not set: run the tests through scripts/test.sh, which starts an S3 server",
    );
    let bucket = format!("suite-{}", uuid::Uuid::new_v4());
    let client = common::s3_client(&endpoint);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create test bucket");
    let cfg = S3Config {
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        endpoint,
        force_path_style: true,
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        part_size: berth::storage::s3::MIN_PART_SIZE,
        prefix: "reg/".into(),
        ..S3Config::default()
    };
    let store = S3BlobStore::open(&cfg).await.expect("open s3 store");
    Backend {
        store: Arc::new(store),
        leftovers: Box::new(move || {
            let (client, bucket) = (client.clone(), bucket.clone());
            tokio::task::block_in_place(move || {
                tokio::runtime::Handle::current().block_on(s3_leftovers(&client, &bucket))
            })
        }),
        fs_dir: None,
        knows_uploads: false,
    }
}

/// Every object that is not a committed blob, and every unfinished multipart upload.
async fn s3_leftovers(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let objects = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("list objects");
    for o in objects.contents() {
        let key = o.key().unwrap_or_default();
        if !key.starts_with("reg/blobs/") {
            out.push(key.to_string());
        }
    }
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list multipart uploads");
    for u in uploads.uploads() {
        out.push(format!(
            "multipart upload of {}",
            u.key().unwrap_or_default()
        ));
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// Helpers

fn chunks<P: AsRef<[u8]>>(parts: &[P]) -> ByteStream {
    let items: Vec<std::io::Result<Bytes>> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p.as_ref())))
        .collect();
    stream::iter(items).boxed()
}

fn one(bytes: &[u8]) -> ByteStream {
    chunks(&[bytes])
}

/// Yields `parts`, then fails as a dropped connection would.
fn failing_after<P: AsRef<[u8]>>(parts: &[P]) -> ByteStream {
    let mut items: Vec<std::io::Result<Bytes>> = parts
        .iter()
        .map(|p| Ok(Bytes::copy_from_slice(p.as_ref())))
        .collect();
    items.push(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    stream::iter(items).boxed()
}

fn sha512_of(bytes: &[u8]) -> Digest {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
        .parse()
        .expect("digest")
}

fn sha256_of(bytes: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .expect("digest")
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.expect("stream chunk"));
    }
    out
}

async fn read_all(
    store: &dyn BlobStore,
    d: &Digest,
    range: Option<Range<u64>>,
) -> (Vec<u8>, u64, u64) {
    let r = store.read(d, range).await.expect("read");
    let (len, total) = (r.len, r.total);
    (collect(r.body).await, len, total)
}

/// Uploads `bytes` in `chunk`-sized appends and commits it; returns its digest.
async fn upload(store: &dyn BlobStore, bytes: &[u8], chunk: usize) -> Digest {
    let id = new_id();
    let mut st = store.upload_start(&id).await.expect("upload_start");
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut offset = 0u64;
    for part in bytes.chunks(chunk.max(1)) {
        let n = store
            .upload_append(&id, &mut st, offset, one(part), &mut hasher)
            .await
            .expect("append");
        assert_eq!(n, part.len() as u64);
        offset += n;
    }
    let digest = hasher.finish();
    assert_eq!(digest, sha256_of(bytes));
    store
        .upload_commit(&id, &st, offset, &digest, Verify::Done)
        .await
        .expect("commit");
    digest
}

// ---------------------------------------------------------------------------------------
// Rules

async fn the_store_is_reachable(b: &Backend) {
    b.store
        .reachable()
        .await
        .expect("a store just opened is reachable");
    // The filesystem store: not once its root is gone, and again once it is back.
    if let Some(root) = fs_root(b) {
        let away = root.with_file_name("moved-away");
        std::fs::rename(&root, &away).expect("move the root");
        let e = b.store.reachable().await.expect_err("root gone");
        assert!(e.to_string().contains("blobs"), "{e}");
        std::fs::rename(&away, &root).expect("move it back");
        b.store.reachable().await.expect("reachable again");
    }
}

async fn commit_makes_the_blob_readable_byte_exact(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(300_000, 1);
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    // Several appends, each of several chunks.
    let n1 = s
        .upload_append(
            &id,
            &mut st,
            0,
            chunks(&[&bytes[..10], &bytes[10..70_000]]),
            &mut h,
        )
        .await
        .unwrap();
    assert_eq!(n1, 70_000);
    let n2 = s
        .upload_append(
            &id,
            &mut st,
            70_000,
            chunks(&[&bytes[70_000..70_001], &[][..], &bytes[70_001..250_000]]),
            &mut h,
        )
        .await
        .unwrap();
    assert_eq!(n2, 180_000);
    let n3 = s
        .upload_append(&id, &mut st, 250_000, one(&bytes[250_000..]), &mut h)
        .await
        .unwrap();
    assert_eq!(n3, 50_000);
    let digest = h.finish();
    s.upload_commit(&id, &st, 300_000, &digest, Verify::Done)
        .await
        .unwrap();

    assert_eq!(s.stat(&digest).await.unwrap(), Some(300_000));
    let (got, len, total) = read_all(s, &digest, None).await;
    assert_eq!((len, total), (300_000, 300_000));
    assert!(got == bytes, "the blob reads back byte-exact");
    assert_eq!(sha256_of(&got), digest);

    // Committing removed the upload: it cannot be appended to or committed again.
    let mut h = Hasher::new(Algorithm::Sha256);
    assert!(matches!(
        s.upload_append(&id, &mut st, 300_000, one(b"x"), &mut h)
            .await,
        Err(StorageError::UploadNotFound(_))
    ));
    assert!(matches!(
        s.upload_commit(&id, &st, 300_000, &digest, Verify::Done)
            .await,
        Err(StorageError::UploadNotFound(_))
    ));
}

async fn the_hasher_sees_exactly_the_appended_bytes(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(1_000_003, 2);
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let id = new_id();
        let mut st = s.upload_start(&id).await.unwrap();
        let mut h = Hasher::new(alg);
        // Uneven chunks across two appends, the hasher carried across them as a saved state,
        // as a session moving between requests carries it.
        let sizes = [1usize, 4095, 4097, 65_536, 7, 300_000];
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for n in sizes {
            parts.push(&bytes[at..at + n]);
            at += n;
        }
        let first = s
            .upload_append(&id, &mut st, 0, chunks(&parts), &mut h)
            .await
            .unwrap();
        assert_eq!(first, at as u64);
        let mut h = Hasher::restore(&h.save()).expect("restore");
        let second = s
            .upload_append(&id, &mut st, first, one(&bytes[at..]), &mut h)
            .await
            .unwrap();
        assert_eq!(first + second, bytes.len() as u64);
        let got = h.finish();
        let want = match alg {
            Algorithm::Sha256 => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            Algorithm::Sha512 => format!("sha512:{}", hex::encode(sha2::Sha512::digest(&bytes))),
        };
        assert_eq!(
            got.to_string(),
            want,
            "{alg:?} hasher saw exactly the appended bytes"
        );
        s.upload_commit(&id, &st, bytes.len() as u64, &got, Verify::Done)
            .await
            .unwrap();
        let (read, _, _) = read_all(s, &got, None).await;
        assert!(read == bytes);
    }
}

async fn append_at_the_old_offset_after_an_unacknowledged_partial_append(b: &Backend) {
    let s = &*b.store;
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    assert_eq!(
        s.upload_append(&id, &mut st, 0, one(b"AAAA"), &mut h)
            .await
            .unwrap(),
        4
    );
    let acknowledged = h.save();

    // A request that dies midway: its bytes may be in the store, but it was never
    // acknowledged, so the session stays at 4 bytes with the hasher state after "AAAA".
    let mut doomed = Hasher::restore(&acknowledged).unwrap();
    let r = s
        .upload_append(
            &id,
            &mut st,
            4,
            failing_after(&[b"BBBBBBBB", b"CCCCCCCC"]),
            &mut doomed,
        )
        .await;
    assert!(
        matches!(r, Err(StorageError::Body(_))),
        "a failing body is a Body error: {r:?}"
    );

    // The retry from the acknowledged offset replaces whatever the failed request left.
    let mut h = Hasher::restore(&acknowledged).unwrap();
    assert_eq!(
        s.upload_append(&id, &mut st, 4, one(b"DDDD"), &mut h)
            .await
            .unwrap(),
        4
    );
    let d = h.finish();
    assert_eq!(d, sha256_of(b"AAAADDDD"));

    // The same after a partial append that wrote less than the retry will.
    let mut doomed = Hasher::restore(&acknowledged).unwrap();
    assert!(
        s.upload_append(&id, &mut st, 8, failing_after(&[b"E"]), &mut doomed)
            .await
            .is_err()
    );
    let mut h2 = Hasher::new(Algorithm::Sha256);
    h2.update(b"AAAADDDD");
    assert_eq!(
        s.upload_append(&id, &mut st, 8, one(b"FFFFFFFF"), &mut h2)
            .await
            .unwrap(),
        8
    );
    let d = h2.finish();
    assert_eq!(d, sha256_of(b"AAAADDDDFFFFFFFF"));

    s.upload_commit(&id, &st, 16, &d, Verify::Done)
        .await
        .unwrap();
    let (got, len, total) = read_all(s, &d, None).await;
    assert_eq!(got, b"AAAADDDDFFFFFFFF");
    assert_eq!((len, total), (16, 16));
}

async fn append_past_what_the_store_holds_is_upload_short(b: &Backend) {
    let s = &*b.store;
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    s.upload_append(&id, &mut st, 0, one(b"0123456789"), &mut h)
        .await
        .unwrap();
    let before = h.save();

    let mut probe = Hasher::restore(&before).unwrap();
    match s
        .upload_append(&id, &mut st, 20, one(b"zzz"), &mut probe)
        .await
    {
        Err(StorageError::UploadShort {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (20, 10)),
        other => panic!("expected UploadShort, got {other:?}"),
    }
    // Committing more than the store holds is refused the same way.
    let d = sha256_of(b"0123456789");
    match s.upload_commit(&id, &st, 11, &d, Verify::Done).await {
        Err(StorageError::UploadShort {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (11, 10)),
        other => panic!("expected UploadShort, got {other:?}"),
    }
    assert_eq!(s.stat(&d).await.unwrap(), None);

    // The upload is intact and can still be finished.
    let mut h = Hasher::restore(&before).unwrap();
    s.upload_append(&id, &mut st, 10, one(b"abc"), &mut h)
        .await
        .unwrap();
    let d = h.finish();
    s.upload_commit(&id, &st, 13, &d, Verify::Done)
        .await
        .unwrap();
    assert_eq!(read_all(s, &d, None).await.0, b"0123456789abc");

    // An upload that was never started is not found rather than short (where the store,
    // not only the metadata store, knows which uploads exist).
    if b.knows_uploads {
        let mut h = Hasher::new(Algorithm::Sha256);
        assert!(matches!(
            s.upload_append(&new_id(), &mut Vec::new(), 0, one(b"x"), &mut h)
                .await,
            Err(StorageError::UploadNotFound(_))
        ));
    }
}

async fn commit_publishes_only_the_first_size_bytes(b: &Backend) {
    let s = &*b.store;
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    s.upload_append(&id, &mut st, 0, one(b"keep"), &mut h)
        .await
        .unwrap();
    let mut extra = Hasher::new(Algorithm::Sha256);
    // Unacknowledged bytes after the session's length.
    let _ = s
        .upload_append(&id, &mut st, 4, failing_after(&[b"-junk"]), &mut extra)
        .await;
    let d = h.finish();
    s.upload_commit(&id, &st, 4, &d, Verify::Done)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(4));
    assert_eq!(read_all(s, &d, None).await.0, b"keep");
}

async fn commit_with_rehash_checks_the_digest_itself(b: &Backend) {
    // Bigger than an S3 part, so that the S3 store assembles a multipart upload first.
    let s = &*b.store;
    let bytes = pattern(6 * 1024 * 1024 + 123, 3);
    let sha512 = sha512_of(&bytes);
    let wrong = sha512_of(b"something else");
    for (digest, ok) in [(&wrong, false), (&sha512, true)] {
        let id = new_id();
        let mut st = s.upload_start(&id).await.unwrap();
        // The caller hashed with sha256 while streaming; the digest is sha512.
        let mut h = Hasher::new(Algorithm::Sha256);
        s.upload_append(
            &id,
            &mut st,
            0,
            chunks(&[&bytes[..1000], &bytes[1000..]]),
            &mut h,
        )
        .await
        .unwrap();
        let r = s
            .upload_commit(&id, &st, bytes.len() as u64, digest, Verify::Rehash)
            .await;
        if ok {
            r.expect("the right sha512 digest commits");
            assert!(read_all(s, digest, None).await.0 == bytes);
        } else {
            match r {
                Err(StorageError::DigestMismatch { expected, actual }) => {
                    assert_eq!(&expected, digest);
                    assert_eq!(actual, sha512, "the store reports what it hashed");
                }
                other => panic!("a wrong digest must be refused, got {other:?}"),
            }
            assert_eq!(s.stat(digest).await.unwrap(), None, "nothing published");
            assert_eq!(
                s.stat(&sha512).await.unwrap(),
                None,
                "nor under the real digest"
            );
            s.upload_abort(&id, &st).await.unwrap();
        }
    }
}

async fn range_reads(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(1_000_000, 4);
    let d = upload(s, &bytes, 256 * 1024).await;
    let cases: [Range<u64>; 7] = [
        0..1,
        0..100,
        400_000..600_000,
        999_999..1_000_000,
        900_000..1_000_000,
        0..1_000_000,
        262_143..262_145, // across the store's likely buffer boundary
    ];
    for r in cases {
        let (got, len, total) = read_all(s, &d, Some(r.clone())).await;
        assert_eq!(len, r.end - r.start, "len of {r:?}");
        assert_eq!(total, 1_000_000, "total of {r:?}");
        assert!(
            got == bytes[r.start as usize..r.end as usize],
            "content of {r:?}"
        );
    }
}

async fn out_of_range_reads_are_not_satisfiable(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(1000, 5);
    let d = upload(s, &bytes, 1000).await;
    // Past the end, overlapping the end, empty, and reversed.
    let reversed = Range { start: 11, end: 10 };
    for r in [1000..1001, 999..1001, 0..1001, 5000..6000, 10..10, reversed] {
        match s.read(&d, Some(r.clone())).await {
            Err(StorageError::RangeNotSatisfiable { size, .. }) => assert_eq!(size, 1000, "{r:?}"),
            Err(e) => panic!("{r:?}: expected RangeNotSatisfiable, got {e}"),
            Ok(_) => panic!("{r:?}: expected RangeNotSatisfiable, got a body"),
        }
    }
}

async fn absent_blobs_are_not_found(b: &Backend) {
    let s = &*b.store;
    let d = sha256_of(b"never stored");
    assert_eq!(s.stat(&d).await.unwrap(), None);
    match s.read(&d, None).await {
        Err(StorageError::BlobNotFound(got)) => assert_eq!(got, d),
        Err(e) => panic!("expected BlobNotFound, got {e}"),
        Ok(_) => panic!("expected BlobNotFound, got a body"),
    }
    assert!(matches!(
        s.read(&d, Some(0..1)).await,
        Err(StorageError::BlobNotFound(_))
    ));
    let d512: Digest = format!("sha512:{}", hex::encode(sha2::Sha512::digest(b"never")))
        .parse()
        .unwrap();
    assert_eq!(s.stat(&d512).await.unwrap(), None);
    assert!(matches!(
        s.read(&d512, None).await,
        Err(StorageError::BlobNotFound(_))
    ));
}

async fn a_blob_is_invisible_before_commit(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(50_000, 6);
    let d = sha256_of(&bytes);
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), None);
    let mut h = Hasher::new(Algorithm::Sha256);
    s.upload_append(&id, &mut st, 0, one(&bytes), &mut h)
        .await
        .unwrap();
    assert_eq!(
        s.stat(&d).await.unwrap(),
        None,
        "all bytes appended, not yet committed"
    );
    assert!(matches!(
        s.read(&d, None).await,
        Err(StorageError::BlobNotFound(_))
    ));
    s.upload_commit(&id, &st, bytes.len() as u64, &d, Verify::Done)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(50_000));
}

async fn upload_abort_removes_the_upload_and_is_fine_twice(b: &Backend) {
    let s = &*b.store;
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    s.upload_append(&id, &mut st, 0, one(&pattern(10_000, 7)), &mut h)
        .await
        .unwrap();
    assert!(!(b.leftovers)().is_empty(), "an open upload holds data");

    s.upload_abort(&id, &st).await.unwrap();
    s.upload_abort(&id, &st)
        .await
        .expect("aborting twice is fine");
    s.upload_abort(&new_id(), &[])
        .await
        .expect("aborting an upload never started is fine");
    assert!(
        (b.leftovers)().is_empty(),
        "abort left {:?}",
        (b.leftovers)()
    );

    // The session's data is gone: continuing or committing it is "not found".
    let mut h = Hasher::new(Algorithm::Sha256);
    assert!(matches!(
        s.upload_append(&id, &mut st, 10_000, one(b"x"), &mut h)
            .await,
        Err(StorageError::UploadNotFound(_))
    ));
    let d = sha256_of(&pattern(10_000, 7));
    assert!(matches!(
        s.upload_commit(&id, &st, 10_000, &d, Verify::Done).await,
        Err(StorageError::UploadNotFound(_))
    ));
    assert_eq!(s.stat(&d).await.unwrap(), None);

    // An empty upload aborts as well.
    let id = new_id();
    let st = s.upload_start(&id).await.unwrap();
    s.upload_abort(&id, &st).await.unwrap();
}

async fn committing_the_same_content_twice_deduplicates(b: &Backend) {
    let s = &*b.store;
    let bytes = pattern(100_000, 8);
    // Two sessions with the same content, interleaved, committed one after the other.
    let (id1, id2) = (new_id(), new_id());
    let mut st1 = s.upload_start(&id1).await.unwrap();
    let mut st2 = s.upload_start(&id2).await.unwrap();
    let (mut h1, mut h2) = (
        Hasher::new(Algorithm::Sha256),
        Hasher::new(Algorithm::Sha256),
    );
    s.upload_append(&id1, &mut st1, 0, one(&bytes[..50_000]), &mut h1)
        .await
        .unwrap();
    s.upload_append(&id2, &mut st2, 0, one(&bytes), &mut h2)
        .await
        .unwrap();
    s.upload_append(&id1, &mut st1, 50_000, one(&bytes[50_000..]), &mut h1)
        .await
        .unwrap();
    let (d1, d2) = (h1.finish(), h2.finish());
    assert_eq!(d1, d2);
    s.upload_commit(&id1, &st1, 100_000, &d1, Verify::Done)
        .await
        .unwrap();
    let reader = s.read(&d1, None).await.unwrap(); // a read in progress during the second commit
    s.upload_commit(&id2, &st2, 100_000, &d2, Verify::Done)
        .await
        .expect("committing content the store has is fine");
    assert!(collect(reader.body).await == bytes);
    assert_eq!(s.stat(&d1).await.unwrap(), Some(100_000));
    assert!(read_all(s, &d1, None).await.0 == bytes);
    // And a third time through the helper.
    assert_eq!(upload(s, &bytes, 30_000).await, d1);
    assert!(read_all(s, &d1, None).await.0 == bytes);
}

async fn zero_byte_blob(b: &Backend) {
    let s = &*b.store;
    let empty = sha256_of(b"");
    // Committed without any append.
    let id = new_id();
    let st = s.upload_start(&id).await.unwrap();
    s.upload_commit(&id, &st, 0, &empty, Verify::Done)
        .await
        .unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
    let (got, len, total) = read_all(s, &empty, None).await;
    assert!(got.is_empty());
    assert_eq!((len, total), (0, 0));
    assert!(matches!(
        s.read(&empty, Some(0..1)).await,
        Err(StorageError::RangeNotSatisfiable { .. })
    ));

    // With an empty append (a PATCH with no body).
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    assert_eq!(
        s.upload_append(&id, &mut st, 0, chunks::<&[u8]>(&[]), &mut h)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.upload_append(&id, &mut st, 0, one(b""), &mut h)
            .await
            .unwrap(),
        0
    );
    assert_eq!(h.finish(), empty);
    s.upload_commit(&id, &st, 0, &empty, Verify::Done)
        .await
        .unwrap();
    assert_eq!(s.stat(&empty).await.unwrap(), Some(0));
}

async fn delete_removes_a_committed_blob(b: &Backend) {
    let s = &*b.store;
    let d = upload(s, b"to be collected", 4).await;
    let keep = upload(s, b"to be kept", 4).await;
    s.delete(&d).await.unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), None);
    assert!(matches!(
        s.read(&d, None).await,
        Err(StorageError::BlobNotFound(_))
    ));
    assert_eq!(read_all(s, &keep, None).await.0, b"to be kept");
    // It can be pushed again.
    assert_eq!(upload(s, b"to be collected", 100).await, d);
    assert_eq!(read_all(s, &d, None).await.0, b"to be collected");
}

async fn upload_ids_with_path_characters_are_refused(b: &Backend) {
    let s = &*b.store;
    let bad = [
        "../x",
        "a/b",
        "..",
        ".",
        "",
        "/tmp/evil",
        "a\\b",
        "x\0y",
        "../../blobs/sha256/aa/bb",
        "a b",
    ];
    let d = sha256_of(b"");
    for id in bad {
        assert!(
            s.upload_start(id).await.is_err(),
            "upload_start({id:?}) must be refused"
        );
        let mut h = Hasher::new(Algorithm::Sha256);
        assert!(
            s.upload_append(id, &mut Vec::new(), 0, one(b"payload"), &mut h)
                .await
                .is_err(),
            "upload_append({id:?}) must be refused"
        );
        assert!(
            s.upload_commit(id, &[], 0, &d, Verify::Done).await.is_err(),
            "upload_commit({id:?}) must be refused"
        );
        let _ = s.upload_abort(id, &[]).await; // refused or a no-op; it must not touch anything
    }
    assert_eq!(s.stat(&d).await.unwrap(), None, "nothing was committed");
    if let Some(dir) = fs_root(b) {
        // The store lives in `<dir>/store`; nothing may appear beside or above it.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["store"], "files created outside the store root");
        assert!(!dir.join("store/x").exists());
        assert!(!dir.join("store/uploads/a").exists());
    }
}

async fn a_64_mib_streamed_upload_commits_with_the_right_digest(b: &Backend) {
    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: u64 = 64;
    let s = &*b.store;
    let id = new_id();
    let mut st = s.upload_start(&id).await.unwrap();

    // Chunks are generated as the store pulls them, and hashed independently on the way.
    let expected = Arc::new(std::sync::Mutex::new(sha2::Sha256::new()));
    let tap = expected.clone();
    let body: ByteStream = stream::unfold(0u64, move |i| {
        let tap = tap.clone();
        async move {
            if i == CHUNKS {
                return None;
            }
            let chunk = Bytes::from(pattern(CHUNK, 1000 + i));
            tap.lock().unwrap().update(&chunk);
            Some((Ok(chunk), i + 1))
        }
    })
    .boxed();
    let mut h = Hasher::new(Algorithm::Sha256);
    let n = s
        .upload_append(&id, &mut st, 0, body, &mut h)
        .await
        .unwrap();
    assert_eq!(n, CHUNK as u64 * CHUNKS);
    let d = h.finish();
    let want = format!(
        "sha256:{}",
        hex::encode(expected.lock().unwrap().clone().finalize())
    );
    assert_eq!(d.to_string(), want);
    s.upload_commit(&id, &st, n, &d, Verify::Done)
        .await
        .unwrap();
    assert_eq!(s.stat(&d).await.unwrap(), Some(64 * 1024 * 1024));

    // Reading it back streams the same bytes.
    let r = s.read(&d, None).await.unwrap();
    assert_eq!(r.len, 64 * 1024 * 1024);
    let mut body = r.body;
    let mut back = sha2::Sha256::new();
    let mut count = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        count += chunk.len() as u64;
        back.update(&chunk);
    }
    assert_eq!(count, 64 * 1024 * 1024);
    assert_eq!(format!("sha256:{}", hex::encode(back.finalize())), want);
}

/// The upload's file in a filesystem store (`None` for other backends).
fn upload_file_len(b: &Backend, id: &str) -> Option<u64> {
    let root = fs_root(b)?;
    let meta = std::fs::metadata(root.join("store/uploads").join(id)).expect("upload file");
    Some(meta.len())
}

/// Appends `total` generated bytes in appends of `sizes`, append `i` by `stores[i % 2]`,
/// each after a failed request that sent more than it will (by `stores[(i + 1) % 2]`,
/// on every append where `fail(i)`); after each, `file_len` (when given) must read exactly
/// the acknowledged bytes. Then commits, reads the blob back and checks it byte by byte.
async fn append_in_turns_with_failures(
    stores: [&dyn BlobStore; 2],
    sizes: &[usize],
    seed: u64,
    fail: impl Fn(usize) -> bool,
    file_len: impl Fn(&str) -> Option<u64>,
) {
    let total: usize = sizes.iter().sum();
    let bytes = pattern(total, seed);
    let id = new_id();
    let mut st = stores[0].upload_start(&id).await.unwrap();
    let mut h = Hasher::new(Algorithm::Sha256);
    let mut off = 0usize;
    for (i, &n) in sizes.iter().enumerate() {
        if fail(i) {
            // Never acknowledged, so it must leave no trace in what the session holds.
            let junk = pattern(n + 70_000, seed + 100 + i as u64);
            let mut doomed = Hasher::restore(&h.save()).unwrap();
            let r = stores[(i + 1) % 2]
                .upload_append(
                    &id,
                    &mut st,
                    off as u64,
                    failing_after(&[&junk[..n / 2 + 1], &junk[n / 2 + 1..]]),
                    &mut doomed,
                )
                .await;
            assert!(
                matches!(r, Err(StorageError::Body(_))),
                "a failing body is a Body error: {r:?}"
            );
        }
        let part = &bytes[off..off + n];
        let got = stores[i % 2]
            .upload_append(
                &id,
                &mut st,
                off as u64,
                chunks(&[&part[..n / 3], &part[n / 3..]]),
                &mut h,
            )
            .await
            .unwrap();
        assert_eq!(got, n as u64, "append {i} acknowledged its bytes");
        off += n;
        if let Some(len) = file_len(&id) {
            assert_eq!(
                len, off as u64,
                "after append {i} the upload file holds exactly the acknowledged bytes"
            );
        }
    }
    let d = h.finish();
    assert_eq!(
        d,
        sha256_of(&bytes),
        "the hasher saw exactly the acknowledged bytes"
    );
    stores[1]
        .upload_commit(&id, &st, total as u64, &d, Verify::Done)
        .await
        .unwrap();
    let (got, len, all) = read_all(stores[0], &d, None).await;
    assert_eq!((len, all), (total as u64, total as u64));
    assert!(got == bytes, "the blob is byte-exact");
}

async fn appends_at_unaligned_offsets_keep_every_byte_and_nothing_more(b: &Backend) {
    // Appends start and end inside 4 KiB blocks and straddle the filesystem store's 1 MiB
    // direct-write buffer; bodies over 1 MiB hand their hash to a thread of its own.
    let sizes = [
        1usize,
        4095,
        1 << 20,
        (1 << 20) + 4097,
        3 * (1 << 20) - 5,
        4096,
        12_345,
    ];
    let s = &*b.store;
    append_in_turns_with_failures(
        [s, s],
        &sizes,
        11,
        |i| i % 2 == 1,
        |id| upload_file_len(b, id),
    )
    .await;
}

async fn concurrent_appends_each_keep_their_own_bytes(b: &Backend) {
    let s = &*b.store;
    // More appends at once than the machine has cores: the filesystem store writes the first
    // ones directly, hashing on threads of their own, and the rest through the page cache
    // with the hash inline. Each upload gets two appends, the second at an unaligned offset.
    let n = 2 * std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let blobs: Vec<Vec<u8>> = (0..n)
        .map(|i| pattern(2 * (1 << 20) + 777 * (i + 1), 300 + i as u64))
        .collect();
    let pushes = blobs.iter().map(|bytes| async move {
        let id = new_id();
        let mut st = s.upload_start(&id).await.unwrap();
        let mut h = Hasher::new(Algorithm::Sha256);
        let cut = (1 << 20) + 3;
        let first = s
            .upload_append(&id, &mut st, 0, one(&bytes[..cut]), &mut h)
            .await
            .unwrap();
        let second = s
            .upload_append(&id, &mut st, first, one(&bytes[cut..]), &mut h)
            .await
            .unwrap();
        assert_eq!(first + second, bytes.len() as u64);
        let d = h.finish();
        s.upload_commit(&id, &st, bytes.len() as u64, &d, Verify::Done)
            .await
            .unwrap();
        d
    });
    let digests = futures::future::join_all(pushes).await;
    for (bytes, d) in blobs.iter().zip(&digests) {
        assert_eq!(*d, sha256_of(bytes), "each upload hashed its own bytes");
        let (got, _, _) = read_all(s, d, None).await;
        assert!(got == *bytes, "each blob holds its own bytes");
    }
}

// ---------------------------------------------------------------------------------------
// The filesystem store only

/// A store over `root` writing as `io` says.
async fn fs_store(root: &Path, io: UploadIo) -> FsBlobStore {
    let s = FsBlobStore::open_with(root, io)
        .await
        .expect("open fs store");
    assert_eq!(s.upload_io(), io);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_and_buffered_appends_mix_on_one_upload() {
    // Two stores on one root, as two replicas (or one store switching modes under load)
    // may be: appends alternate between direct and page-cache writes, each starting where
    // the other left off mid-block, each after a failed request by the other kind.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let direct = fs_store(&root, UploadIo::Direct).await;
    let buffered = fs_store(&root, UploadIo::Buffered).await;
    let sizes = [
        5000usize,
        70_001,
        (1 << 20) + 1,
        4096,
        123,
        2 * (1 << 20) + 4095,
    ];
    let uploads = root.join("uploads");
    append_in_turns_with_failures(
        [&direct, &buffered],
        &sizes,
        21,
        |_| true,
        |id| Some(std::fs::metadata(uploads.join(id)).unwrap().len()),
    )
    .await;
}

/// Takes `f`'s exclusive `flock`, as the store's writer does.
fn lock(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor `f` keeps open.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_still_holding_the_upload_file_holds_back_appends_and_the_commit() {
    // A request whose client went away gives its claim on the session up at once, while
    // its writer thread may still be draining what it received; the next append and the
    // commit must wait for it (the writer holds the file's lock), or its last writes could
    // land in the retry's bytes or in the published blob. The test holds the lock itself,
    // as such a writer (in this or another process) would.
    for io in [UploadIo::Direct, UploadIo::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let s = Arc::new(fs_store(&root, io).await);
        let id = new_id();
        let mut st = s.upload_start(&id).await.unwrap();
        let mut h = Hasher::new(Algorithm::Sha256);
        s.upload_append(&id, &mut st, 0, one(b"AAAA"), &mut h)
            .await
            .unwrap();
        let file = root.join("uploads").join(&id);
        let wait = std::time::Duration::from_millis(300);

        let held = std::fs::File::open(&file).unwrap();
        lock(&held);
        let append = tokio::spawn({
            let (s, id, mut st) = (s.clone(), id.clone(), st.clone());
            async move {
                let n = s
                    .upload_append(&id, &mut st, 4, one(b"BBBB"), &mut h)
                    .await
                    .unwrap();
                (n, h)
            }
        });
        tokio::time::sleep(wait).await;
        assert!(
            !append.is_finished(),
            "{io:?}: the append waited for the lock"
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            4,
            "{io:?}: nothing written yet"
        );
        drop(held);
        let (n, h) = append.await.unwrap();
        assert_eq!(n, 4);
        let d = h.finish();
        assert_eq!(d, sha256_of(b"AAAABBBB"));

        let held = std::fs::File::open(&file).unwrap();
        lock(&held);
        let commit = tokio::spawn({
            let (s, id, st, d) = (s.clone(), id.clone(), st.clone(), d.clone());
            async move { s.upload_commit(&id, &st, 8, &d, Verify::Done).await }
        });
        tokio::time::sleep(wait).await;
        assert!(
            !commit.is_finished(),
            "{io:?}: the commit waited for the lock"
        );
        assert_eq!(
            s.stat(&d).await.unwrap(),
            None,
            "{io:?}: nothing published yet"
        );
        drop(held);
        commit.await.unwrap().unwrap();
        let (got, _, _) = read_all(&*s, &d, None).await;
        assert_eq!(got, b"AAAABBBB");
    }
}

/// A ramfs mounted on a temporary directory, unmounted on drop; `None` where this process
/// may not mount (not root, or no CAP_SYS_ADMIN).
struct Ramfs {
    dir: tempfile::TempDir,
}

impl Ramfs {
    fn mount() -> Option<Ramfs> {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let fstype = c"ramfs";
        // SAFETY: valid NUL-terminated strings; no mount data.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!(
                "SKIPPED: cannot mount a ramfs here ({}); needs root",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Ramfs { dir })
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path this value mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filesystem_that_refuses_direct_io_gets_page_cache_writes() {
    // ramfs refuses O_DIRECT at open (EINVAL): a store asked for direct writes there must
    // find out when it opens, write through the page cache instead, and leave no probe
    // file behind.
    let Some(ramfs) = Ramfs::mount() else { return };
    let refused = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(ramfs.dir.path().join("probe"));
    assert!(
        refused.is_err(),
        "this kernel's ramfs accepts O_DIRECT: the test needs another filesystem"
    );
    let root = ramfs.dir.path().join("store");
    let s = FsBlobStore::open_with(&root, UploadIo::Direct)
        .await
        .expect("open fs store on ramfs");
    assert_eq!(s.upload_io(), UploadIo::Buffered);
    assert!(
        fs_leftovers(&root).is_empty(),
        "the probe left {:?}",
        fs_leftovers(&root)
    );
    // Bodies past the inline hash and across the direct buffer's size, at odd offsets.
    let bytes = pattern(3 * (1 << 20) + 12_345, 77);
    let d = upload(&s, &bytes, (1 << 20) + 4097).await;
    let (got, len, total) = read_all(&s, &d, None).await;
    assert_eq!((len, total), (bytes.len() as u64, bytes.len() as u64));
    assert!(
        got == bytes,
        "the blob read back differs from what was written"
    );
    assert!(fs_leftovers(&root).is_empty(), "{:?}", fs_leftovers(&root));
}
