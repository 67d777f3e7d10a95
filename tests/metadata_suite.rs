//! The one `MetadataStore` suite: every rule below runs against every backend.
//!
//! Each rule is a plain async function over a store, in a module per metadata domain, as
//! the traits in `src/metadata/` are split (`repositories`, `uploads`). `rules!` turns one
//! domain's list into `#[tokio::test]`s for one backend and `metadata_suite!` does so for
//! every domain, so a new backend is one more `metadata_suite!(name, opener)` line and a
//! new domain one more module and one more `rules!` in the macro. SQLite runs twice: as
//! maintenance commands open it and as the server does (locked, manifest lookups cached).
//! PostgreSQL runs twice too: on a database with the server's default collation, and on one
//! whose default collation is ICU `en-US`, where `ORDER BY` on an unqualified text column
//! would not be byte order.

mod common;

use std::sync::Arc;

use berth::metadata::SqlMetadataStore;
use berth::metadata::prelude::*;
use berth::oci::{Digest, RepoName};

type Store = Arc<dyn MetadataStore>;

/// A store under test and whatever keeps its backing alive.
struct Backend {
    sql: Arc<SqlMetadataStore>,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn open(url: String, dir: Option<tempfile::TempDir>) -> Backend {
        Self::open_as(url, dir, false).await
    }

    /// `owned`: as `berth serve` opens it (SQLite locked, manifest lookups cached).
    async fn open_as(url: String, dir: Option<tempfile::TempDir>, owned: bool) -> Backend {
        let mut sql = SqlMetadataStore::connect(&url, 4).await.expect("connect");
        sql.migrate().await.expect("migrate");
        if owned {
            sql.own_exclusively().expect("lock the database");
        }
        Backend {
            sql: Arc::new(sql),
            url,
            _dir: dir,
        }
    }

    fn store(&self) -> Store {
        self.sql.clone()
    }
}

async fn open_sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    Backend::open(url, Some(dir)).await
}

/// SQLite as the server holds it: every rule must hold through the manifest cache too.
async fn open_sqlite_owned() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    Backend::open_as(url, Some(dir), true).await
}

async fn open_postgres() -> Backend {
    Backend::open(common::fresh_postgres_db().await, None).await
}

/// A fresh database whose default collation is ICU `en-US` (case-insensitive-ish,
/// punctuation-ignoring at the first level), as many production clusters are set up.
async fn open_postgres_icu() -> Backend {
    use sqlx::Connection;
    let admin = common::postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to test PostgreSQL");
    let name = format!("berth_icu_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    ))
    .execute(&mut conn)
    .await
    .expect("create an ICU-collated test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("database URL has a path");
    Backend::open(format!("{base}/{name}"), None).await
}

/// One domain's rules as tests on one backend: `crate::<domain>::<rule>` for each.
macro_rules! rules {
    ($open:path, $domain:ident => [$($rule:ident),* $(,)?]) => {
        mod $domain {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $rule() {
                    let backend = $open().await;
                    crate::$domain::$rule(&backend.store()).await;
                    backend.sql.close().await;
                }
            )*
        }
    };
}

macro_rules! metadata_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn migrations_are_idempotent() {
                let backend = $open().await;
                crate::migrations_are_idempotent(&backend).await;
                backend.sql.close().await;
            }

            rules!($open, repositories => [
                repositories_are_created_by_link_blob_and_put_manifest,
                repositories_list_in_byte_order_with_pagination,
                blob_links_are_per_repository,
                linked_blobs_answer_only_for_this_repository_in_one_call,
                repositories_with_a_blob_list_in_byte_order_with_pagination,
                put_manifest_refuses_missing_references_and_stores_nothing,
                put_manifest_stores_content_byte_exact_with_media_type,
                tags_point_at_manifests_and_retagging_moves_them,
                delete_manifest_removes_its_tags,
                delete_tag_keeps_the_manifest,
                tags_list_in_byte_order_with_pagination,
                reads_given_up_half_way_leave_nothing_for_the_next_read,
                referrers_by_subject_with_and_without_artifact_type,
            ]);

            rules!($open, uploads => [
                upload_sessions_create_get_and_delete,
                advance_upload_from_a_stale_offset_conflicts_and_changes_nothing,
                concurrent_advance_upload_has_exactly_one_winner,
                upload_claims_admit_one_writer_until_released_or_expired,
                concurrent_claims_have_exactly_one_winner,
                stale_uploads_are_listed_by_last_write_and_live_claims_are_spared,
            ]);
        }
    };
}

metadata_suite!(sqlite, crate::open_sqlite);
metadata_suite!(sqlite_owned, crate::open_sqlite_owned);
metadata_suite!(postgres, crate::open_postgres);
metadata_suite!(postgres_icu_collation, crate::open_postgres_icu);

// ---------------------------------------------------------------------------------------
// Helpers every domain uses

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).expect("valid repository name")
}

/// A distinct digest per label.
fn digest_of(label: &str) -> Digest {
    Digest::sha256(label.as_bytes())
}

// ---------------------------------------------------------------------------------------
// The store as a whole

async fn migrations_are_idempotent(b: &Backend) {
    let m = b.store();
    let r = repo("survives/migrate");
    m.link_blob(&r, &digest_of("b"), 3).await.unwrap();
    b.sql
        .migrate()
        .await
        .expect("migrating an up-to-date database again is a no-op");
    b.sql.migrate().await.expect("and a third time");
    // Another process starting on the same database migrates too.
    let other = SqlMetadataStore::connect(&b.url, 2)
        .await
        .expect("second connection");
    other
        .migrate()
        .await
        .expect("a second process migrates the same database");
    assert_eq!(
        other.linked_blob(&r, &digest_of("b")).await.unwrap(),
        Some(3)
    );
    other.close().await;
    assert_eq!(m.linked_blob(&r, &digest_of("b")).await.unwrap(), Some(3));
}

