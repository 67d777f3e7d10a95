//! Listing: `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`/`last` pagination
//! and RFC 5988 `Link` headers.

#[macro_use]
mod common;
use common::*;

use serde_json::Value;

/// Pushes one image to `repo` and tags it with each of `tags`.
async fn tag_all(c: &impl Http, b: &Berth, repo: &str, tags: &[&str]) {
    let (digest, m) = push_image(c, b, repo, tags[0], b"layer").await;
    for t in &tags[1..] {
        let r = put_manifest_as(c, b, repo, t, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201);
        assert_eq!(header_str(&r, "docker-content-digest"), digest);
    }
}

async fn get_json(c: &impl Http, url: &str) -> (reqwest::header::HeaderMap, Value) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    assert_api_version(&r);
    assert!(header_str(&r, "content-type").starts_with("application/json"));
    let headers = r.headers().clone();
    (headers, r.json().await.unwrap())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is not a list"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn link(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("link").map(|v| v.to_str().unwrap().to_string())
}

/// The URL of an RFC 5988 `Link: <url>; rel="next"` header.
fn next_url(b: &Berth, link: &str) -> String {
    let (target, rel) = link
        .split_once(';')
        .unwrap_or_else(|| panic!("Link {link:?} has no parameters"));
    assert_eq!(rel.trim(), "rel=\"next\"", "Link {link:?}");
    let target = target
        .trim()
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or_else(|| panic!("Link {link:?}"));
    location_url(b, target)
}

const TAGS: [&str; 7] = ["v2", "latest", "V1", "a-b", "v1.0", "_x", "1.0"];

fn sorted_tags() -> Vec<String> {
    let mut t: Vec<String> = TAGS.iter().map(|s| s.to_string()).collect();
    t.sort();
    t
}

in_both_modes!(tags_list_is_lexically_ordered);
async fn tags_list_is_lexically_ordered(auth: Auth) {
    let (b, c) = auth.start(&["team"]).await;
    tag_all(&c, &b, "team/app", &TAGS).await;
    let (h, v) = get_json(&c, &b.url("/v2/team/app/tags/list")).await;
    assert_eq!(v["name"], "team/app");
    assert_eq!(strings(&v["tags"]), sorted_tags());
    assert_eq!(
        strings(&v["tags"]),
        ["1.0", "V1", "_x", "a-b", "latest", "v1.0", "v2"]
    );
    assert_eq!(link(&h), None, "a single page has no Link");
}

in_both_modes!(tags_list_pages_with_n_and_a_link_to_the_next_page);
async fn tags_list_pages_with_n_and_a_link_to_the_next_page(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &TAGS).await;
    let (h, v) = get_json(&c, &b.url("/v2/app/tags/list?n=2")).await;
    assert_eq!(strings(&v["tags"]), ["1.0", "V1"]);
    assert_eq!(
        link(&h).as_deref(),
        Some("</v2/app/tags/list?n=2&last=V1>; rel=\"next\"")
    );
}

in_both_modes!(tags_list_link_chain_walks_every_tag_once);
async fn tags_list_link_chain_walks_every_tag_once(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &TAGS).await;
    let mut url = b.url("/v2/app/tags/list?n=3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (h, v) = get_json(&c, &url).await;
        let page = strings(&v["tags"]);
        pages += 1;
        match link(&h) {
            Some(l) => {
                assert_eq!(page.len(), 3, "a non-final page is full");
                url = next_url(&b, &l);
                seen.extend(page);
            }
            None => {
                seen.extend(page);
                break;
            }
        }
        assert!(pages < 10, "Link chain does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, sorted_tags());
}

in_both_modes!(tags_list_last_page_has_no_link);
async fn tags_list_last_page_has_no_link(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["a", "b", "c", "d"]).await;
    let (h, v) = get_json(&c, &b.url("/v2/app/tags/list?n=2&last=b")).await;
    assert_eq!(strings(&v["tags"]), ["c", "d"]);
    assert_eq!(link(&h), None, "exactly the rest: no next page");
    let (h, v) = get_json(&c, &b.url("/v2/app/tags/list?n=4")).await;
    assert_eq!(strings(&v["tags"]), ["a", "b", "c", "d"]);
    assert_eq!(link(&h), None);
}

in_both_modes!(tags_list_last_alone_starts_after_it);
async fn tags_list_last_alone_starts_after_it(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["a", "b", "c", "d"]).await;
    let (_, v) = get_json(&c, &b.url("/v2/app/tags/list?last=b")).await;
    assert_eq!(strings(&v["tags"]), ["c", "d"]);
    // `last` need not be a tag that exists.
    let (_, v) = get_json(&c, &b.url("/v2/app/tags/list?last=bb")).await;
    assert_eq!(strings(&v["tags"]), ["c", "d"]);
    let (h, v) = get_json(&c, &b.url("/v2/app/tags/list?last=d")).await;
    assert_eq!(strings(&v["tags"]), Vec::<String>::new());
    assert_eq!(link(&h), None);
}

