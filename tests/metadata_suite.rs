//! The one `MetadataStore` suite: every rule below runs against every backend.
//!
//! Each rule is a plain async function over a store, in a module per metadata domain, as
//! the traits in `src/metadata/` are split (`repositories`, `uploads`, `identity`). `rules!` turns one
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn ping_answers_and_the_pools_report_their_use() {
                let backend = $open().await;
                crate::ping_answers_and_the_pools_report_their_use(&backend).await;
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
                delete_repository_removes_everything_in_it,
                tags_list_in_byte_order_with_pagination,
                reads_given_up_half_way_leave_nothing_for_the_next_read,
                referrers_by_subject_with_and_without_artifact_type,
                project_repositories_are_those_under_the_project_with_counts_and_pages,
                artifacts_list_newest_first_with_sizes_and_tags,
                artifacts_leave_out_referrers_of_listed_subjects_and_cap_tags,
            ]);

            rules!($open, uploads => [
                upload_sessions_create_get_and_delete,
                advance_upload_from_a_stale_offset_conflicts_and_changes_nothing,
                concurrent_advance_upload_has_exactly_one_winner,
                upload_claims_admit_one_writer_until_released_or_expired,
                leases_renew_only_for_their_holder_with_half_the_term_left,
                concurrent_claims_have_exactly_one_winner,
                stale_uploads_are_listed_by_last_write_and_live_claims_are_spared,
                count_uploads_counts_the_sessions,
            ]);

            rules!($open, identity => [
                projects_are_created_and_found_by_name_and_id,
                duplicate_project_names_are_refused_and_nothing_changes,
                project_public_flag_is_set,
                projects_list_in_byte_order_with_filters_and_pagination_totals,
                project_has_repositories_matches_its_first_path_segment_only,
                delete_project_is_refused_while_repositories_exist,
                delete_project_cascade_removes_its_repositories_and_only_them,
                create_project_with_owner_role_makes_the_owner_a_member,
                users_are_created_and_found_by_name_and_id,
                duplicate_user_names_and_emails_are_refused_and_nothing_changes,
                create_user_unless_exists_creates_once_under_concurrency,
                users_list_in_byte_order_with_pagination_totals,
                user_password_and_sysadmin_are_set,
                delete_user_removes_memberships_groups_and_ownership,
                groups_are_created_once_and_a_users_groups_replaced_per_type,
                members_are_added_listed_changed_and_removed,
                memberships_through_groups_give_roles,
                removing_a_membership_removes_the_role,
                a_users_projects_list_with_their_roles,
                visible_projects_are_the_public_ones_and_the_users_own,
                robot_permissions_round_trip,
                duplicate_robot_names_are_refused_and_nothing_changes,
                robots_list_all_or_by_project_with_pagination_totals,
                robot_update_replaces_permissions_and_secret_refresh_replaces_the_hash,
                robot_delete_removes_it_and_its_permissions,
                signing_key_insert_is_race_safe,
                signing_keys_rotate_retire_and_drop,
            ]);

            rules!($open, signin => [
                sessions_are_found_until_they_expire_or_end,
                a_pending_login_is_taken_once,
                a_new_cli_secret_replaces_the_old_one_at_once,
                personal_tokens_are_named_once_per_user_and_revoked_by_their_owner,
                oidc_sessions_due_for_refresh_are_those_lapsing_without_failure,
                users_are_linked_to_one_oidc_identity_each,
                delete_user_removes_sessions_and_secrets,
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

async fn ping_answers_and_the_pools_report_their_use(b: &Backend) {
    use berth::metadata::MetadataStore;
    b.sql.ping().await.expect("ping");
    let pools = b.sql.pool_usage();
    let names: Vec<&str> = pools.iter().map(|p| p.pool).collect();
    assert_eq!(names, ["read", "write"]);
    for p in &pools {
        assert!(p.max >= 1, "{p:?}");
        assert!(p.idle <= p.open && p.open <= p.max, "{p:?}");
    }
    // The ping's read connection went back to its pool.
    assert!(pools[0].open >= 1, "{:?}", pools[0]);
    b.sql.close().await;
    assert!(b.sql.ping().await.is_err(), "a closed store answers a ping");
}

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

    pub(crate) async fn delete_repository_removes_everything_in_it(m: &Store) {
        let r = repo("del/repo/x");
        let other = repo("del/repo/y");
        m.link_blob(&r, &digest_of("layer"), 5).await.unwrap();
        m.link_blob(&other, &digest_of("layer"), 5).await.unwrap();
        let one = tagged(manifest(&r, b"one"), &["a", "b"]);
        put(m, &one).await;

        assert!(m.delete_repository(&r).await.unwrap());
        assert!(!m.repository_exists(&r).await.unwrap());
        assert!(all_tags(m, &r).await.is_empty());
        assert!(
            m.get_manifest(&r, &by_digest(&one.digest))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(m.linked_blob(&r, &digest_of("layer")).await.unwrap(), None);
        assert_eq!(
            m.linked_blob(&other, &digest_of("layer")).await.unwrap(),
            Some(5),
            "another repository keeps its link"
        );
        assert!(!m.delete_repository(&r).await.unwrap(), "already gone");
        assert!(!m.delete_repository(&repo("del/never")).await.unwrap());
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

    pub(crate) async fn project_repositories_are_those_under_the_project_with_counts_and_pages(
        m: &Store,
    ) {
        for (r, content) in [
            ("proj/b", &b"b1"[..]),
            ("proj/a", b"a1"),
            ("proj/a", b"a2"),
            ("proj/deep/c", b"c1"),
            ("projx/a", b"x1"),
            ("proj-x/a", b"y1"),
            ("pro/a", b"z1"),
        ] {
            put(m, &manifest(&repo(r), content)).await;
        }
        m.link_blob(&repo("proj/empty"), &digest_of("e"), 1)
            .await
            .unwrap();
        let page = m.project_repositories("proj", None, 1, 10).await.unwrap();
        let listed: Vec<(String, u64)> = page
            .items
            .iter()
            .map(|r| (r.name.clone(), r.artifacts))
            .collect();
        assert_eq!(
            listed,
            [
                ("proj/a".to_string(), 2),
                ("proj/b".to_string(), 1),
                ("proj/deep/c".to_string(), 1),
                ("proj/empty".to_string(), 0)
            ],
            "other projects sharing a prefix are not listed"
        );
        assert_eq!(page.total, 4);
        let second = m.project_repositories("proj", None, 2, 3).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].name, "proj/empty");
        assert_eq!(second.total, 4);
        let filtered = m
            .project_repositories("proj", Some("DEEP"), 1, 10)
            .await
            .unwrap();
        assert_eq!(filtered.total, 1);
        // `_` and `%` in a filter are themselves, not wildcards.
        put(m, &manifest(&repo("proj/x_y"), b"xy1")).await;
        put(m, &manifest(&repo("proj/xzy"), b"xy2")).await;
        let underscore = m
            .project_repositories("proj", Some("x_y"), 1, 10)
            .await
            .unwrap();
        let names: Vec<&str> = underscore.items.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["proj/x_y"]);
        assert_eq!(
            m.project_repositories("proj", Some("%"), 1, 10)
                .await
                .unwrap()
                .total,
            0
        );
        assert!(
            m.project_repositories("nothing", None, 1, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    pub(crate) async fn artifacts_list_newest_first_with_sizes_and_tags(m: &Store) {
        let r = repo("arts/app");
        let (config, layer) = (digest_of("arts-config"), digest_of("arts-layer"));
        m.link_blob(&r, &config, 10).await.unwrap();
        m.link_blob(&r, &layer, 100).await.unwrap();
        let mut first = tagged(manifest(&r, b"first manifest"), &["v1", "stable"]);
        first.blobs = vec![config.clone(), layer.clone()];
        put(m, &first).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        put(m, &tagged(manifest(&r, b"second"), &["v2"])).await;
        let page = m.artifacts(&r, 1, 10, 100).await.unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(
            page.items[0].digest,
            Digest::sha256(b"second"),
            "newest first"
        );
        let a = &page.items[1];
        assert_eq!(a.size, b"first manifest".len() as u64 + 10 + 100);
        let tags: Vec<&str> = a.tags.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["stable", "v1"]);
        assert!(a.pushed_at > 0);
        let p2 = m.artifacts(&r, 2, 1, 100).await.unwrap();
        assert_eq!(p2.items.len(), 1);
        assert_eq!(p2.items[0].digest, Digest::sha256(b"first manifest"));
        assert_eq!(
            m.artifacts(&repo("arts/none"), 1, 10, 100)
                .await
                .unwrap()
                .total,
            0
        );
    }

    pub(crate) async fn artifacts_leave_out_referrers_of_listed_subjects_and_cap_tags(m: &Store) {
        let r = repo("arts/refs");
        let tags: Vec<String> = (0..25).map(|i| format!("t{i:02}")).collect();
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let image = tagged(manifest(&r, b"the image"), &tag_refs);
        put(m, &image).await;
        let mut sig = manifest(&r, b"its signature");
        sig.subject = Some(image.digest.clone());
        let mut sbom = tagged(manifest(&r, b"its sbom"), &["sbom"]);
        sbom.subject = Some(image.digest.clone());
        // A referrer whose subject is not (or not yet) here is listed on its own.
        let mut orphan = manifest(&r, b"refers elsewhere");
        orphan.subject = Some(Digest::sha256(b"not pushed"));
        for nm in [&sig, &sbom, &orphan] {
            put(m, nm).await;
        }
        let page = m.artifacts(&r, 1, 10, 20).await.unwrap();
        assert_eq!(page.total, 2, "the image and the orphan");
        let listed: Vec<&Digest> = page.items.iter().map(|a| &a.digest).collect();
        assert!(listed.contains(&&image.digest) && listed.contains(&&orphan.digest));
        let a = page
            .items
            .iter()
            .find(|a| a.digest == image.digest)
            .unwrap();
        assert_eq!(a.referrers, 2);
        assert_eq!(a.tag_count, 25);
        let shown: Vec<&str> = a.tags.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(shown, tag_refs[..20], "the first 20 in byte order");
        let o = page
            .items
            .iter()
            .find(|a| a.digest == orphan.digest)
            .unwrap();
        assert_eq!((o.referrers, o.tag_count, o.tags.len()), (0, 0, 0));

        let p1 = m.manifest_tags(&r, &image.digest, 1, 10).await.unwrap();
        assert_eq!(p1.total, 25);
        let names: Vec<&str> = p1.items.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, tag_refs[..10]);
        let p3 = m.manifest_tags(&r, &image.digest, 3, 10).await.unwrap();
        assert_eq!(p3.items.len(), 5);
        assert_eq!(p3.items[0].0, "t20");
        assert!(p3.items.iter().all(|(_, at)| *at > 0));
        let none = m.manifest_tags(&r, &sig.digest, 1, 10).await.unwrap();
        assert_eq!((none.total, none.items.len()), (0, 0));
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

    pub(crate) async fn count_uploads_counts_the_sessions(m: &Store) {
        let r = repo("up/counted");
        assert_eq!(m.count_uploads().await.unwrap(), 0);
        let ids = [
            "0b8a6c1e-1111-4222-8333-000000000001",
            "0b8a6c1e-1111-4222-8333-000000000002",
        ];
        for id in ids {
            m.create_upload(&session(id, &r)).await.unwrap();
        }
        assert_eq!(m.count_uploads().await.unwrap(), 2);
        assert!(m.delete_upload(ids[0]).await.unwrap());
        assert_eq!(m.count_uploads().await.unwrap(), 1);
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

    pub(crate) async fn leases_renew_only_for_their_holder_with_half_the_term_left(m: &Store) {
        m.take_lease("t-lease", "a", 60_000).await.unwrap().unwrap();
        // Another holder is refused, the holder renews.
        assert!(!m.renew_lease("t-lease", "b", 60_000).await.unwrap());
        assert!(m.renew_lease("t-lease", "a", 60_000).await.unwrap());
        // A renewal asking for a term more than twice what is left is refused: the lease
        // might have lapsed before a late statement ran.
        assert!(!m.renew_lease("t-lease", "a", 200_000).await.unwrap());
        // A lapsed lease is not renewed, even though nobody took it since.
        m.take_lease("t-short", "a", 50).await.unwrap().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        assert!(!m.renew_lease("t-short", "a", 50).await.unwrap());
        // After a release nothing is renewed, and another holder may take it.
        m.release_lease("t-lease", "a").await.unwrap();
        assert!(!m.renew_lease("t-lease", "a", 60_000).await.unwrap());
        m.take_lease("t-lease", "b", 60_000).await.unwrap().unwrap();
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

// ---------------------------------------------------------------------------------------
// Identity: projects, users, groups, project members, robot accounts, signing keys

mod identity {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use berth::metadata::identity::{GROUP_TYPE_HTTP, GROUP_TYPE_LDAP, GROUP_TYPE_OIDC};
    use berth::metadata::{
        MemberEntity, MetaError, NewManifest, NewProject, NewRobot, NewUser, Project, ProjectQuery,
        RobotLevel, RobotPermission, RobotUpdate, SigningKey, UploadSession,
    };
    use berth::oci::{Algorithm, Digest, Hasher, Reference, RepoName};

    use crate::{Store, digest_of, repo};

    // Harbor's role ids, as the store keeps them (their meaning is not the store's).
    const ADMIN: i64 = 1;
    const DEVELOPER: i64 = 2;
    const GUEST: i64 = 3;
    const MAINTAINER: i64 = 4;

    fn new_project(name: &str, public: bool) -> NewProject {
        NewProject {
            name: name.to_string(),
            public,
            ..NewProject::default()
        }
    }

    async fn project(m: &Store, name: &str, public: bool) -> Project {
        m.create_project(&new_project(name, public))
            .await
            .expect("create_project")
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            username: name.to_string(),
            email: Some(format!("{name}@example.test")),
            realname: format!("{name} real"),
            comment: "c".into(),
            password_hash: Some(format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}")),
            ..NewUser::default()
        }
    }

    async fn user(m: &Store, name: &str) -> i64 {
        m.create_user(&new_user(name))
            .await
            .expect("create_user")
            .id
    }

    fn perm(namespace: &str, resource: &str, action: &str) -> RobotPermission {
        RobotPermission {
            kind: "project".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            action: action.into(),
        }
    }

    fn new_robot(
        name: &str,
        project_id: Option<i64>,
        permissions: Vec<RobotPermission>,
    ) -> NewRobot {
        NewRobot {
            name: name.to_string(),
            description: format!("{name} robot"),
            level: if project_id.is_some() {
                RobotLevel::Project
            } else {
                RobotLevel::System
            },
            project_id,
            secret_hash: format!("sha256:{name}"),
            duration_days: 30,
            expires_at: 1_800_000_000_000,
            disabled: false,
            permissions,
        }
    }

    fn key(kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.to_string(),
            algorithm: "ES256".into(),
            private_key: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
            created_at: 1_700_000_000_000,
            retired_at: None,
        }
    }

    fn conflict_naming(r: Result<impl std::fmt::Debug, MetaError>, name: &str) {
        match r {
            Err(MetaError::Conflict(msg)) => {
                assert!(msg.contains(name), "{msg:?} should name {name:?}")
            }
            other => panic!("expected a conflict naming {name:?}, got {other:?}"),
        }
    }

    fn names(projects: &[Project]) -> Vec<&str> {
        projects.iter().map(|p| p.name.as_str()).collect()
    }

    /// Every project, by a listing with no filter.
    async fn all_projects(m: &Store) -> Vec<Project> {
        m.list_projects(&ProjectQuery::default(), 1, 1000)
            .await
            .unwrap()
            .items
    }

    pub(crate) async fn projects_are_created_and_found_by_name_and_id(m: &Store) {
        assert!(m.get_project("library").await.unwrap().is_none());
        let p = project(m, "library", true).await;
        assert_eq!(
            (p.name.as_str(), p.public, p.owner_id),
            ("library", true, None)
        );
        assert_eq!(m.get_project("library").await.unwrap().as_ref(), Some(&p));
        assert_eq!(m.get_project_by_id(p.id).await.unwrap().as_ref(), Some(&p));
        assert!(m.get_project("librar").await.unwrap().is_none());
        assert!(m.get_project_by_id(p.id + 1000).await.unwrap().is_none());
        let q = project(m, "payments", false).await;
        assert_ne!(p.id, q.id);
        assert!(!m.get_project("payments").await.unwrap().unwrap().public);
    }

    pub(crate) async fn duplicate_project_names_are_refused_and_nothing_changes(m: &Store) {
        let p = project(m, "dup", false).await;
        conflict_naming(m.create_project(&new_project("dup", true)).await, "dup");
        assert_eq!(m.get_project("dup").await.unwrap(), Some(p), "unchanged");
        assert_eq!(all_projects(m).await.len(), 1);
    }

    pub(crate) async fn project_public_flag_is_set(m: &Store) {
        let p = project(m, "flags", false).await;
        assert!(m.set_project_public(p.id, true).await.unwrap());
        let got = m.get_project("flags").await.unwrap().unwrap();
        assert!(got.public);
        assert!(got.updated_at >= p.updated_at);
        assert!(m.set_project_public(p.id, false).await.unwrap());
        assert!(!m.get_project("flags").await.unwrap().unwrap().public);
        assert!(!m.set_project_public(p.id + 1000, true).await.unwrap());
    }

    pub(crate) async fn projects_list_in_byte_order_with_filters_and_pagination_totals(m: &Store) {
        let all = ["b", "a_b", "a0", "ab", "a.b", "a-b", "axb", "c"];
        for (i, n) in all.iter().enumerate() {
            project(m, n, i % 2 == 0).await;
        }
        let mut expected: Vec<&str> = all.to_vec();
        expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let everything = m
            .list_projects(&ProjectQuery::default(), 1, 100)
            .await
            .unwrap();
        assert_eq!(names(&everything.items), expected);
        assert_eq!(everything.total, 8);

        // Pages of 3: the total counts every page; past the end is empty with the total.
        let mut paged = Vec::new();
        for page in 1..=3 {
            let got = m
                .list_projects(&ProjectQuery::default(), page, 3)
                .await
                .unwrap();
            assert_eq!(got.total, 8, "page {page}");
            paged.extend(got.items.into_iter().map(|p| p.name));
        }
        assert_eq!(paged, expected);
        let past = m
            .list_projects(&ProjectQuery::default(), 4, 3)
            .await
            .unwrap();
        assert!(past.items.is_empty());
        assert_eq!(past.total, 8);
        // Page 0 is taken as page 1.
        let zero = m
            .list_projects(&ProjectQuery::default(), 0, 2)
            .await
            .unwrap();
        assert_eq!(names(&zero.items), ["a-b", "a.b"]);

        // A substring filter takes '_' and '%' literally, and ignores ASCII case.
        let q = |s: &str| ProjectQuery {
            name_contains: Some(s.to_string()),
            ..ProjectQuery::default()
        };
        let got = m.list_projects(&q("_"), 1, 100).await.unwrap();
        assert_eq!((names(&got.items), got.total), (vec!["a_b"], 1));
        assert_eq!(m.list_projects(&q("%"), 1, 100).await.unwrap().total, 0);
        let got = m.list_projects(&q("B"), 1, 2).await.unwrap();
        assert_eq!(names(&got.items), ["a-b", "a.b"]);
        assert_eq!(got.total, 6, "a-b a.b a_b ab axb b");

        // Public only, private only.
        let public = m
            .list_projects(
                &ProjectQuery {
                    public: Some(true),
                    ..ProjectQuery::default()
                },
                1,
                100,
            )
            .await
            .unwrap();
        let private = m
            .list_projects(
                &ProjectQuery {
                    public: Some(false),
                    ..ProjectQuery::default()
                },
                1,
                100,
            )
            .await
            .unwrap();
        assert_eq!(public.total + private.total, 8);
        assert!(public.items.iter().all(|p| p.public));
        assert!(private.items.iter().all(|p| !p.public));
        assert_eq!(
            m.list_projects(
                &ProjectQuery {
                    public: Some(true),
                    ..q("a")
                },
                1,
                100
            )
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
            expected
                .iter()
                .copied()
                .filter(|n| n.contains('a') && all.iter().position(|x| x == n).unwrap() % 2 == 0)
                .collect::<Vec<_>>()
        );
    }

    /// A repository with a tagged manifest referencing one blob, and an upload in progress.
    async fn fill(m: &Store, name: &str) -> (RepoName, Digest) {
        let r = repo(name);
        let blob = digest_of(&format!("{name}-layer"));
        m.link_blob(&r, &blob, 7).await.unwrap();
        let content = format!("{{\"repo\":\"{name}\"}}").into_bytes();
        let digest = Digest::sha256(&content);
        m.put_manifest(&NewManifest {
            repository: r.clone(),
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content,
            artifact_type: None,
            subject: None,
            annotations: None,
            blobs: vec![blob],
            manifests: vec![],
            tags: vec!["latest".into()],
        })
        .await
        .unwrap();
        m.create_upload(&UploadSession {
            id: format!("upload-{name}"),
            repository: r.clone(),
            committed: 0,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            store_state: vec![],
            started_at: 1,
        })
        .await
        .unwrap();
        (r, digest)
    }

    async fn holds(m: &Store, r: &RepoName, d: &Digest) -> bool {
        m.repository_exists(r).await.unwrap()
            || m.get_manifest(r, &Reference::Tag("latest".into()))
                .await
                .unwrap()
                .is_some()
            || m.get_manifest(r, &Reference::Digest(d.clone()))
                .await
                .unwrap()
                .is_some()
            || !m.list_tags(r, None, 10).await.unwrap().is_empty()
            || m.get_upload(r, &format!("upload-{}", r.as_str()))
                .await
                .unwrap()
                .is_some()
    }

    pub(crate) async fn project_has_repositories_matches_its_first_path_segment_only(m: &Store) {
        project(m, "lib", false).await;
        assert!(!m.project_has_repositories("lib").await.unwrap());
        for other in [
            "library/x",
            "lib-x/y",
            "lib.x",
            "lib_x/y",
            "libx",
            "li",
            "a/lib",
        ] {
            m.link_blob(&repo(other), &digest_of(other), 1)
                .await
                .unwrap();
        }
        assert!(!m.project_has_repositories("lib").await.unwrap());
        m.link_blob(&repo("lib/a/b"), &digest_of("x"), 1)
            .await
            .unwrap();
        assert!(m.project_has_repositories("lib").await.unwrap());
        assert!(m.project_has_repositories("library").await.unwrap());
        // A repository named exactly like the project belongs to it.
        m.link_blob(&repo("solo"), &digest_of("solo"), 1)
            .await
            .unwrap();
        assert!(m.project_has_repositories("solo").await.unwrap());
        assert!(!m.project_has_repositories("sol").await.unwrap());
    }

    pub(crate) async fn delete_project_is_refused_while_repositories_exist(m: &Store) {
        let p = project(m, "busy", false).await;
        let u = user(m, "busy-admin").await;
        m.add_member(p.id, MemberEntity::User(u), ADMIN)
            .await
            .unwrap();
        let (r, d) = fill(m, "busy/app").await;
        match m.delete_project(p.id, false).await {
            Err(MetaError::ProjectNotEmpty {
                project,
                repositories,
            }) => {
                assert_eq!((project.as_str(), repositories), ("busy", 1));
            }
            other => panic!("expected ProjectNotEmpty, got {other:?}"),
        }
        assert_eq!(
            m.get_project("busy").await.unwrap(),
            m.get_project_by_id(p.id).await.unwrap()
        );
        assert!(
            m.get_project("busy").await.unwrap().is_some(),
            "nothing changed"
        );
        assert!(holds(m, &r, &d).await);
        assert_eq!(m.list_members(p.id, None).await.unwrap().len(), 1);
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [ADMIN]);

        // An empty project goes at once, and a second delete finds nothing.
        let empty = project(m, "empty", false).await;
        assert_eq!(
            m.delete_project(empty.id, false).await.unwrap(),
            Some(vec![])
        );
        assert!(m.get_project("empty").await.unwrap().is_none());
        assert_eq!(m.delete_project(empty.id, false).await.unwrap(), None);
        assert_eq!(m.delete_project(empty.id, true).await.unwrap(), None);
    }

    pub(crate) async fn delete_project_cascade_removes_its_repositories_and_only_them(m: &Store) {
        let lib = project(m, "lib", false).await;
        let library = project(m, "library", true).await;
        let mine = ["lib", "lib/a", "lib/a/b"];
        let theirs = ["library/x", "lib-x/y", "lib.x", "lib_x/y", "libx", "a/lib"];
        let mut filled = Vec::new();
        for n in mine.iter().chain(theirs.iter()) {
            filled.push((n, fill(m, n).await));
        }
        // An upload into the project that never linked anything (no repository row).
        m.create_upload(&UploadSession {
            id: "upload-lib/fresh".into(),
            repository: repo("lib/fresh"),
            committed: 0,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            store_state: vec![],
            started_at: 1,
        })
        .await
        .unwrap();
        // Members, a project robot and a system robot spanning both projects.
        let u = user(m, "dev").await;
        m.add_member(lib.id, MemberEntity::User(u), DEVELOPER)
            .await
            .unwrap();
        m.add_member(library.id, MemberEntity::User(u), GUEST)
            .await
            .unwrap();
        let pr = m
            .create_robot(&new_robot(
                "lib+ci",
                Some(lib.id),
                vec![perm("lib", "repository", "push")],
            ))
            .await
            .unwrap();
        let sr = m
            .create_robot(&new_robot(
                "span",
                None,
                vec![
                    perm("lib", "repository", "pull"),
                    perm("library", "repository", "pull"),
                ],
            ))
            .await
            .unwrap();

        let deleted = m.delete_project(lib.id, true).await.unwrap();
        assert_eq!(
            deleted,
            Some(vec!["lib".to_string(), "lib/a".into(), "lib/a/b".into()])
        );
        for (n, (r, d)) in &filled {
            let kept = holds(m, r, d).await;
            if mine.contains(n) {
                assert!(!kept, "{n} goes with project lib");
                assert!(
                    m.linked_blob(r, &digest_of(&format!("{n}-layer")))
                        .await
                        .unwrap()
                        .is_none()
                );
            } else {
                assert!(kept, "{n} is not in project lib and stays");
                assert!(m.repository_exists(r).await.unwrap());
                assert_eq!(m.list_tags(r, None, 10).await.unwrap(), ["latest"]);
                assert!(
                    m.get_manifest(r, &Reference::Digest(d.clone()))
                        .await
                        .unwrap()
                        .is_some()
                );
            }
        }
        assert!(
            m.get_upload(&repo("lib/fresh"), "upload-lib/fresh")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            m.list_repositories(None, 100).await.unwrap(),
            ["a/lib", "lib-x/y", "lib.x", "lib_x/y", "library/x", "libx"]
        );
        assert!(m.get_project("lib").await.unwrap().is_none());
        assert!(m.get_project("library").await.unwrap().is_some());
        // Its memberships and robots went; other projects' stayed.
        assert!(m.user_project_roles(u, lib.id).await.unwrap().is_empty());
        assert_eq!(m.user_project_roles(u, library.id).await.unwrap(), [GUEST]);
        assert!(m.get_robot_by_id(pr.id).await.unwrap().is_none());
        assert_eq!(
            m.get_robot("span").await.unwrap().unwrap().permissions,
            [perm("library", "repository", "pull")],
            "a project created later under the name lib inherits nothing"
        );
        // The name is free again, with nobody in it.
        let again = project(m, "lib", false).await;
        assert_ne!(again.id, lib.id);
        assert!(m.list_members(again.id, None).await.unwrap().is_empty());
        assert!(!m.project_has_repositories("lib").await.unwrap());
        assert_eq!(
            m.get_robot_by_id(sr.id).await.unwrap().unwrap().name,
            "span"
        );
    }

    pub(crate) async fn create_project_with_owner_role_makes_the_owner_a_member(m: &Store) {
        let u = user(m, "founder").await;
        let p = m
            .create_project(&NewProject {
                name: "founded".into(),
                public: false,
                owner_id: Some(u),
                owner_role: Some(ADMIN),
            })
            .await
            .unwrap();
        assert_eq!(p.owner_id, Some(u));
        let members = m.list_members(p.id, None).await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(
            (
                members[0].entity,
                members[0].entity_name.as_str(),
                members[0].role
            ),
            (MemberEntity::User(u), "founder", ADMIN)
        );
        // Owner only, no membership.
        let q = m
            .create_project(&NewProject {
                owner_id: Some(u),
                ..new_project("owned", true)
            })
            .await
            .unwrap();
        assert!(m.list_members(q.id, None).await.unwrap().is_empty());
        // An owner that does not exist: nothing created.
        assert!(matches!(
            m.create_project(&NewProject {
                owner_id: Some(u + 1000),
                owner_role: Some(ADMIN),
                ..new_project("orphan", true)
            })
            .await,
            Err(MetaError::NotFound(_))
        ));
        assert!(m.get_project("orphan").await.unwrap().is_none());
    }

    pub(crate) async fn users_are_created_and_found_by_name_and_id(m: &Store) {
        assert_eq!(m.count_users().await.unwrap(), 0);
        let created = m.create_user(&new_user("alice")).await.unwrap();
        assert_eq!(m.get_user("alice").await.unwrap().as_ref(), Some(&created));
        assert_eq!(
            m.get_user_by_id(created.id).await.unwrap().as_ref(),
            Some(&created)
        );
        assert_eq!(created.email.as_deref(), Some("alice@example.test"));
        assert!(
            created
                .password_hash
                .as_deref()
                .unwrap()
                .starts_with("$argon2id$")
        );
        assert!(!created.sysadmin);
        assert!(
            m.get_user("Alice").await.unwrap().is_none(),
            "names are exact"
        );
        // No email, an empty email (stored as none), OIDC identities.
        let no_mail = NewUser {
            email: None,
            ..new_user("bob")
        };
        let empty_mail = NewUser {
            email: Some(String::new()),
            ..new_user("carol")
        };
        assert_eq!(m.create_user(&no_mail).await.unwrap().email, None);
        assert_eq!(m.create_user(&empty_mail).await.unwrap().email, None);
        let oidc = NewUser {
            password_hash: None,
            oidc_issuer: Some("https://idp.test".into()),
            oidc_subject: Some("sub-1".into()),
            ..new_user("dave")
        };
        let d = m.create_user(&oidc).await.unwrap();
        assert_eq!(m.get_user("dave").await.unwrap(), Some(d));
        assert_eq!(m.count_users().await.unwrap(), 4);
    }

    pub(crate) async fn duplicate_user_names_and_emails_are_refused_and_nothing_changes(m: &Store) {
        let alice = m.create_user(&new_user("alice")).await.unwrap();
        conflict_naming(
            m.create_user(&NewUser {
                email: None,
                ..new_user("alice")
            })
            .await,
            "alice",
        );
        conflict_naming(
            m.create_user(&NewUser {
                email: Some("alice@example.test".into()),
                ..new_user("alicia")
            })
            .await,
            "alice@example.test",
        );
        let first = NewUser {
            oidc_issuer: Some("https://idp.test".into()),
            oidc_subject: Some("same".into()),
            ..new_user("o1")
        };
        m.create_user(&first).await.unwrap();
        assert!(matches!(
            m.create_user(&NewUser {
                username: "o2".into(),
                email: None,
                ..first.clone()
            })
            .await,
            Err(MetaError::Conflict(_))
        ));
        assert_eq!(m.get_user("alice").await.unwrap(), Some(alice));
        assert!(m.get_user("alicia").await.unwrap().is_none());
        assert!(m.get_user("o2").await.unwrap().is_none());
        assert_eq!(m.count_users().await.unwrap(), 2);
    }

    pub(crate) async fn create_user_unless_exists_creates_once_under_concurrency(m: &Store) {
        for round in 0..5 {
            let name = format!("admin{round}");
            let barrier = Arc::new(tokio::sync::Barrier::new(4));
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let (m, barrier, name) = (m.clone(), barrier.clone(), name.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let u = NewUser {
                            sysadmin: true,
                            password_hash: Some(format!("hash-{i}")),
                            ..new_user(&name)
                        };
                        m.create_user_unless_exists(&u)
                            .await
                            .expect("create unless exists")
                    })
                })
                .collect();
            let mut created = Vec::new();
            let mut ids = BTreeSet::new();
            for t in tasks {
                let (u, was_created) = t.await.expect("task");
                ids.insert(u.id);
                if was_created {
                    created.push(u);
                }
            }
            assert_eq!(created.len(), 1, "round {round}: one creates");
            assert_eq!(ids.len(), 1, "round {round}: all see the same user");
            assert_eq!(m.get_user(&name).await.unwrap(), created.pop());
        }
        // An existing admin is left as it is.
        m.set_password_hash(
            m.get_user("admin0").await.unwrap().unwrap().id,
            Some("changed"),
        )
        .await
        .unwrap();
        let (u, was_created) = m
            .create_user_unless_exists(&new_user("admin0"))
            .await
            .unwrap();
        assert!(!was_created);
        assert_eq!(u.password_hash.as_deref(), Some("changed"));
        assert_eq!(m.count_users().await.unwrap(), 5);
    }

    pub(crate) async fn users_list_in_byte_order_with_pagination_totals(m: &Store) {
        let all = ["zed", "Bob", "amy", "a_my", "a.x", "al"];
        for n in all {
            m.create_user(&NewUser {
                email: None,
                ..new_user(n)
            })
            .await
            .unwrap();
        }
        let mut expected = all.to_vec();
        expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        let mut paged = Vec::new();
        for page in 1..=3 {
            let got = m.list_users(None, page, 2).await.unwrap();
            assert_eq!(got.total, 6);
            paged.extend(got.items.into_iter().map(|u| u.username));
        }
        assert_eq!(paged, expected);
        let got = m.list_users(Some("B"), 1, 10).await.unwrap();
        assert_eq!(
            (
                got.items
                    .iter()
                    .map(|u| u.username.as_str())
                    .collect::<Vec<_>>(),
                got.total
            ),
            (vec!["Bob"], 1)
        );
        let got = m.list_users(Some("_"), 1, 10).await.unwrap();
        assert_eq!(
            got.items
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["a_my"]
        );
        let got = m.list_users(Some("a"), 1, 1).await.unwrap();
        assert_eq!((got.items.len(), got.total), (1, 4));
        assert!(m.list_users(None, 1, 0).await.unwrap().items.is_empty());
    }

    pub(crate) async fn user_password_and_sysadmin_are_set(m: &Store) {
        let id = user(m, "pat").await;
        assert!(
            m.set_password_hash(id, Some("$argon2id$new"))
                .await
                .unwrap()
        );
        assert_eq!(
            m.get_user_by_id(id)
                .await
                .unwrap()
                .unwrap()
                .password_hash
                .as_deref(),
            Some("$argon2id$new")
        );
        assert!(m.set_password_hash(id, None).await.unwrap());
        assert_eq!(
            m.get_user_by_id(id).await.unwrap().unwrap().password_hash,
            None
        );
        assert!(m.set_sysadmin(id, true).await.unwrap());
        assert!(m.get_user("pat").await.unwrap().unwrap().sysadmin);
        assert!(m.set_sysadmin(id, false).await.unwrap());
        assert!(!m.get_user("pat").await.unwrap().unwrap().sysadmin);
        assert!(!m.set_sysadmin(id + 1000, true).await.unwrap());
        assert!(!m.set_password_hash(id + 1000, None).await.unwrap());
    }

    pub(crate) async fn delete_user_removes_memberships_groups_and_ownership(m: &Store) {
        let u = user(m, "leaver").await;
        let stay = user(m, "stayer").await;
        let p = m
            .create_project(&NewProject {
                owner_id: Some(u),
                owner_role: Some(ADMIN),
                ..new_project("left", false)
            })
            .await
            .unwrap();
        m.add_member(p.id, MemberEntity::User(stay), GUEST)
            .await
            .unwrap();
        m.set_user_groups(u, GROUP_TYPE_OIDC, &["devs".into()])
            .await
            .unwrap();
        m.set_user_groups(stay, GROUP_TYPE_OIDC, &["devs".into()])
            .await
            .unwrap();

        assert!(m.delete_user(u).await.unwrap());
        assert!(m.get_user("leaver").await.unwrap().is_none());
        assert!(m.user_groups(u).await.unwrap().is_empty());
        assert!(m.user_project_roles(u, p.id).await.unwrap().is_empty());
        let members = m.list_members(p.id, None).await.unwrap();
        assert_eq!(
            members
                .iter()
                .map(|x| x.entity_name.as_str())
                .collect::<Vec<_>>(),
            ["stayer"]
        );
        assert_eq!(
            m.get_project_by_id(p.id).await.unwrap().unwrap().owner_id,
            None
        );
        assert_eq!(m.user_groups(stay).await.unwrap().len(), 1);
        assert!(
            !m.delete_user(u).await.unwrap(),
            "a second delete finds nothing"
        );
        // Adding a deleted user is refused, and the name is free again.
        assert!(matches!(
            m.add_member(p.id, MemberEntity::User(u), GUEST).await,
            Err(MetaError::NotFound(_))
        ));
        assert_ne!(user(m, "leaver").await, u);
    }

    pub(crate) async fn groups_are_created_once_and_a_users_groups_replaced_per_type(m: &Store) {
        let g = m.ensure_group("devs", GROUP_TYPE_OIDC).await.unwrap();
        assert_eq!(m.ensure_group("devs", GROUP_TYPE_OIDC).await.unwrap(), g);
        let ldap = m.ensure_group("devs", GROUP_TYPE_LDAP).await.unwrap();
        assert_ne!(
            ldap.id, g.id,
            "the same name in another type is another group"
        );
        assert_eq!(m.get_group(g.id).await.unwrap(), Some(g.clone()));
        assert!(m.get_group(g.id + 1000).await.unwrap().is_none());

        let u = user(m, "grouped").await;
        let set = m
            .set_user_groups(
                u,
                GROUP_TYPE_OIDC,
                &["ops".into(), "devs".into(), "devs".into()],
            )
            .await
            .unwrap();
        assert_eq!(
            set.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["devs", "ops"]
        );
        assert_eq!(set[0], g, "an existing group is reused");
        m.set_user_groups(u, GROUP_TYPE_HTTP, &["web".into()])
            .await
            .unwrap();
        let kinds = |gs: Vec<berth::metadata::Group>| {
            gs.into_iter()
                .map(|g| (g.name, g.group_type))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(m.user_groups(u).await.unwrap()),
            [
                ("devs".into(), GROUP_TYPE_OIDC),
                ("ops".into(), GROUP_TYPE_OIDC),
                ("web".into(), GROUP_TYPE_HTTP)
            ]
        );
        // Replacing the OIDC groups leaves the HTTP ones.
        m.set_user_groups(u, GROUP_TYPE_OIDC, &["qa".into()])
            .await
            .unwrap();
        assert_eq!(
            kinds(m.user_groups(u).await.unwrap()),
            [
                ("qa".into(), GROUP_TYPE_OIDC),
                ("web".into(), GROUP_TYPE_HTTP)
            ]
        );
        m.set_user_groups(u, GROUP_TYPE_OIDC, &[]).await.unwrap();
        assert_eq!(
            kinds(m.user_groups(u).await.unwrap()),
            [("web".into(), GROUP_TYPE_HTTP)]
        );
        assert!(matches!(
            m.set_user_groups(u + 1000, GROUP_TYPE_OIDC, &["x".into()])
                .await,
            Err(MetaError::NotFound(_))
        ));
        assert!(m.user_groups(u + 1000).await.unwrap().is_empty());
    }

    pub(crate) async fn members_are_added_listed_changed_and_removed(m: &Store) {
        let p = project(m, "team", false).await;
        let other = project(m, "other", false).await;
        let (zoe, bob) = (user(m, "zoe").await, user(m, "bob").await);
        let devs = m.ensure_group("bob", GROUP_TYPE_OIDC).await.unwrap();

        let mz = m
            .add_member(p.id, MemberEntity::User(zoe), DEVELOPER)
            .await
            .unwrap();
        assert_eq!(
            (mz.entity_name.as_str(), mz.role, mz.project_id),
            ("zoe", DEVELOPER, p.id)
        );
        let mg = m
            .add_member(p.id, MemberEntity::Group(devs.id), GUEST)
            .await
            .unwrap();
        let mb = m
            .add_member(p.id, MemberEntity::User(bob), MAINTAINER)
            .await
            .unwrap();
        assert_eq!(m.get_member(p.id, mz.id).await.unwrap(), Some(mz.clone()));
        assert!(
            m.get_member(other.id, mz.id).await.unwrap().is_none(),
            "members are per project"
        );

        // Byte order of entity name; a user before a group of the same name.
        let listed = m.list_members(p.id, None).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|x| (x.entity_name.as_str(), x.entity))
                .collect::<Vec<_>>(),
            [
                ("bob", MemberEntity::User(bob)),
                ("bob", MemberEntity::Group(devs.id)),
                ("zoe", MemberEntity::User(zoe))
            ]
        );
        assert_eq!(listed[2], mz);
        let filtered = m.list_members(p.id, Some("O")).await.unwrap();
        assert_eq!(filtered.len(), 3);
        let filtered = m.list_members(p.id, Some("zo")).await.unwrap();
        assert_eq!(filtered, std::slice::from_ref(&mz));

        // Duplicates are refused and change nothing; missing entities are refused.
        conflict_naming(
            m.add_member(p.id, MemberEntity::User(zoe), ADMIN).await,
            "zoe",
        );
        conflict_naming(
            m.add_member(p.id, MemberEntity::Group(devs.id), ADMIN)
                .await,
            "bob",
        );
        assert_eq!(
            m.get_member(p.id, mz.id).await.unwrap().unwrap().role,
            DEVELOPER
        );
        for (project_id, entity) in [
            (p.id + 1000, MemberEntity::User(zoe)),
            (p.id, MemberEntity::User(zoe + 1000)),
            (p.id, MemberEntity::Group(devs.id + 1000)),
        ] {
            assert!(matches!(
                m.add_member(project_id, entity, GUEST).await,
                Err(MetaError::NotFound(_))
            ));
        }
        assert_eq!(m.list_members(p.id, None).await.unwrap().len(), 3);
        // The same user may be a member of another project.
        m.add_member(other.id, MemberEntity::User(zoe), GUEST)
            .await
            .unwrap();

        assert!(m.set_member_role(p.id, mz.id, ADMIN).await.unwrap());
        assert_eq!(
            m.get_member(p.id, mz.id).await.unwrap().unwrap().role,
            ADMIN
        );
        assert!(
            !m.set_member_role(other.id, mz.id, GUEST).await.unwrap(),
            "wrong project"
        );
        assert!(m.remove_member(p.id, mb.id).await.unwrap());
        assert!(!m.remove_member(p.id, mb.id).await.unwrap());
        assert!(
            !m.remove_member(other.id, mg.id).await.unwrap(),
            "wrong project"
        );
        assert_eq!(m.list_members(p.id, None).await.unwrap().len(), 2);
    }

    pub(crate) async fn memberships_through_groups_give_roles(m: &Store) {
        let p = project(m, "grp", false).await;
        let q = project(m, "grp2", false).await;
        let u = user(m, "member").await;
        let outsider = user(m, "outsider").await;
        assert!(m.user_project_roles(u, p.id).await.unwrap().is_empty());
        let devs = m.ensure_group("devs", GROUP_TYPE_OIDC).await.unwrap();
        let ops = m.ensure_group("ops", GROUP_TYPE_LDAP).await.unwrap();
        m.add_member(p.id, MemberEntity::Group(devs.id), DEVELOPER)
            .await
            .unwrap();
        m.add_member(p.id, MemberEntity::Group(ops.id), MAINTAINER)
            .await
            .unwrap();
        m.add_member(q.id, MemberEntity::Group(ops.id), GUEST)
            .await
            .unwrap();
        assert!(
            m.user_project_roles(u, p.id).await.unwrap().is_empty(),
            "not in the groups yet"
        );

        m.set_user_groups(u, GROUP_TYPE_OIDC, &["devs".into()])
            .await
            .unwrap();
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [DEVELOPER]);
        m.set_user_groups(u, GROUP_TYPE_LDAP, &["ops".into()])
            .await
            .unwrap();
        assert_eq!(
            m.user_project_roles(u, p.id).await.unwrap(),
            [DEVELOPER, MAINTAINER]
        );
        assert_eq!(m.user_project_roles(u, q.id).await.unwrap(), [GUEST]);
        // A direct membership adds to the groups' roles; the same role twice is listed once.
        m.add_member(p.id, MemberEntity::User(u), DEVELOPER)
            .await
            .unwrap();
        assert_eq!(
            m.user_project_roles(u, p.id).await.unwrap(),
            [DEVELOPER, MAINTAINER]
        );
        assert!(
            m.user_project_roles(outsider, p.id)
                .await
                .unwrap()
                .is_empty()
        );
        // Leaving a group takes its role away.
        m.set_user_groups(u, GROUP_TYPE_LDAP, &[]).await.unwrap();
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [DEVELOPER]);
        assert!(m.user_project_roles(u, q.id).await.unwrap().is_empty());
    }

    pub(crate) async fn removing_a_membership_removes_the_role(m: &Store) {
        let p = project(m, "rm", false).await;
        let u = user(m, "removed").await;
        let g = m.ensure_group("crew", GROUP_TYPE_HTTP).await.unwrap();
        m.set_user_groups(u, GROUP_TYPE_HTTP, &["crew".into()])
            .await
            .unwrap();
        let direct = m
            .add_member(p.id, MemberEntity::User(u), ADMIN)
            .await
            .unwrap();
        let via = m
            .add_member(p.id, MemberEntity::Group(g.id), GUEST)
            .await
            .unwrap();
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [ADMIN, GUEST]);
        assert!(m.remove_member(p.id, direct.id).await.unwrap());
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [GUEST]);
        assert!(m.set_member_role(p.id, via.id, DEVELOPER).await.unwrap());
        assert_eq!(m.user_project_roles(u, p.id).await.unwrap(), [DEVELOPER]);
        assert!(m.remove_member(p.id, via.id).await.unwrap());
        assert!(m.user_project_roles(u, p.id).await.unwrap().is_empty());
        assert!(m.user_projects(u).await.unwrap().is_empty());
    }

    pub(crate) async fn a_users_projects_list_with_their_roles(m: &Store) {
        let u = user(m, "busy").await;
        let g = m.ensure_group("g", GROUP_TYPE_OIDC).await.unwrap();
        m.set_user_groups(u, GROUP_TYPE_OIDC, &["g".into()])
            .await
            .unwrap();
        let mut ids = Vec::new();
        for n in ["b", "a_b", "a-b", "none"] {
            ids.push(project(m, n, false).await.id);
        }
        m.add_member(ids[0], MemberEntity::User(u), GUEST)
            .await
            .unwrap();
        m.add_member(ids[0], MemberEntity::Group(g.id), ADMIN)
            .await
            .unwrap();
        m.add_member(ids[1], MemberEntity::Group(g.id), DEVELOPER)
            .await
            .unwrap();
        m.add_member(ids[2], MemberEntity::User(u), MAINTAINER)
            .await
            .unwrap();
        let got = m.user_projects(u).await.unwrap();
        assert_eq!(
            got.iter()
                .map(|p| (p.project.name.as_str(), p.roles.clone()))
                .collect::<Vec<_>>(),
            [
                ("a-b", vec![MAINTAINER]),
                ("a_b", vec![DEVELOPER]),
                ("b", vec![ADMIN, GUEST])
            ]
        );
        assert_eq!(got[2].project, m.get_project("b").await.unwrap().unwrap());
        assert!(m.user_projects(u + 1000).await.unwrap().is_empty());
    }

    pub(crate) async fn visible_projects_are_the_public_ones_and_the_users_own(m: &Store) {
        let u = user(m, "viewer").await;
        let g = m.ensure_group("viewers", GROUP_TYPE_OIDC).await.unwrap();
        m.set_user_groups(u, GROUP_TYPE_OIDC, &["viewers".into()])
            .await
            .unwrap();
        let mut ids = std::collections::BTreeMap::new();
        for (n, public) in [
            ("pub", true),
            ("mine", false),
            ("ours", false),
            ("theirs", false),
        ] {
            ids.insert(n, project(m, n, public).await.id);
        }
        m.add_member(ids["mine"], MemberEntity::User(u), GUEST)
            .await
            .unwrap();
        m.add_member(ids["ours"], MemberEntity::Group(g.id), GUEST)
            .await
            .unwrap();
        let q = ProjectQuery {
            visible_to: Some(u),
            ..ProjectQuery::default()
        };
        let got = m.list_projects(&q, 1, 100).await.unwrap();
        assert_eq!(
            (names(&got.items), got.total),
            (vec!["mine", "ours", "pub"], 3)
        );
        let got = m.list_projects(&q, 2, 2).await.unwrap();
        assert_eq!((names(&got.items), got.total), (vec!["pub"], 3));
        let private = ProjectQuery {
            public: Some(false),
            ..q.clone()
        };
        assert_eq!(
            names(&m.list_projects(&private, 1, 100).await.unwrap().items),
            ["mine", "ours"]
        );
        let stranger = ProjectQuery {
            visible_to: Some(u + 1000),
            ..ProjectQuery::default()
        };
        assert_eq!(
            names(&m.list_projects(&stranger, 1, 100).await.unwrap().items),
            ["pub"]
        );
    }

    pub(crate) async fn robot_permissions_round_trip(m: &Store) {
        let p = project(m, "bots", false).await;
        let perms = vec![
            perm("bots", "repository", "push"),
            perm("bots", "repository", "pull"),
            perm("bots", "artifact", "delete"),
            perm("bots", "tag", "delete"),
            perm("bots", "repository", "pull"),
        ];
        let created = m
            .create_robot(&new_robot("bots+ci", Some(p.id), perms.clone()))
            .await
            .unwrap();
        let want: Vec<RobotPermission> = perms
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(created.permissions, want, "sorted, without repeats");
        assert_eq!(created.level, RobotLevel::Project);
        let got = m.get_robot("bots+ci").await.unwrap().unwrap();
        assert_eq!(got, created);
        assert_eq!(
            m.get_robot_by_id(created.id).await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(
            (
                got.description.as_str(),
                got.secret_hash.as_str(),
                got.duration_days,
                got.expires_at,
                got.disabled
            ),
            (
                "bots+ci robot",
                "sha256:bots+ci",
                30,
                1_800_000_000_000,
                false
            )
        );
        // A system robot over every project and a named one; one that never expires.
        let sys = m
            .create_robot(&NewRobot {
                duration_days: -1,
                expires_at: -1,
                ..new_robot(
                    "ops",
                    None,
                    vec![
                        perm("*", "repository", "pull"),
                        perm("bots", "repository", "push"),
                    ],
                )
            })
            .await
            .unwrap();
        let got = m.get_robot("ops").await.unwrap().unwrap();
        assert_eq!(got, sys);
        assert_eq!(
            (got.level, got.project_id, got.expires_at),
            (RobotLevel::System, None, -1)
        );
        assert_eq!(got.permissions[0], perm("*", "repository", "pull"));
        // No permissions at all round-trips too.
        let bare = m
            .create_robot(&new_robot("bare", None, vec![]))
            .await
            .unwrap();
        assert!(
            m.get_robot("bare")
                .await
                .unwrap()
                .unwrap()
                .permissions
                .is_empty()
        );
        assert!(m.get_robot("nobody").await.unwrap().is_none());
        assert!(m.get_robot_by_id(bare.id + 1000).await.unwrap().is_none());
    }

    pub(crate) async fn duplicate_robot_names_are_refused_and_nothing_changes(m: &Store) {
        let p = project(m, "dupbots", false).await;
        let first = m
            .create_robot(&new_robot(
                "dupbots+ci",
                Some(p.id),
                vec![perm("dupbots", "repository", "pull")],
            ))
            .await
            .unwrap();
        conflict_naming(
            m.create_robot(&new_robot(
                "dupbots+ci",
                Some(p.id),
                vec![perm("dupbots", "repository", "push")],
            ))
            .await,
            "dupbots+ci",
        );
        assert_eq!(m.get_robot("dupbots+ci").await.unwrap(), Some(first));
        assert_eq!(m.list_robots(None, 1, 100).await.unwrap().total, 1);
        // A project robot of a project that does not exist: nothing created.
        assert!(matches!(
            m.create_robot(&new_robot(
                "ghost+ci",
                Some(p.id + 1000),
                vec![perm("ghost", "repository", "pull")]
            ))
            .await,
            Err(MetaError::NotFound(_))
        ));
        assert!(m.get_robot("ghost+ci").await.unwrap().is_none());
    }

    pub(crate) async fn robots_list_all_or_by_project_with_pagination_totals(m: &Store) {
        let a = project(m, "a", false).await;
        let b = project(m, "b", false).await;
        for (name, project_id) in [
            ("b+x", Some(b.id)),
            ("a+z", Some(a.id)),
            ("sys", None),
            ("a+y", Some(a.id)),
            ("a-sys", None),
        ] {
            let ns = name.split('+').next().unwrap();
            m.create_robot(&new_robot(
                name,
                project_id,
                vec![perm(ns, "repository", "pull")],
            ))
            .await
            .unwrap();
        }
        let all = m.list_robots(None, 1, 100).await.unwrap();
        assert_eq!(
            (
                all.items
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
                all.total
            ),
            (vec!["a+y", "a+z", "a-sys", "b+x", "sys"], 5)
        );
        assert!(
            all.items.iter().all(|r| r.permissions.len() == 1),
            "with their permissions"
        );
        let page = m.list_robots(None, 2, 2).await.unwrap();
        assert_eq!(
            (
                page.items
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
                page.total
            ),
            (vec!["a-sys", "b+x"], 5)
        );
        assert_eq!(page.items[1].permissions, [perm("b", "repository", "pull")]);
        let of_a = m.list_robots(Some(a.id), 1, 1).await.unwrap();
        assert_eq!(
            (
                of_a.items
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
                of_a.total
            ),
            (vec!["a+y"], 2)
        );
        assert_eq!(
            m.list_robots(Some(b.id + 1000), 1, 10).await.unwrap().total,
            0
        );
    }

    pub(crate) async fn robot_update_replaces_permissions_and_secret_refresh_replaces_the_hash(
        m: &Store,
    ) {
        let p = project(m, "upd", false).await;
        let r = m
            .create_robot(&new_robot(
                "upd+ci",
                Some(p.id),
                vec![perm("upd", "repository", "pull")],
            ))
            .await
            .unwrap();
        let update = RobotUpdate {
            description: "now pushes".into(),
            disabled: true,
            duration_days: -1,
            expires_at: -1,
            permissions: vec![
                perm("upd", "repository", "push"),
                perm("upd", "tag", "delete"),
            ],
        };
        assert!(m.update_robot(r.id, &update).await.unwrap());
        let got = m.get_robot_by_id(r.id).await.unwrap().unwrap();
        assert_eq!(
            (
                got.description.as_str(),
                got.disabled,
                got.duration_days,
                got.expires_at
            ),
            ("now pushes", true, -1, -1)
        );
        assert_eq!(
            got.permissions,
            [
                perm("upd", "repository", "push"),
                perm("upd", "tag", "delete")
            ]
        );
        assert_eq!(
            (got.name.as_str(), got.secret_hash.as_str()),
            ("upd+ci", "sha256:upd+ci")
        );
        assert!(!m.update_robot(r.id + 1000, &update).await.unwrap());

        assert!(m.set_robot_secret(r.id, "sha256:refreshed").await.unwrap());
        assert_eq!(
            m.get_robot("upd+ci").await.unwrap().unwrap().secret_hash,
            "sha256:refreshed"
        );
        assert!(!m.set_robot_secret(r.id + 1000, "x").await.unwrap());
    }

    pub(crate) async fn robot_delete_removes_it_and_its_permissions(m: &Store) {
        let p = project(m, "del", false).await;
        let r = m
            .create_robot(&new_robot(
                "del+ci",
                Some(p.id),
                vec![perm("del", "repository", "pull")],
            ))
            .await
            .unwrap();
        let keep = m
            .create_robot(&new_robot(
                "del+keep",
                Some(p.id),
                vec![perm("del", "repository", "pull")],
            ))
            .await
            .unwrap();
        assert!(m.delete_robot(r.id).await.unwrap());
        assert!(m.get_robot("del+ci").await.unwrap().is_none());
        assert!(!m.delete_robot(r.id).await.unwrap());
        assert_eq!(m.get_robot("del+keep").await.unwrap(), Some(keep));
        // The name can be taken again, and starts with only its own permissions.
        let again = m
            .create_robot(&new_robot("del+ci", Some(p.id), vec![]))
            .await
            .unwrap();
        assert!(
            m.get_robot_by_id(again.id)
                .await
                .unwrap()
                .unwrap()
                .permissions
                .is_empty()
        );
    }

    pub(crate) async fn signing_key_insert_is_race_safe(m: &Store) {
        assert!(m.signing_key_in_force().await.unwrap().is_none());
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let (m, barrier) = (m.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    m.insert_signing_key_if_none(&key(&format!("replica-{i}")))
                        .await
                        .expect("insert")
                })
            })
            .collect();
        let mut in_force = BTreeSet::new();
        for t in tasks {
            in_force.insert(t.await.expect("task").kid);
        }
        assert_eq!(
            in_force.len(),
            1,
            "every replica ends with the same key: {in_force:?}"
        );
        let kid = in_force.pop_first().unwrap();
        let stored = m.signing_key_in_force().await.unwrap().unwrap();
        assert_eq!(stored.kid, kid);
        assert_eq!(stored, key(&kid), "stored as given");
        // Later starts keep it.
        assert_eq!(
            m.insert_signing_key_if_none(&key("late"))
                .await
                .unwrap()
                .kid,
            kid
        );
        assert!(m.retired_signing_keys().await.unwrap().is_empty());
    }

    pub(crate) async fn signing_keys_rotate_retire_and_drop(m: &Store) {
        m.insert_signing_key_if_none(&key("k1")).await.unwrap();
        m.rotate_signing_key(&key("k2")).await.unwrap();
        assert_eq!(m.signing_key_in_force().await.unwrap().unwrap().kid, "k2");
        let retired = m.retired_signing_keys().await.unwrap();
        assert_eq!(
            retired.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["k1"]
        );
        assert!(retired[0].retired_at.is_some());
        // A kid that exists cannot be put in force again, and nothing changes.
        assert!(matches!(
            m.rotate_signing_key(&key("k1")).await,
            Err(MetaError::Conflict(_))
        ));
        assert_eq!(m.signing_key_in_force().await.unwrap().unwrap().kid, "k2");

        assert!(m.retire_signing_key("k2").await.unwrap());
        assert!(
            !m.retire_signing_key("k2").await.unwrap(),
            "already retired"
        );
        assert!(!m.retire_signing_key("nope").await.unwrap());
        assert!(m.signing_key_in_force().await.unwrap().is_none());
        let retired = m.retired_signing_keys().await.unwrap();
        assert_eq!(retired.len(), 2);
        assert!(
            retired[0].retired_at >= retired[1].retired_at,
            "most recently retired first"
        );
        // With none in force, a start puts a new one in force.
        assert_eq!(
            m.insert_signing_key_if_none(&key("k3")).await.unwrap().kid,
            "k3"
        );

        assert!(
            !m.drop_signing_key("k3").await.unwrap(),
            "a key in force is not dropped"
        );
        assert!(m.drop_signing_key("k1").await.unwrap());
        assert!(!m.drop_signing_key("k1").await.unwrap());
        assert_eq!(
            m.retired_signing_keys()
                .await
                .unwrap()
                .iter()
                .map(|k| k.kid.as_str())
                .collect::<Vec<_>>(),
            ["k2"]
        );
        assert_eq!(m.signing_key_in_force().await.unwrap().unwrap().kid, "k3");
    }
}

