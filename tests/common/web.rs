//! Reading Berth's pages in tests: fields and texts by id or class, and a local sign-in
//! through the form (with its pre-session CSRF token), as a browser without JavaScript.

use std::io::Write as _;

use base64::Engine as _;

use super::oidc::WebSession;
use super::{API_ADMIN_PW, Berth, OCI_MANIFEST, image_manifest, push_blob, sha256};

/// The `value` of the first hidden input `name` of a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker)?;
    let rest = &html[at + marker.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The text of the first element with `id="ID"` (up to its first child tag).
pub fn text_of(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_string())
}

/// The texts of every element with `class="CLASS"`, in order.
pub fn texts_of(html: &str, class: &str) -> Vec<String> {
    let marker = format!("class=\"{class}\"");
    html.match_indices(&marker)
        .filter_map(|(i, _)| {
            let rest = &html[i..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')?;
            Some(rest[start..start + end].to_string())
        })
        .collect()
}

/// Signs `user` in through the local form; the session and its CSRF token (read from the
/// projects page it lands on).
pub async fn web_sign_in(b: &Berth, user: &str, password: &str) -> (WebSession, String) {
    let mut web = WebSession::new();
    let page = web.get(&b.url("/c/login")).await;
    assert_eq!(page.status(), 200);
    let pre = hidden(&page.text().await.expect("body"), "csrf").expect("a csrf field");
    let r = web
        .post_form(
            &b.url("/c/login"),
            &[
                ("username", user),
                ("password", password),
                ("csrf", &pre),
                ("return_to", "/c/projects"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "signing in as {user}");
    assert!(web.cookie("berth_session").is_some());
    let page = web.follow(&b.url("/c/projects"), &|_| false).await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf").expect("the session's csrf field");
    (web, csrf)
}

/// Status and body of a token request for `scope` with Basic `user`/`secret`.
pub async fn token_status(b: &Berth, user: &str, secret: &str, scope: &str) -> (u16, String) {
    let r = super::client()
        .get(b.url(&format!("/service/token?service=berth&scope={scope}")))
        .basic_auth(user, Some(secret))
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Status of a token request for `scope` with Basic `user`/`secret`.
pub async fn token_status_of(b: &Berth, user: &str, secret: &str, scope: &str) -> u16 {
    token_status(b, user, secret, scope).await.0
}

pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar.gz";

/// A client that sends Basic credentials with every request.
pub fn as_user(user: &str, password: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Basic {value}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// A client that signs every request as the test administrator.
pub fn admin() -> reqwest::Client {
    as_user("admin", API_ADMIN_PW)
}

/// Status and body of a page.
pub async fn get_page(web: &mut WebSession, b: &Berth, path: &str) -> (u16, String) {
    let r = web.get(&b.url(path)).await;
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

/// A chart archive: `<name>/Chart.yaml`, `<name>/README.md`, `<name>/values.yaml`.
pub fn chart_tgz(name: &str, readme: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let chart_yaml = format!(
        "apiVersion: v2\nname: {name}\nversion: 0.1.0\nappVersion: \"1.2.3\"\ndescription: A <b>demo</b> chart\n"
    );
    for (path, data) in [
        (format!("{name}/Chart.yaml"), chart_yaml.as_bytes()),
        (format!("{name}/values.yaml"), b"replicas: 1\n".as_slice()),
        (format!("{name}/README.md"), readme.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, data)
            .expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// Pushes a chart as Helm does (config and chart layer with Helm's media types).
pub async fn push_chart(
    c: &reqwest::Client,
    b: &Berth,
    repo: &str,
    tag: &str,
    tgz: &[u8],
) -> String {
    let config = br#"{"name":"demo","version":"0.1.0","apiVersion":"v2"}"#;
    push_blob(c, b, repo, config).await;
    push_blob(c, b, repo, tgz).await;
    let m = image_manifest(
        (HELM_CONFIG, &sha256(config), config.len()),
        &[(HELM_CHART, &sha256(tgz), tgz.len())],
    );
    let r = c
        .put(b.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .expect("push chart");
    assert_eq!(r.status(), 201);
    sha256(&m)
}