in_both_modes!(tags_list_with_n_zero_is_empty);
async fn tags_list_with_n_zero_is_empty(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["a", "b"]).await;
    let (_, v) = get_json(&c, &b.url("/v2/app/tags/list?n=0")).await;
    assert_eq!(v["name"], "app");
    assert_eq!(strings(&v["tags"]), Vec::<String>::new());
}

in_both_modes!(tags_list_of_a_repository_without_tags_is_empty);
async fn tags_list_of_a_repository_without_tags_is_empty(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    push_blob(&c, &b, "app", b"a blob, no manifest").await;
    let (_, v) = get_json(&c, &b.url("/v2/app/tags/list")).await;
    assert_eq!(v["name"], "app");
    assert_eq!(strings(&v["tags"]), Vec::<String>::new());
}

in_both_modes!(tags_list_of_an_unknown_repository_is_name_unknown);
async fn tags_list_of_an_unknown_repository_is_name_unknown(auth: Auth) {
    let (b, c) = auth.start(&["app", "nope"]).await;
    tag_all(&c, &b, "app", &["a"]).await;
    let r = c.get(b.url("/v2/nope/tags/list")).send().await.unwrap();
    let message = expect_error(r, 404, "NAME_UNKNOWN").await;
    assert!(message.contains("nope"), "{message}");
}

in_both_modes!(tags_list_with_a_bad_n_is_400);
async fn tags_list_with_a_bad_n_is_400(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["a"]).await;
    for n in ["-1", "abc", "1.5", "99999999999999999999999"] {
        let r = c
            .get(b.url(&format!("/v2/app/tags/list?n={n}")))
            .send()
            .await
            .unwrap();
        let message = expect_error(r, 400, "PAGINATION_NUMBER_INVALID").await;
        assert!(message.contains(n), "{message}");
    }
}

in_both_modes!(tags_list_link_leaves_unreserved_characters_unescaped);
async fn tags_list_link_leaves_unreserved_characters_unescaped(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["1.0.0", "1.0.1", "1.1.0"]).await;
    let (h, _) = get_json(&c, &b.url("/v2/app/tags/list?n=1")).await;
    assert_eq!(
        link(&h).as_deref(),
        Some("</v2/app/tags/list?n=1&last=1.0.0>; rel=\"next\"")
    );
}

/// With auth on, a repository in a project the client's user is no member of (private,
/// pushed by the admin): the catalog lists only what the caller may pull, so never this.
async fn hidden_repository(auth: Auth, b: &Berth) {
    if auth == Auth::Builtin {
        create_project(b, "hidden", None).await;
        let admin = RegistryClient::signing_in("admin", API_ADMIN_PW);
        push_blob(&admin, b, "hidden/app", b"hidden").await;
        assert_eq!(catalog_of(&admin, b).await, ["hidden/app"]);
    }
}

in_both_modes!(catalog_lists_repositories_in_lexical_order);
async fn catalog_lists_repositories_in_lexical_order(auth: Auth) {
    let (b, c) = auth.start(&["alpha", "alpha-b", "m0", "zeta"]).await;
    hidden_repository(auth, &b).await;
    for repo in ["zeta", "alpha/two", "alpha", "alpha-b", "alpha/one", "m0"] {
        push_blob(&c, &b, repo, repo.as_bytes()).await;
    }
    let (h, v) = get_json(&c, &b.url("/v2/_catalog")).await;
    assert_eq!(
        strings(&v["repositories"]),
        ["alpha", "alpha-b", "alpha/one", "alpha/two", "m0", "zeta"]
    );
    assert_eq!(link(&h), None);
}

in_both_modes!(catalog_of_an_empty_registry_is_empty);
async fn catalog_of_an_empty_registry_is_empty(auth: Auth) {
    let (b, c) = auth.start(&[]).await;
    hidden_repository(auth, &b).await;
    let (h, v) = get_json(&c, &b.url("/v2/_catalog")).await;
    assert_eq!(strings(&v["repositories"]), Vec::<String>::new());
    assert_eq!(link(&h), None);
}