// ---------------------------------------------------------------------------------------
// Repositories: repositories, blob links, manifests, tags, referrers

mod repositories {
    use std::collections::BTreeSet;

    use berth::metadata::{MetaError, NewManifest};
    use berth::oci::{Digest, Reference, RepoName};

    use crate::{Store, digest_of, repo};

    fn tag(s: &str) -> Reference {
        Reference::Tag(s.to_string())
    }

    fn by_digest(d: &Digest) -> Reference {
        Reference::Digest(d.clone())
    }

    /// A manifest in `repository` with content `content`, referencing nothing.
    fn manifest(repository: &RepoName, content: &[u8]) -> NewManifest {
        NewManifest {
            repository: repository.clone(),
            digest: Digest::sha256(content),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: content.to_vec(),
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: vec![],
            manifests: vec![],
            tags: vec![],
        }
    }

    fn tagged(mut m: NewManifest, tags: &[&str]) -> NewManifest {
        m.tags = tags.iter().map(|t| t.to_string()).collect();
        m
    }

    async fn put(m: &Store, nm: &NewManifest) {
        m.put_manifest(nm).await.expect("put_manifest");
    }

    async fn manifest_digest(m: &Store, r: &RepoName, reference: &Reference) -> Option<Digest> {
        m.get_manifest(r, reference)
            .await
            .expect("get_manifest")
            .map(|rec| rec.digest)
    }

    async fn all_tags(m: &Store, r: &RepoName) -> Vec<String> {
        m.list_tags(r, None, 1000).await.expect("list_tags")
    }

    pub(crate) async fn repositories_are_created_by_link_blob_and_put_manifest(m: &Store) {
        let (a, b, c) = (repo("p/linked"), repo("p/manifested"), repo("p/never"));
        for r in [&a, &b, &c] {
            assert!(!m.repository_exists(r).await.unwrap());
        }
        assert!(m.list_repositories(None, 100).await.unwrap().is_empty());

        m.link_blob(&a, &digest_of("blob"), 10).await.unwrap();
        put(m, &manifest(&b, b"{}")).await;

        assert!(m.repository_exists(&a).await.unwrap());
        assert!(m.repository_exists(&b).await.unwrap());
        assert!(!m.repository_exists(&c).await.unwrap());
        assert_eq!(
            m.list_repositories(None, 100).await.unwrap(),
            ["p/linked", "p/manifested"]
        );

        // Linking again or into an existing repository does not duplicate it.
        m.link_blob(&a, &digest_of("blob"), 10).await.unwrap();
        m.link_blob(&b, &digest_of("blob"), 10).await.unwrap();
        assert_eq!(
            m.list_repositories(None, 100).await.unwrap(),
            ["p/linked", "p/manifested"]
        );
    }

    pub(crate) async fn repositories_list_in_byte_order_with_pagination(m: &Store) {
        // Byte order: '-' (0x2d) < '.' < '/' < '0' < '_' (0x5f) < 'a'. A locale collation
        // ignores the punctuation and would interleave these.
        let names = ["b", "a_b", "a0", "a/b", "ab", "a.b", "a-b", "a/b/c"];
        for (i, n) in names.iter().enumerate() {
            m.link_blob(&repo(n), &digest_of(n), i as u64)
                .await
                .unwrap();
        }
        let mut expected: Vec<&str> = names.to_vec();
        expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        assert_eq!(
            expected,
            ["a-b", "a.b", "a/b", "a/b/c", "a0", "a_b", "ab", "b"]
        );

        assert_eq!(m.list_repositories(None, 100).await.unwrap(), expected);

        // Pages of 3 cover everything once, in order.
        let mut paged = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = m.list_repositories(last.as_deref(), 3).await.unwrap();
            assert!(page.len() <= 3, "page larger than n: {page:?}");
            if page.is_empty() {
                break;
            }
            last = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, expected);