mod signin {
    use berth::metadata::signin::{
        NewUserSecret, OidcSession, PendingLogin, SecretKind, WebSession,
    };
    use berth::metadata::{MetaError, NewUser};

    use crate::Store;

    async fn user(m: &Store, name: &str) -> i64 {
        m.create_user(&NewUser {
            username: name.to_string(),
            email: Some(format!("{name}@example.test")),
            ..NewUser::default()
        })
        .await
        .expect("create_user")
        .id
    }

    fn session(user_id: i64, expires_at: i64) -> WebSession {
        WebSession {
            user_id,
            csrf: format!("csrf-{user_id}-{expires_at}"),
            created_at: 1,
            expires_at,
        }
    }

    pub async fn sessions_are_found_until_they_expire_or_end(m: &Store) {
        let alice = user(m, "alice").await;
        m.create_session("d1", &session(alice, 1_000))
            .await
            .unwrap();
        m.create_session("d2", &session(alice, 5_000))
            .await
            .unwrap();
        assert_eq!(
            m.get_session("d1", 999).await.unwrap(),
            Some(session(alice, 1_000))
        );
        assert_eq!(m.get_session("d1", 1_000).await.unwrap(), None, "expired");
        assert_eq!(m.get_session("nope", 0).await.unwrap(), None);
        assert!(m.delete_session("d2").await.unwrap());
        assert!(!m.delete_session("d2").await.unwrap());
        assert_eq!(m.get_session("d2", 0).await.unwrap(), None, "ended");
        m.put_pending_login(&pending("old", 100)).await.unwrap();
        m.put_pending_login(&pending("new", 2_000)).await.unwrap();
        // d1 lapsed at 1000; "old" began at 100 and lapses after 500 ms.
        assert_eq!(m.purge_sign_ins(1_500, 500).await.unwrap(), 2);
        assert!(m.take_pending_login("old").await.unwrap().is_none());
        assert!(m.take_pending_login("new").await.unwrap().is_some());
    }