in_both_modes!(catalog_pages_with_n_last_and_link);
async fn catalog_pages_with_n_last_and_link(auth: Auth) {
    let (b, c) = auth.start(&["a", "b", "c", "d"]).await;
    let repos = ["a", "b/x", "b/y", "c", "d"];
    for repo in repos {
        push_blob(&c, &b, repo, repo.as_bytes()).await;
    }
    let (h, v) = get_json(&c, &b.url("/v2/_catalog?n=2")).await;
    assert_eq!(strings(&v["repositories"]), ["a", "b/x"]);
    let l = link(&h).expect("a non-final page has a Link");
    assert!(l.starts_with("</v2/_catalog?n=2&last=b"), "{l}");
    assert!(l.ends_with(">; rel=\"next\""), "{l}");

    let (h, v) = get_json(&c, &next_url(&b, &l)).await;
    assert_eq!(strings(&v["repositories"]), ["b/y", "c"]);
    let (h, v) = get_json(
        &c,
        &next_url(&b, &link(&h).expect("second page has a Link")),
    )
    .await;
    assert_eq!(strings(&v["repositories"]), ["d"]);
    assert_eq!(link(&h), None, "the last page has no Link");

    let (h, v) = get_json(&c, &b.url("/v2/_catalog?n=2&last=c")).await;
    assert_eq!(strings(&v["repositories"]), ["d"]);
    assert_eq!(link(&h), None);
}

in_both_modes!(catalog_exact_final_page_has_no_link);
async fn catalog_exact_final_page_has_no_link(auth: Auth) {
    let (b, c) = auth.start(&["a", "b", "c"]).await;
    for repo in ["a", "b", "c"] {
        push_blob(&c, &b, repo, repo.as_bytes()).await;
    }
    let (h, v) = get_json(&c, &b.url("/v2/_catalog?n=3")).await;
    assert_eq!(strings(&v["repositories"]), ["a", "b", "c"]);
    assert_eq!(link(&h), None);
    let (h, _) = get_json(&c, &b.url("/v2/_catalog?n=2")).await;
    assert_eq!(
        link(&h).as_deref(),
        Some("</v2/_catalog?n=2&last=b>; rel=\"next\"")
    );
}

in_both_modes!(catalog_with_n_zero_is_empty);
async fn catalog_with_n_zero_is_empty(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    push_blob(&c, &b, "app", b"x").await;
    let (_, v) = get_json(&c, &b.url("/v2/_catalog?n=0")).await;
    assert_eq!(strings(&v["repositories"]), Vec::<String>::new());
}

in_both_modes!(catalog_with_a_bad_n_is_400);
async fn catalog_with_a_bad_n_is_400(auth: Auth) {
    let (b, c) = auth.start(&[]).await;
    for n in ["-5", "ten"] {
        let r = c
            .get(b.url(&format!("/v2/_catalog?n={n}")))
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "PAGINATION_NUMBER_INVALID").await;
    }
}

in_both_modes!(catalog_pages_across_more_repositories_than_one_batch);
async fn catalog_pages_across_more_repositories_than_one_batch(auth: Auth) {
    // With auth on, in one project rather than 130 (each push needs its project).
    let (b, c, prefix) = match auth {
        Auth::None => (Berth::start(), RegistryClient::anonymous(), ""),
        Auth::Builtin => {
            let (b, c) = auth.start(&["batch"]).await;
            (b, c, "batch/")
        }
    };
    let mut repos: Vec<String> = (0..130).map(|i| format!("{prefix}r{i:03}")).collect();
    for repo in &repos {
        push_blob(&c, &b, repo, repo.as_bytes()).await;
    }
    repos.sort();
    let mut url = b.url("/v2/_catalog?n=50");
    let mut seen = Vec::new();
    loop {
        let (h, v) = get_json(&c, &url).await;
        seen.extend(strings(&v["repositories"]));
        match link(&h) {
            Some(l) => url = next_url(&b, &l),
            None => break,
        }
    }
    assert_eq!(seen, repos);
}

in_both_modes!(a_refused_manifest_push_lists_no_repository_and_no_tag);
async fn a_refused_manifest_push_lists_no_repository_and_no_tag(auth: Auth) {
    let (b, c) = auth.start(&["ghost"]).await;
    let m = image_manifest((OCI_CONFIG, &sha256(b"c"), 1), &[]);
    let r = put_manifest_as(&c, &b, "ghost", "v1", OCI_MANIFEST, &m).await;
    expect_error(r, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(catalog_of(&c, &b).await.is_empty());
    assert_eq!(tags_of(&c, &b, "ghost").await, None);
}

in_both_modes!(deleted_tag_leaves_the_tags_list);
async fn deleted_tag_leaves_the_tags_list(auth: Auth) {
    let (b, c) = auth.start(&["app"]).await;
    tag_all(&c, &b, "app", &["a", "b", "c"]).await;
    assert_eq!(
        c.delete(b.url("/v2/app/manifests/b"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        tags_of(&c, &b, "app").await,
        Some(vec!["a".to_string(), "c".to_string()])
    );
}