        assert_eq!(
            m.list_repositories(Some("a/b"), 2).await.unwrap(),
            ["a/b/c", "a0"]
        );
        // `last` need not be a repository that exists.
        assert_eq!(
            m.list_repositories(Some("a1"), 100).await.unwrap(),
            ["a_b", "ab", "b"]
        );
        assert_eq!(m.list_repositories(Some("Z"), 1).await.unwrap(), ["a-b"]);
        assert!(
            m.list_repositories(Some("b"), 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            m.list_repositories(Some("zzz"), 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(m.list_repositories(None, 0).await.unwrap().is_empty());
    }

    pub(crate) async fn blob_links_are_per_repository(m: &Store) {
        let (a, b) = (repo("proj/a"), repo("proj/b"));
        let (x, y) = (digest_of("x"), digest_of("y"));

        assert_eq!(m.linked_blob(&a, &x).await.unwrap(), None);
        m.link_blob(&a, &x, 1234).await.unwrap();
        assert_eq!(m.linked_blob(&a, &x).await.unwrap(), Some(1234));
        assert_eq!(
            m.linked_blob(&b, &x).await.unwrap(),
            None,
            "linked in A is not linked in B"
        );
        assert_eq!(m.linked_blob(&a, &y).await.unwrap(), None);

        // Linking twice is harmless; the same blob may be linked into B as well.
        m.link_blob(&a, &x, 1234).await.unwrap();
        m.link_blob(&b, &x, 1234).await.unwrap();
        assert_eq!(m.linked_blob(&b, &x).await.unwrap(), Some(1234));

        // A zero-byte blob keeps its size.
        m.link_blob(&a, &y, 0).await.unwrap();
        assert_eq!(m.linked_blob(&a, &y).await.unwrap(), Some(0));

        // Unlinking from A leaves B's link.
        assert!(m.unlink_blob(&a, &x).await.unwrap());
        assert_eq!(m.linked_blob(&a, &x).await.unwrap(), None);
        assert_eq!(m.linked_blob(&b, &x).await.unwrap(), Some(1234));
        assert!(
            !m.unlink_blob(&a, &x).await.unwrap(),
            "a second unlink finds nothing"
        );
        assert!(!m.unlink_blob(&repo("proj/none"), &x).await.unwrap());

        // And it can be linked again.
        m.link_blob(&a, &x, 1234).await.unwrap();
        assert_eq!(m.linked_blob(&a, &x).await.unwrap(), Some(1234));
    }

    pub(crate) async fn linked_blobs_answer_only_for_this_repository_in_one_call(m: &Store) {
        let (a, b) = (repo("sizes/a"), repo("sizes/b"));
        let (x, y, z) = (digest_of("sx"), digest_of("sy"), digest_of("sz"));
        m.link_blob(&a, &x, 10).await.unwrap();
        m.link_blob(&a, &y, 0).await.unwrap();
        m.link_blob(&b, &z, 30).await.unwrap();

        let mut got = m
            .linked_blobs(&a, &[x.clone(), y.clone(), z.clone(), x.clone()])
            .await
            .unwrap();
        got.sort();
        let mut want = vec![(x.clone(), 10), (y.clone(), 0)];
        want.sort();
        assert_eq!(
            got, want,
            "z is linked to B only; a digest asked twice answers once"
        );
        assert!(m.linked_blobs(&a, &[]).await.unwrap().is_empty());
        assert!(
            m.linked_blobs(&repo("sizes/none"), std::slice::from_ref(&x))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(m.unlink_blob(&a, &x).await.unwrap());
        assert_eq!(m.linked_blobs(&a, &[x]).await.unwrap(), Vec::new());
    }

    pub(crate) async fn repositories_with_a_blob_list_in_byte_order_with_pagination(m: &Store) {
        let shared = digest_of("shared-blob");
        let names = ["holders/b", "holders/a", "holders/a-b", "holders/c"];
        for n in names {
            m.link_blob(&repo(n), &shared, 5).await.unwrap();
        }
        m.link_blob(&repo("holders/other"), &digest_of("other"), 5)
            .await
            .unwrap();
        let all = m.repositories_with_blob(&shared, None, 100).await.unwrap();
        assert_eq!(
            all,
            vec!["holders/a", "holders/a-b", "holders/b", "holders/c"]
        );
        let first = m.repositories_with_blob(&shared, None, 2).await.unwrap();
        assert_eq!(first, vec!["holders/a", "holders/a-b"]);
        let rest = m
            .repositories_with_blob(&shared, Some("holders/a-b"), 2)
            .await
            .unwrap();
        assert_eq!(rest, vec!["holders/b", "holders/c"]);
        m.unlink_blob(&repo("holders/b"), &shared).await.unwrap();
        assert_eq!(
            m.repositories_with_blob(&shared, Some("holders/a-b"), 2)
                .await
                .unwrap(),
            vec!["holders/c"]
        );
        assert!(
            m.repositories_with_blob(&digest_of("nowhere"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub(crate) async fn put_manifest_refuses_missing_references_and_stores_nothing(m: &Store) {
        let r = repo("refs/image");
        let other = repo("refs/other");
        let (present, missing_blob, only_in_other, unlinked) = (
            digest_of("present"),
            digest_of("missing"),
            digest_of("other"),
            digest_of("unlinked"),
        );
        m.link_blob(&other, &present, 1).await.unwrap();
        m.link_blob(&other, &only_in_other, 1).await.unwrap();
        m.link_blob(&other, &unlinked, 1).await.unwrap();

        // A repository that does not exist yet: refusing must not create it.
        let mut nm = tagged(manifest(&r, b"needs-blobs"), &["v1"]);
        nm.blobs = vec![missing_blob.clone(), only_in_other.clone()];
        match m.put_manifest(&nm).await {
            Err(MetaError::MissingReferences(d)) => {
                let got: BTreeSet<Digest> = d.into_iter().collect();
                assert_eq!(
                    got,
                    BTreeSet::from([missing_blob.clone(), only_in_other.clone()])
                );
            }
            other => panic!("expected MissingReferences, got {other:?}"),
        }
        assert!(
            !m.repository_exists(&r).await.unwrap(),
            "a refused manifest creates no repository"
        );
        assert!(
            m.get_manifest(&r, &by_digest(&nm.digest))
                .await
                .unwrap()
                .is_none()
        );
        assert!(m.get_manifest(&r, &tag("v1")).await.unwrap().is_none());
        assert!(all_tags(m, &r).await.is_empty());

        // In an existing repository: only the blobs it lacks are listed.
        m.link_blob(&r, &present, 1).await.unwrap();
        m.link_blob(&r, &unlinked, 1).await.unwrap();
        assert!(m.unlink_blob(&r, &unlinked).await.unwrap());
        let child_here = manifest(&r, b"child-here");
        put(m, &child_here).await;
        let child_elsewhere = manifest(&other, b"child-elsewhere");
        put(m, &child_elsewhere).await;
        let child_nowhere = digest_of("child-nowhere");

        let mut nm = tagged(manifest(&r, b"index"), &["latest"]);
        nm.blobs = vec![
            present.clone(),
            missing_blob.clone(),
            unlinked.clone(),
            present.clone(),
        ];
        nm.manifests = vec![
            child_here.digest.clone(),
            child_elsewhere.digest.clone(),
            child_nowhere.clone(),
        ];
        nm.subject = Some(child_here.digest.clone());
        match m.put_manifest(&nm).await {
            Err(MetaError::MissingReferences(d)) => {
                assert_eq!(d.len(), 4, "each missing reference listed once: {d:?}");
                let got: BTreeSet<Digest> = d.into_iter().collect();
                let want = BTreeSet::from([
                    missing_blob.clone(),
                    unlinked.clone(),
                    child_elsewhere.digest.clone(),
                    child_nowhere,
                ]);
                assert_eq!(got, want);
            }
            other => panic!("expected MissingReferences, got {other:?}"),
        }
        assert!(
            m.get_manifest(&r, &by_digest(&nm.digest))
                .await
                .unwrap()
                .is_none()
        );
        assert!(m.get_manifest(&r, &tag("latest")).await.unwrap().is_none());
        assert!(all_tags(m, &r).await.is_empty());
        assert!(
            m.referrers(&r, &child_here.digest, None)
                .await
                .unwrap()
                .is_empty()
        );

        // A refused put that would have moved an existing tag leaves it where it was.
        put(m, &tagged(manifest(&r, b"good"), &["stable"])).await;
        let mut bad = tagged(manifest(&r, b"bad"), &["stable"]);
        bad.blobs = vec![missing_blob.clone()];
        assert!(matches!(
            m.put_manifest(&bad).await,
            Err(MetaError::MissingReferences(_))
        ));
        assert_eq!(
            manifest_digest(m, &r, &tag("stable")).await,
            Some(Digest::sha256(b"good"))
        );

        // With everything present it is accepted.
        let mut ok = tagged(manifest(&r, b"complete"), &["latest"]);
        ok.blobs = vec![present.clone()];
        ok.manifests = vec![child_here.digest.clone()];
        put(m, &ok).await;
        assert_eq!(
            manifest_digest(m, &r, &tag("latest")).await,
            Some(ok.digest.clone())
        );
    }

    pub(crate) async fn put_manifest_stores_content_byte_exact_with_media_type(m: &Store) {
        let r = repo("exact/bytes");
        // Whitespace, key order and bytes that are not UTF-8 all come back as they went in.
        let mut content = b"{\n  \"schemaVersion\": 2,\t\"z\":1, \"a\" : [ ]\r\n}  ".to_vec();
        content.extend_from_slice(&[0x00, 0xff, 0xfe, 0x80, b'\\', b'\'', b'"']);
        content.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let mut nm = manifest(&r, &content);
        nm.media_type = "application/vnd.docker.distribution.manifest.list.v2+json".into();
        put(m, &nm).await;

        let rec = m
            .get_manifest(&r, &by_digest(&nm.digest))
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(rec.digest, nm.digest);
        assert_eq!(rec.media_type, nm.media_type);
        assert_eq!(rec.content.len(), content.len());
        assert!(
            rec.content[..] == content[..],
            "content comes back byte-exact"
        );

        let empty = manifest(&r, b"");
        put(m, &empty).await;
        let rec = m
            .get_manifest(&r, &by_digest(&empty.digest))
            .await
            .unwrap()
            .expect("stored");
        assert!(rec.content.is_empty());

        // A manifest is per repository.
        assert!(
            m.get_manifest(&repo("exact/other"), &by_digest(&nm.digest))
                .await
                .unwrap()
                .is_none()
        );

        // Putting the same manifest again is fine and changes nothing.
        put(m, &nm).await;
        let rec = m
            .get_manifest(&r, &by_digest(&nm.digest))
            .await
            .unwrap()
            .expect("stored");
        assert!(rec.content[..] == content[..]);
    }

    pub(crate) async fn tags_point_at_manifests_and_retagging_moves_them(m: &Store) {
        let r = repo("tags/move");
        let one = tagged(manifest(&r, b"one"), &["latest", "v1"]);
        let two = tagged(manifest(&r, b"two"), &["v2"]);
        put(m, &one).await;
        put(m, &two).await;

        let rec = m
            .get_manifest(&r, &tag("latest"))
            .await
            .unwrap()
            .expect("by tag");
        assert_eq!(rec.digest, one.digest);
        assert_eq!(&rec.content[..], b"one");
        assert_eq!(rec.media_type, one.media_type);
        assert_eq!(
            manifest_digest(m, &r, &tag("v1")).await,
            Some(one.digest.clone())
        );
        assert_eq!(
            manifest_digest(m, &r, &tag("v2")).await,
            Some(two.digest.clone())
        );
        assert_eq!(
            manifest_digest(m, &r, &by_digest(&two.digest)).await,
            Some(two.digest.clone())
        );
        assert_eq!(manifest_digest(m, &r, &tag("v3")).await, None);
        assert_eq!(
            manifest_digest(m, &r, &by_digest(&digest_of("nothing"))).await,
            None
        );
        assert_eq!(
            manifest_digest(m, &repo("tags/other"), &tag("latest")).await,
            None
        );

        // Re-tagging: putting `two` again with `latest` moves `latest` and leaves `v1`.
        put(m, &tagged(manifest(&r, b"two"), &["latest"])).await;
        assert_eq!(
            manifest_digest(m, &r, &tag("latest")).await,
            Some(two.digest.clone())
        );
        assert_eq!(
            manifest_digest(m, &r, &tag("v1")).await,
            Some(one.digest.clone())
        );
        assert_eq!(all_tags(m, &r).await, ["latest", "v1", "v2"]);

        // And back.
        put(m, &tagged(manifest(&r, b"one"), &["latest"])).await;
        assert_eq!(
            manifest_digest(m, &r, &tag("latest")).await,
            Some(one.digest.clone())
        );

        // The same tag name in another repository is independent.
        let r2 = repo("tags/move2");
        put(m, &tagged(manifest(&r2, b"elsewhere"), &["latest"])).await;
        assert_eq!(
            manifest_digest(m, &r, &tag("latest")).await,
            Some(one.digest.clone())
        );
        assert_eq!(
            manifest_digest(m, &r2, &tag("latest")).await,
            Some(Digest::sha256(b"elsewhere"))
        );
    }

    pub(crate) async fn delete_manifest_removes_its_tags(m: &Store) {
        let r = repo("del/manifest");
        let one = tagged(manifest(&r, b"one"), &["a", "b"]);
        let two = tagged(manifest(&r, b"two"), &["c"]);
        put(m, &one).await;
        put(m, &two).await;
        let r2 = repo("del/other");
        put(m, &tagged(manifest(&r2, b"one"), &["a"])).await;

        assert!(m.delete_manifest(&r, &one.digest).await.unwrap());
        assert!(
            m.get_manifest(&r, &by_digest(&one.digest))
                .await
                .unwrap()
                .is_none()
        );
        assert!(m.get_manifest(&r, &tag("a")).await.unwrap().is_none());
        assert!(m.get_manifest(&r, &tag("b")).await.unwrap().is_none());
        assert_eq!(all_tags(m, &r).await, ["c"]);
        assert_eq!(
            manifest_digest(m, &r, &tag("c")).await,
            Some(two.digest.clone())
        );
        // The same manifest in another repository is untouched.
        assert_eq!(
            manifest_digest(m, &r2, &tag("a")).await,
            Some(one.digest.clone())
        );

        assert!(
            !m.delete_manifest(&r, &one.digest).await.unwrap(),
            "second delete finds nothing"
        );
        assert!(!m.delete_manifest(&r, &digest_of("never")).await.unwrap());

        // It can be pushed again, and tagged again.
        put(m, &tagged(manifest(&r, b"one"), &["a"])).await;
        assert_eq!(
            manifest_digest(m, &r, &tag("a")).await,
            Some(one.digest.clone())
        );
    }

    pub(crate) async fn delete_tag_keeps_the_manifest(m: &Store) {
        let r = repo("del/tag");
        let one = tagged(manifest(&r, b"one"), &["x", "y"]);
        put(m, &one).await;

        assert!(m.delete_tag(&r, "x").await.unwrap());
        assert!(m.get_manifest(&r, &tag("x")).await.unwrap().is_none());
        assert_eq!(
            manifest_digest(m, &r, &tag("y")).await,
            Some(one.digest.clone())
        );
        assert_eq!(
            manifest_digest(m, &r, &by_digest(&one.digest)).await,
            Some(one.digest.clone())
        );
        assert_eq!(all_tags(m, &r).await, ["y"]);

        assert!(
            !m.delete_tag(&r, "x").await.unwrap(),
            "second delete finds nothing"
        );
        assert!(!m.delete_tag(&r, "never").await.unwrap());
        assert!(!m.delete_tag(&repo("del/none"), "y").await.unwrap());

        assert!(m.delete_tag(&r, "y").await.unwrap());
        assert!(all_tags(m, &r).await.is_empty());
        let rec = m
            .get_manifest(&r, &by_digest(&one.digest))
            .await
            .unwrap()
            .expect("untagged manifest stays");
        assert_eq!(&rec.content[..], b"one");
    }

    pub(crate) async fn tags_list_in_byte_order_with_pagination(m: &Store) {
        let r = repo("tags/order");
        // Byte order: "B" (0x42) < "Z1" < "_x" (0x5f) < "a". Locale collations put "_x" first
        // and fold case ("a" < "B").
        let names = [
            "a", "_x", "B", "Z1", "b.1", "b-1", "b_1", "B0", "latest", "1.0",
        ];
        let one = tagged(manifest(&r, b"one"), &names[..5]);
        let two = tagged(manifest(&r, b"two"), &names[5..]);
        put(m, &one).await;
        put(m, &two).await;
        // A tag in another repository does not show up.
        put(m, &tagged(manifest(&repo("tags/elsewhere"), b"x"), &["A"])).await;

        let mut expected: Vec<&str> = names.to_vec();
        expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        assert_eq!(
            expected,
            [
                "1.0", "B", "B0", "Z1", "_x", "a", "b-1", "b.1", "b_1", "latest"
            ]
        );
        assert_eq!(all_tags(m, &r).await, expected);

        let mut paged = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = m.list_tags(&r, last.as_deref(), 3).await.unwrap();
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            last = page.last().cloned();
            paged.extend(page);
        }
        assert_eq!(paged, expected);

        assert_eq!(m.list_tags(&r, Some("Z1"), 2).await.unwrap(), ["_x", "a"]);
        assert_eq!(m.list_tags(&r, Some("B"), 1).await.unwrap(), ["B0"]);
        assert_eq!(
            m.list_tags(&r, Some("a"), 100).await.unwrap(),
            ["b-1", "b.1", "b_1", "latest"]
        );
        // `last` need not be a tag that exists.
        assert_eq!(m.list_tags(&r, Some("C"), 2).await.unwrap(), ["Z1", "_x"]);
        assert!(
            m.list_tags(&r, Some("latest"), 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(m.list_tags(&r, None, 0).await.unwrap().is_empty());
        assert!(all_tags(m, &repo("tags/none")).await.is_empty());
    }

    /// A read whose caller stops waiting (its client hung up) may be cut off anywhere: before
    /// its query is sent, after, or while its rows arrive. Whatever it left on its connection
    /// must not become the answer of the next read on it (the store has 4 connections).
    pub(crate) async fn reads_given_up_half_way_leave_nothing_for_the_next_read(m: &Store) {
        use futures::FutureExt;
        let long = repo("abandon/long");
        let names: Vec<String> = (0..500).map(|i| format!("t{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        put(m, &tagged(manifest(&long, b"long"), &refs)).await;
        let short = repo("abandon/short");
        let only = tagged(manifest(&short, b"short"), &["only"]);
        put(m, &only).await;

        for i in 0..120u64 {
            // Polled once and dropped, or dropped after a few to a few hundred microseconds.
            if i % 2 == 0 {
                assert!(
                    m.list_tags(&long, None, 1000)
                        .now_or_never()
                        .is_none_or(|r| r.is_ok())
                );
                let _ = m.get_manifest(&long, &tag("t0001")).now_or_never();
            } else {
                let wait = std::time::Duration::from_micros(5 * (i % 60));
                let _ = tokio::time::timeout(wait, m.list_tags(&long, None, 1000)).await;
                let _ = tokio::time::timeout(wait, m.repository_exists(&long)).await;
            }
            assert_eq!(m.list_tags(&short, None, 1000).await.unwrap(), ["only"]);
            assert_eq!(
                manifest_digest(m, &short, &by_digest(&only.digest)).await,
                Some(only.digest.clone())
            );
            assert!(!m.repository_exists(&repo("abandon/none")).await.unwrap());
        }
        assert_eq!(all_tags(m, &long).await, names);
    }

    pub(crate) async fn referrers_by_subject_with_and_without_artifact_type(m: &Store) {
        let r = repo("refer/rers");
        let subject = manifest(&r, b"subject");
        put(m, &subject).await;
        let unrelated = manifest(&r, b"unrelated");
        put(m, &unrelated).await;

        let sbom_annotations = r#"{"org.opencontainers.image.created":"2024-05-01T00:00:00Z","note":"ünïcødé \"quoted\""}"#;
        let mut sbom = manifest(&r, b"sbom");
        sbom.artifact_type = Some("application/spdx+json".into());
        sbom.subject = Some(subject.digest.clone());
        sbom.annotations = Some(sbom_annotations.into());
        let mut sig = manifest(&r, b"signature-bytes");
        sig.artifact_type = Some("application/vnd.dev.cosign.artifact.sig.v1+json".into());
        sig.subject = Some(subject.digest.clone());
        sig.media_type = "application/vnd.oci.image.manifest.v1+json".into();
        let mut plain = manifest(&r, b"no-artifact-type");
        plain.subject = Some(subject.digest.clone());
        let mut other_subject = manifest(&r, b"about-unrelated");
        other_subject.artifact_type = Some("application/spdx+json".into());
        other_subject.subject = Some(unrelated.digest.clone());
        // Same subject digest, other repository: not a referrer here.
        let mut elsewhere = manifest(&repo("refer/elsewhere"), b"sbom");
        elsewhere.artifact_type = Some("application/spdx+json".into());
        elsewhere.subject = Some(subject.digest.clone());
        for nm in [&sbom, &sig, &plain, &other_subject, &elsewhere] {
            put(m, nm).await;
        }

        let all = m.referrers(&r, &subject.digest, None).await.unwrap();
        let digests: BTreeSet<Digest> = all.iter().map(|x| x.digest.clone()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(
            digests,
            BTreeSet::from([
                sbom.digest.clone(),
                sig.digest.clone(),
                plain.digest.clone()
            ])
        );
        let got_sbom = all
            .iter()
            .find(|x| x.digest == sbom.digest)
            .expect("sbom listed");
        assert_eq!(got_sbom.media_type, sbom.media_type);
        assert_eq!(got_sbom.size, sbom.content.len() as i64);
        assert_eq!(
            got_sbom.artifact_type.as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(
            got_sbom.annotations.as_deref(),
            Some(sbom_annotations),
            "annotations round-trip exactly"
        );
        let got_plain = all
            .iter()
            .find(|x| x.digest == plain.digest)
            .expect("plain listed");
        assert_eq!(got_plain.artifact_type, None);
        assert_eq!(got_plain.annotations, None);

        let sboms = m
            .referrers(&r, &subject.digest, Some("application/spdx+json"))
            .await
            .unwrap();
        assert_eq!(sboms.len(), 1, "{sboms:?}");
        assert_eq!(sboms[0].digest, sbom.digest);
        let sigs = m
            .referrers(
                &r,
                &subject.digest,
                Some("application/vnd.dev.cosign.artifact.sig.v1+json"),
            )
            .await
            .unwrap();
        assert_eq!(
            sigs.iter().map(|x| &x.digest).collect::<Vec<_>>(),
            [&sig.digest]
        );
        assert!(
            m.referrers(&r, &subject.digest, Some("application/none"))
                .await
                .unwrap()
                .is_empty()
        );

        // A subject nobody refers to, and a subject that was never pushed but is referred to.
        assert!(
            m.referrers(&r, &sbom.digest, None)
                .await
                .unwrap()
                .is_empty()
        );
        let ghost = digest_of("ghost-subject");
        let mut early = manifest(&r, b"pushed-before-its-subject");
        early.subject = Some(ghost.clone());
        put(m, &early).await;
        let got = m.referrers(&r, &ghost, None).await.unwrap();
        assert_eq!(
            got.iter().map(|x| &x.digest).collect::<Vec<_>>(),
            [&early.digest]
        );

        // Deleting a referrer removes it from the list.
        assert!(m.delete_manifest(&r, &sig.digest).await.unwrap());
        let after: BTreeSet<Digest> = m
            .referrers(&r, &subject.digest, None)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.digest)
            .collect();
        assert_eq!(
            after,
            BTreeSet::from([sbom.digest.clone(), plain.digest.clone()])
        );
    }
}

// ---------------------------------------------------------------------------------------
// Uploads: sessions, claims and their leases, stale sessions

mod uploads {
    use std::sync::Arc;

    use berth::metadata::{MetaError, UploadSession};
    use berth::oci::{Algorithm, Digest, Hasher, RepoName};

    use crate::{Store, repo};

    fn session(id: &str, r: &RepoName) -> UploadSession {
        UploadSession {
            id: id.to_string(),
            repository: r.clone(),
            committed: 0,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            store_state: b"{}".to_vec(),
            started_at: 1_700_000_000_000,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    /// What the upload handler does for one write: claim the session at `from`, then move it on.
    async fn advance(
        m: &Store,
        id: &str,
        from: u64,
        to: u64,
        state: &[u8],
    ) -> Result<(), MetaError> {
        let writer = format!("writer-{from}-{to}-{}", now());
        let now = now();
        m.claim_upload(id, from, &writer, now, now + 60_000).await?;
        m.advance_upload(id, &writer, from, to, state, b"store-state")
            .await
    }

    fn hash_state_after(bytes: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.save()
    }

    pub(crate) async fn upload_sessions_create_get_and_delete(m: &Store) {
        let r = repo("up/loads");
        let s = session("0b8a6c1e-1111-4222-8333-944445555666", &r);
        assert!(m.get_upload(&r, &s.id).await.unwrap().is_none());
        m.create_upload(&s).await.unwrap();

        let got = m.get_upload(&r, &s.id).await.unwrap().expect("created");
        assert_eq!(got.id, s.id);
        assert_eq!(got.repository, r);
        assert_eq!(got.committed, 0);
        assert_eq!(got.hash_state, s.hash_state);
        assert_eq!(got.started_at, s.started_at);
        assert!(
            m.get_upload(&repo("up/other"), &s.id)
                .await
                .unwrap()
                .is_none(),
            "a session is only found under its own repository"
        );
        assert!(m.get_upload(&r, "another-id").await.unwrap().is_none());

        // Advancing with the right `from` moves it on, with the new hasher state.
        let state = hash_state_after(b"hello");
        advance(m, &s.id, 0, 5, &state).await.unwrap();
        let got = m.get_upload(&r, &s.id).await.unwrap().unwrap();
        assert_eq!(got.committed, 5);
        assert_eq!(got.hash_state, state);
        assert_eq!(got.started_at, s.started_at);
        let mut resumed = Hasher::restore(&got.hash_state).expect("stored state restores");
        resumed.update(b", world");
        assert_eq!(resumed.finish(), Digest::sha256(b"hello, world"));

        // Beyond 4 GiB, as large layers are.
        let big = 5 * 1024 * 1024 * 1024u64;
        advance(m, &s.id, 5, big, &state).await.unwrap();
        assert_eq!(
            m.get_upload(&r, &s.id).await.unwrap().unwrap().committed,
            big
        );

        // A second session is independent.
        let s2 = session("second", &r);
        m.create_upload(&s2).await.unwrap();
        assert_eq!(
            m.get_upload(&r, &s2.id).await.unwrap().unwrap().committed,
            0
        );

        assert!(m.delete_upload(&s.id).await.unwrap());
        assert!(m.get_upload(&r, &s.id).await.unwrap().is_none());
        assert!(
            !m.delete_upload(&s.id).await.unwrap(),
            "second delete finds nothing"
        );
        assert!(matches!(
            advance(m, &s.id, big, big + 1, &state).await,
            Err(MetaError::UploadConflict)
        ));
        assert!(m.get_upload(&r, &s2.id).await.unwrap().is_some());
    }

    pub(crate) async fn advance_upload_from_a_stale_offset_conflicts_and_changes_nothing(
        m: &Store,
    ) {
        let r = repo("up/stale");
        let s = session("stale-session", &r);
        m.create_upload(&s).await.unwrap();
        let after_ten = hash_state_after(b"0123456789");
        advance(m, &s.id, 0, 10, &after_ten).await.unwrap();

        for from in [0u64, 5, 11, 20] {
            let bogus = hash_state_after(b"bogus");
            match advance(m, &s.id, from, from + 7, &bogus).await {
                Err(MetaError::UploadConflict) => {}
                other => {
                    panic!(
                        "advance from stale offset {from}: expected UploadConflict, got {other:?}"
                    )
                }
            }
            let got = m.get_upload(&r, &s.id).await.unwrap().unwrap();
            assert_eq!(got.committed, 10, "a refused advance changes nothing");
            assert_eq!(got.hash_state, after_ten);
        }

        // Unknown session: a conflict too, and nothing is created.
        assert!(matches!(
            advance(m, "no-such-session", 0, 1, &after_ten).await,
            Err(MetaError::UploadConflict)
        ));
        assert!(m.get_upload(&r, "no-such-session").await.unwrap().is_none());

        // The right offset still works afterwards.
        advance(m, &s.id, 10, 12, &hash_state_after(b"0123456789ab"))
            .await
            .unwrap();
        assert_eq!(
            m.get_upload(&r, &s.id).await.unwrap().unwrap().committed,
            12
        );
    }

    pub(crate) async fn concurrent_advance_upload_has_exactly_one_winner(m: &Store) {
        let r = repo("up/race");
        for round in 0..20 {
            let id = format!("race-{round}");
            m.create_upload(&session(&id, &r)).await.unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let contenders: Vec<_> = [
                (100u64, b"left".as_slice()),
                (200u64, b"right-side".as_slice()),
            ]
            .into_iter()
            .map(|(to, bytes)| {
                let (m, id, barrier) = (m.clone(), id.clone(), barrier.clone());
                let state = hash_state_after(bytes);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let outcome = advance(&m, &id, 0, to, &state).await;
                    (to, state, outcome)
                })
            })
            .collect();
            let mut winners = Vec::new();
            for c in contenders {
                let (to, state, outcome) = c.await.expect("task");
                match outcome {
                    Ok(()) => winners.push((to, state)),
                    Err(MetaError::UploadConflict) => {}
                    Err(e) => panic!("round {round}: unexpected error {e}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one advance from the same offset wins"
            );
            let got = m.get_upload(&r, &id).await.unwrap().unwrap();
            assert_eq!(
                got.committed, winners[0].0,
                "round {round}: the winner's length is stored"
            );
            assert_eq!(
                got.hash_state, winners[0].1,
                "round {round}: with the winner's state"
            );
        }
    }

    pub(crate) async fn upload_claims_admit_one_writer_until_released_or_expired(m: &Store) {
        let r = repo("up/claims");
        let s = session("claim-session", &r);
        m.create_upload(&s).await.unwrap();
        let t = now();

        // A claim at the wrong offset, or on an unknown session, is refused.
        assert!(matches!(
            m.claim_upload(&s.id, 3, "a", t, t + 1000).await,
            Err(MetaError::UploadConflict)
        ));
        assert!(matches!(
            m.claim_upload("no-such-session", 0, "a", t, t + 1000).await,
            Err(MetaError::UploadConflict)
        ));

        m.claim_upload(&s.id, 0, "a", t, t + 1000).await.unwrap();
        // While `a`'s lease is live nobody else gets in, not even at the right offset.
        assert!(matches!(
            m.claim_upload(&s.id, 0, "b", t + 10, t + 1010).await,
            Err(MetaError::UploadConflict)
        ));
        // `b` may neither renew nor advance a session it does not hold.
        assert!(!m.renew_upload_claim(&s.id, "b", t + 5000).await.unwrap());
        assert!(matches!(
            m.advance_upload(&s.id, "b", 0, 4, &hash_state_after(b"bbbb"), b"")
                .await,
            Err(MetaError::UploadConflict)
        ));
        m.release_upload_claim(&s.id, "b").await.unwrap();
        assert!(
            matches!(
                m.claim_upload(&s.id, 0, "c", t + 20, t + 1020).await,
                Err(MetaError::UploadConflict)
            ),
            "releasing someone else's claim does nothing"
        );

        // Renewal moves the lease on, so a claim after the first expiry still fails.
        assert!(m.renew_upload_claim(&s.id, "a", t + 3000).await.unwrap());
        assert!(matches!(
            m.claim_upload(&s.id, 0, "b", t + 2000, t + 4000).await,
            Err(MetaError::UploadConflict)
        ));

        // Releasing hands the session on, unchanged.
        m.release_upload_claim(&s.id, "a").await.unwrap();
        assert_eq!(m.get_upload(&r, &s.id).await.unwrap().unwrap().committed, 0);
        m.claim_upload(&s.id, 0, "b", t + 30, t + 1030)
            .await
            .unwrap();
        // `a` lost the session: its late advance is refused and changes nothing.
        assert!(matches!(
            m.advance_upload(&s.id, "a", 0, 4, &hash_state_after(b"aaaa"), b"")
                .await,
            Err(MetaError::UploadConflict)
        ));
        let state = hash_state_after(b"bb");
        m.advance_upload(&s.id, "b", 0, 2, &state, b"after-b")
            .await
            .unwrap();
        let got = m.get_upload(&r, &s.id).await.unwrap().unwrap();
        assert_eq!((got.committed, got.hash_state), (2, state));
        assert_eq!(
            got.store_state, b"after-b",
            "the store's state moves with the session"
        );

        // An advance releases the claim; an expired lease (a writer that died) is taken over.
        m.claim_upload(&s.id, 2, "d", t + 40, t + 100)
            .await
            .unwrap();
        assert!(matches!(
            m.claim_upload(&s.id, 2, "e", t + 99, t + 200).await,
            Err(MetaError::UploadConflict)
        ));
        m.claim_upload(&s.id, 2, "e", t + 101, t + 200)
            .await
            .unwrap();
        assert!(!m.renew_upload_claim(&s.id, "d", t + 500).await.unwrap());
    }

    pub(crate) async fn concurrent_claims_have_exactly_one_winner(m: &Store) {
        let r = repo("up/claim-race");
        for round in 0..20 {
            let id = format!("claim-race-{round}");
            m.create_upload(&session(&id, &r)).await.unwrap();
            let barrier = Arc::new(tokio::sync::Barrier::new(3));
            let contenders: Vec<_> = ["x", "y", "z"]
                .into_iter()
                .map(|w| {
                    let (m, id, barrier) = (m.clone(), id.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let t = now();
                        (w, m.claim_upload(&id, 0, w, t, t + 60_000).await)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for c in contenders {
                match c.await.expect("task") {
                    (w, Ok(())) => winners.push(w),
                    (_, Err(MetaError::UploadConflict)) => {}
                    (_, Err(e)) => panic!("round {round}: unexpected error {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: one claim wins");
            assert!(
                m.renew_upload_claim(&id, winners[0], now() + 1)
                    .await
                    .unwrap()
            );
        }
    }

    pub(crate) async fn stale_uploads_are_listed_by_last_write_and_live_claims_are_spared(
        m: &Store,
    ) {
        let r = repo("up/stale-list");
        let (old, fresh, busy) = (
            session("old", &r),
            session("fresh", &r),
            session("busy", &r),
        );
        for s in [&old, &fresh, &busy] {
            m.create_upload(s).await.unwrap();
        }
        let mut ids = m.upload_ids().await.unwrap();
        ids.sort();
        assert!(
            ["busy", "fresh", "old"]
                .iter()
                .all(|i| ids.contains(&i.to_string())),
            "{ids:?}"
        );
        // Writing to a session makes it fresh; a session with a live claim is never stale.
        advance(m, &fresh.id, 0, 3, &hash_state_after(b"abc"))
            .await
            .unwrap();
        let t = now();
        m.claim_upload(&busy.id, 0, "w", t, t + 3_600_000)
            .await
            .unwrap();
        let stale = m.stale_uploads(t - 60_000, 100).await.unwrap();
        let names: Vec<&str> = stale.iter().map(|s| s.id.as_str()).collect();
        assert!(names.contains(&"old"), "{names:?}");
        assert!(!names.contains(&"fresh"), "{names:?}");
        assert!(!names.contains(&"busy"), "{names:?}");
        let got = stale.iter().find(|s| s.id == "old").unwrap();
        assert_eq!(got.repository, r);
        assert_eq!(got.store_state, b"{}");
        assert!(m.stale_uploads(t - 60_000, 1).await.unwrap().len() <= 1);
    }
}