    fn pending(state: &str, created_at: i64) -> PendingLogin {
        PendingLogin {
            state: state.into(),
            nonce: format!("nonce-{state}"),
            pkce_verifier: format!("verifier-{state}"),
            return_to: "/projects".into(),
            created_at,
        }
    }

    pub async fn a_pending_login_is_taken_once(m: &Store) {
        m.put_pending_login(&pending("s1", 10)).await.unwrap();
        assert!(
            m.put_pending_login(&pending("s1", 11)).await.is_err(),
            "states are unique"
        );
        assert_eq!(
            m.take_pending_login("s1").await.unwrap(),
            Some(pending("s1", 10))
        );
        assert_eq!(m.take_pending_login("s1").await.unwrap(), None, "replayed");
    }

    pub async fn a_new_cli_secret_replaces_the_old_one_at_once(m: &Store) {
        let alice = user(m, "alice").await;
        let bob = user(m, "bob").await;
        let first = m.replace_cli_secret(alice, "digest-1").await.unwrap();
        assert_eq!(first.kind, SecretKind::Cli);
        assert_eq!(first.expires_at, None);
        m.replace_cli_secret(bob, "digest-b").await.unwrap();
        assert_eq!(
            m.find_user_secret(alice, "digest-1")
                .await
                .unwrap()
                .map(|s| s.id),
            Some(first.id)
        );
        // Another user's secret is not alice's.
        assert!(
            m.find_user_secret(alice, "digest-b")
                .await
                .unwrap()
                .is_none()
        );
        let second = m.replace_cli_secret(alice, "digest-2").await.unwrap();
        assert!(
            m.find_user_secret(alice, "digest-1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            m.find_user_secret(alice, "digest-2")
                .await
                .unwrap()
                .is_some()
        );
        let listed = m.list_user_secrets(alice).await.unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![second.id]
        );
        m.touch_user_secret(second.id, 77).await.unwrap();
        let found = m
            .find_user_secret(alice, "digest-2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.last_used_at, Some(77));
        assert!(matches!(
            m.replace_cli_secret(999_999, "digest-x").await,
            Err(MetaError::NotFound(_))
        ));
    }

    pub async fn personal_tokens_are_named_once_per_user_and_revoked_by_their_owner(m: &Store) {
        let alice = user(m, "alice").await;
        let bob = user(m, "bob").await;
        let ci = NewUserSecret {
            user_id: alice,
            name: "ci".into(),
            digest: "d-ci".into(),
            projects: Some(vec!["team".into(), "charts".into()]),
            pull_only: true,
            expires_at: Some(9_000),
        };
        let made = m.create_personal_token(&ci).await.unwrap();
        assert_eq!(made.projects, ci.projects);
        assert!(made.pull_only);
        let again = NewUserSecret {
            digest: "d-other".into(),
            ..ci.clone()
        };
        assert!(matches!(
            m.create_personal_token(&again).await,
            Err(MetaError::Conflict(_))
        ));
        // The same name for another user is fine.
        m.create_personal_token(&NewUserSecret {
            user_id: bob,
            digest: "d-bob".into(),
            ..ci.clone()
        })
        .await
        .unwrap();
        m.replace_cli_secret(alice, "d-cli").await.unwrap();
        let listed = m.list_user_secrets(alice).await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|s| (s.kind, s.name.as_str()))
                .collect::<Vec<_>>(),
            vec![(SecretKind::Cli, "cli"), (SecretKind::Personal, "ci")]
        );
        let stored = &listed[1];
        assert_eq!(stored.projects, ci.projects);
        assert_eq!(stored.expires_at, Some(9_000));
        assert!(stored.pull_only);
        assert!(
            !m.delete_user_secret(bob, made.id).await.unwrap(),
            "not bob's"
        );
        assert!(m.delete_user_secret(alice, made.id).await.unwrap());
        assert!(m.find_user_secret(alice, "d-ci").await.unwrap().is_none());
        assert!(m.find_user_secret(bob, "d-bob").await.unwrap().is_some());
    }

    pub async fn oidc_sessions_due_for_refresh_are_those_lapsing_without_failure(m: &Store) {
        let ids = [
            user(m, "a").await,
            user(m, "b").await,
            user(m, "c").await,
            user(m, "d").await,
        ];
        let s = |user_id, expires_at, token: Option<&str>, failure: Option<&str>| OidcSession {
            user_id,
            refresh_token: token.map(str::to_string),
            expires_at,
            refreshed_at: 1,
            failure: failure.map(str::to_string),
        };
        m.put_oidc_session(&s(ids[0], 100, Some("r0"), None))
            .await
            .unwrap();
        m.put_oidc_session(&s(ids[1], 100, None, None))
            .await
            .unwrap();
        m.put_oidc_session(&s(ids[2], 100, Some("r2"), Some("revoked")))
            .await
            .unwrap();
        m.put_oidc_session(&s(ids[3], 900, Some("r3"), None))
            .await
            .unwrap();
        let due = m.oidc_sessions_due(500, 0).await.unwrap();
        assert_eq!(due, vec![s(ids[0], 100, Some("r0"), None)]);
        // Refreshed too long ago counts too (refreshed_at is 1 for all of them).
        let due = m.oidc_sessions_due(0, 2).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.user_id).collect::<Vec<_>>(),
            vec![ids[0], ids[3]]
        );
        // Put replaces.
        m.put_oidc_session(&s(ids[0], 800, Some("r0b"), None))
            .await
            .unwrap();
        assert_eq!(
            m.get_oidc_session(ids[0]).await.unwrap(),
            Some(s(ids[0], 800, Some("r0b"), None))
        );
        assert!(m.oidc_sessions_due(500, 0).await.unwrap().is_empty());
    }

    pub async fn users_are_linked_to_one_oidc_identity_each(m: &Store) {
        let alice = user(m, "alice").await;
        let bob = user(m, "bob").await;
        let iss = "http://idp.test";
        assert!(m.set_user_oidc(alice, Some((iss, "sub-1"))).await.unwrap());
        let found = m.get_user_by_oidc(iss, "sub-1").await.unwrap().unwrap();
        assert_eq!(found.id, alice);
        assert!(
            m.get_user_by_oidc("http://other.test", "sub-1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            m.set_user_oidc(bob, Some((iss, "sub-1"))).await,
            Err(MetaError::Conflict(_))
        ));
        assert!(
            m.get_user_by_oidc(iss, "sub-1")
                .await
                .unwrap()
                .is_some_and(|u| u.id == alice)
        );
        // Re-linking to a new subject replaces the old one.
        assert!(m.set_user_oidc(alice, Some((iss, "sub-2"))).await.unwrap());
        assert!(m.get_user_by_oidc(iss, "sub-1").await.unwrap().is_none());
        assert!(
            !m.set_user_oidc(999_999, Some((iss, "sub-9")))
                .await
                .unwrap()
        );
        let by_mail = m
            .get_user_by_email("bob@example.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_mail.id, bob);
        assert!(
            m.get_user_by_email("nobody@example.test")
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn delete_user_removes_sessions_and_secrets(m: &Store) {
        let alice = user(m, "alice").await;
        m.create_session("s-alice", &session(alice, i64::MAX))
            .await
            .unwrap();
        m.replace_cli_secret(alice, "cli-alice").await.unwrap();
        m.put_oidc_session(&OidcSession {
            user_id: alice,
            refresh_token: Some("r".into()),
            expires_at: 5,
            refreshed_at: 1,
            failure: None,
        })
        .await
        .unwrap();
        assert!(m.delete_user(alice).await.unwrap());
        assert!(m.get_session("s-alice", 0).await.unwrap().is_none());
        assert!(
            m.find_user_secret(alice, "cli-alice")
                .await
                .unwrap()
                .is_none()
        );
        assert!(m.get_oidc_session(alice).await.unwrap().is_none());
        assert!(
            m.oidc_sessions_due(i64::MAX, i64::MAX)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
