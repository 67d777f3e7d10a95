//! Reading Berth's pages in tests: fields and texts by id or class, and a local sign-in
//! through the form (with its pre-session CSRF token), as a browser without JavaScript.

use super::Berth;
use super::oidc::WebSession;

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
