//! A full disk is survived (issue 20, item 9): Berth's data directory (blobs and the SQLite
//! database) on a small tmpfs the test mounts. A push that fills it fails with 507
//! `INSUFFICIENT_STORAGE` and gives its room back at once, pulls go on, the low-water mark
//! refuses new uploads before the disk is full, and pushes work again as soon as space is
//! freed, without a restart.
//!
//! Needs root (mount); skips with a message otherwise, and on the S3 store.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const MIB: usize = 1024 * 1024;

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) when this process may not mount.
    fn mount(size: &str) -> Option<SmallDisk> {
        if s3_by_default() {
            eprintln!("SKIPPED: a full disk concerns the filesystem store, not S3");
            return None;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a small filesystem needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "berth-full-disk",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "SKIPPED: mount refused a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes still free on it.
    fn free(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.path().as_os_str().as_bytes()).expect("path");
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: a NUL-terminated path and a buffer statvfs fills.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) }, 0);
        // SAFETY: statvfs succeeded.
        let st = unsafe { st.assume_init() };
        st.f_bavail * st.f_frsize
    }

    /// Writes a filler file until at most `leave` bytes are free (0: until the disk is
    /// full); returns its path.
    fn fill(&self, name: &str, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0x5au8; 64 * 1024];
        for _ in 0..(64 * 1024) {
            let free = self.free();
            if free <= leave {
                break;
            }
            let n = block.len().min((free - leave) as usize);
            match f.write_all(&block[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("writing the filler: {e}"),
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the server's log file may still be open in a thread of this process for a
        // moment after the server is gone.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A server whose data directory (SQLite database and blob store) is on `disk`.
fn berth_on(disk: &SmallDisk, min_free_bytes: u64) -> Berth {
    Berth::start_with(Options {
        data_dir: Some(disk.path().to_path_buf()),
        env: vec![(
            "BERTH_STORAGE__MIN_FREE_BYTES".into(),
            min_free_bytes.to_string(),
        )],
        ..Options::default()
    })
}

/// Pulls `repo:reference` and its layer and checks both byte for byte.
async fn assert_pulls(c: &reqwest::Client, b: &Berth, repo: &str, tag: &str, layer: &[u8]) {
    let m = image_over_layer(layer);
    let r = c
        .get(b.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(r.status(), 200, "pulling {repo}:{tag}");
    assert_eq!(r.bytes().await.expect("manifest").as_ref(), m.as_slice());
    let r = c
        .get(b.url(&format!("/v2/{repo}/blobs/{}", sha256(layer))))
        .send()
        .await
        .expect("blob GET");
    assert_eq!(r.status(), 200, "pulling the layer of {repo}:{tag}");
    let got = r.bytes().await.expect("layer");
    assert!(got.as_ref() == layer, "the layer of {repo}:{tag} changed");
}

/// Sends `bytes` as the chunk of `url` that starts at `start`.
async fn patch(c: &reqwest::Client, url: &str, start: usize, bytes: Vec<u8>) -> reqwest::Response {
    let end = start + bytes.len() - 1;
    c.patch(url)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(bytes)
        .send()
        .await
        .expect("PATCH")
}

/// Bytes the upload files take on the disk (what `du` says), and their lengths.
fn uploads_on_disk(b: &Berth) -> (u64, u64) {
    b.upload_files().iter().fold((0, 0), |(du, len), p| {
        let m = std::fs::metadata(p).expect("upload file");
        (du + m.blocks() * 512, len + m.len())
    })
}

/// The upload's `Range` as the status endpoint reports it.
async fn upload_range(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.expect("upload status");
    assert_eq!(r.status(), 204, "upload status");
    header_str(&r, "range")
}

#[tokio::test]
async fn a_push_that_fills_the_disk_is_refused_with_507_frees_its_bytes_at_once_and_pushes_work_again_once_space_is_freed()
 {
    let Some(disk) = SmallDisk::mount("40m") else {
        return;
    };
    let b = berth_on(&disk, 0);
    let c = client();
    let layer_v1 = pattern(MIB, 1);
    push_image(&c, &b, "full/app", "v1", &layer_v1).await;

    // A chunked upload with one acknowledged megabyte, then a chunk the disk cannot hold.
    let blob = pattern(3 * MIB, 2);
    let session = open_upload(&c, &b, "full/app").await;
    let r = patch(&c, &session, 0, blob[..MIB].to_vec()).await;
    assert_eq!(r.status(), 202, "first chunk");
    let free_before = disk.free();
    let r = patch(&c, &session, MIB, pattern(60 * MIB, 3)).await;
    let message = expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
    assert!(message.contains("out of storage space"), "{message}");
    // Cut back to the acknowledged megabyte at once, not at the next append.
    let (du, len) = uploads_on_disk(&b);
    assert_eq!(
        len, MIB as u64,
        "upload files hold more than what was acknowledged"
    );
    assert!(
        du <= (MIB + 64 * 1024) as u64,
        "uploads/ still takes {du} bytes"
    );
    assert!(
        disk.free() + (MIB as u64) >= free_before,
        "the failed chunk's bytes were not given back: {} free, {free_before} before",
        disk.free()
    );
    assert_eq!(upload_range(&c, &session).await, format!("0-{}", MIB - 1));

    // A monolithic upload too big for the disk: refused the same way, nothing kept.
    let big = pattern(60 * MIB, 4);
    let r = c
        .post(b.url(&format!(
            "/v2/full/app/blobs/uploads/?digest={}",
            sha256(&big)
        )))
        .header("content-type", "application/octet-stream")
        .body(big)
        .send()
        .await
        .expect("monolithic POST");
    expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
    assert_eq!(uploads_on_disk(&b).1, MIB as u64);
    assert_eq!(
        b.upload_files().len(),
        1,
        "the refused monolithic upload left data"
    );
    assert_pulls(&c, &b, "full/app", "v1", &layer_v1).await;

    // The disk full to the last byte: an append is refused and the session keeps its
    // length; a manifest put is stored or refused as out of space, never a 500; pulls go on.
    let filler = disk.fill("filler", 0);
    let r = patch(&c, &session, MIB, blob[MIB..2 * MIB].to_vec()).await;
    expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
    assert_eq!(uploads_on_disk(&b).1, MIB as u64);
    let v2 = image_manifest(
        (OCI_CONFIG, &sha256(IMAGE_CONFIG), IMAGE_CONFIG.len()),
        &[
            (OCI_LAYER, &sha256(&layer_v1), layer_v1.len()),
            (OCI_LAYER, &sha256(&layer_v1), layer_v1.len()),
        ],
    );
    let r = c
        .put(b.url("/v2/full/app/manifests/v2"))
        .header("content-type", OCI_MANIFEST)
        .body(v2)
        .send()
        .await
        .expect("manifest PUT");
    match r.status().as_u16() {
        201 => {}
        507 => {
            expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
        }
        other => panic!(
            "a manifest put on a full disk got {other}: {:?}",
            r.text().await
        ),
    }
    assert_pulls(&c, &b, "full/app", "v1", &layer_v1).await;
    let r = c
        .post(b.url("/v2/full/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    expect_error(r, 507, "INSUFFICIENT_STORAGE").await;

    // Space freed: the same server takes the rest of the upload and new pushes.
    std::fs::remove_file(&filler).expect("remove filler");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = patch(&c, &session, MIB, blob[MIB..].to_vec()).await;
    assert_eq!(
        r.status(),
        202,
        "the rest of the upload after space was freed"
    );
    let r = c
        .put(with_query(&session, &format!("digest={}", sha256(&blob))))
        .send()
        .await
        .expect("PUT");
    assert_eq!(
        r.status(),
        201,
        "finishing the upload: {:?}",
        r.text().await
    );
    assert_eq!(b.stored_blob(&sha256(&blob)), blob);
    let layer_v3 = pattern(2 * MIB, 5);
    push_image(&c, &b, "full/app", "v3", &layer_v3).await;
    assert_pulls(&c, &b, "full/app", "v3", &layer_v3).await;
    assert_pulls(&c, &b, "full/app", "v1", &layer_v1).await;
}

#[tokio::test]
async fn the_low_water_mark_refuses_new_uploads_before_the_disk_is_full_while_uploads_under_way_and_manifests_go_on()
 {
    let Some(disk) = SmallDisk::mount("40m") else {
        return;
    };
    let b = berth_on(&disk, 8 * MIB as u64);
    let c = client();
    let layer_v1 = pattern(MIB, 11);
    push_image(&c, &b, "low/app", "v1", &layer_v1).await;
    let session = open_upload(&c, &b, "low/app").await;

    let filler = disk.fill("filler", 4 * MIB as u64);
    assert!(disk.free() > 0 && disk.free() < 8 * MIB as u64);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .post(b.url("/v2/low/app/blobs/uploads/"))
        .send()
        .await
        .expect("POST");
    expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
    let small = pattern(1000, 12);
    let r = c
        .post(b.url(&format!(
            "/v2/low/app/blobs/uploads/?digest={}",
            sha256(&small)
        )))
        .header("content-type", "application/octet-stream")
        .body(small.clone())
        .send()
        .await
        .expect("monolithic POST");
    expect_error(r, 507, "INSUFFICIENT_STORAGE").await;
    assert_eq!(b.upload_files().len(), 1, "a refused upload left data");
    // The session opened before goes on, and the database has room for manifests.
    let r = patch(&c, &session, 0, small.clone()).await;
    assert_eq!(r.status(), 202, "an upload under way below the mark");
    let r = c
        .put(with_query(&session, &format!("digest={}", sha256(&small))))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let r = c
        .put(b.url("/v2/low/app/manifests/again"))
        .header("content-type", OCI_MANIFEST)
        .body(image_over_layer(&layer_v1))
        .send()
        .await
        .expect("manifest PUT");
    assert_eq!(r.status(), 201, "a manifest below the mark");
    assert_pulls(&c, &b, "low/app", "v1", &layer_v1).await;
    // Readiness says so but stays 200 (pulls go on); the metric shows it.
    let r = c.get(b.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.expect("readyz JSON");
    let space = ready["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "disk space"))
        .cloned()
        .expect("a disk space check");
    assert_eq!(space["ok"], false, "{ready}");
    assert_eq!(space["advisory"], true, "{ready}");
    assert!(
        space["reason"]
            .as_str()
            .unwrap_or("")
            .contains("min_free_bytes"),
        "{ready}"
    );
    assert_eq!(
        metric_value(&c, &b, "berth_storage_low_space").await,
        Some(1.0)
    );

    std::fs::remove_file(&filler).expect("remove filler");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let layer_v2 = pattern(MIB, 13);
    push_image(&c, &b, "low/app", "v2", &layer_v2).await;
    let ready: serde_json::Value = c
        .get(b.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ready["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{ready}"
    );
    assert_pulls(&c, &b, "low/app", "v2", &layer_v2).await;
    assert_pulls(&c, &b, "low/app", "again", &layer_v1).await;
}
