//! Failed logins are throttled per account and per client address, on every door that
//! checks credentials (the token endpoint, Basic on `/v2`, the REST API): a 429 with
//! `Retry-After` in each door's error shape, the same for a known and an unknown account,
//! and no password in the log.

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// What each door answers for `user`/`password` from `forwarded` (an `X-Forwarded-For`).
#[derive(Clone, Copy, Debug)]
enum Door {
    Token,
    V2,
    Api,
}

async fn knock(
    b: &Berth,
    door: Door,
    user: &str,
    password: &str,
    forwarded: Option<&str>,
) -> reqwest::Response {
    let path = match door {
        Door::Token => "/service/token?service=berth&scope=repository:library/x:pull",
        Door::V2 => "/v2/library/x/tags/list",
        Door::Api => "/api/v2.0/users/current",
    };
    let mut r = client().get(b.url(path)).basic_auth(user, Some(password));
    if let Some(f) = forwarded {
        r = r.header("x-forwarded-for", f);
    }
    r.send().await.expect("request")
}

/// Asserts a throttled answer in the door's shape; returns its message.
async fn assert_throttled(door: Door, r: reqwest::Response) -> String {
    assert_eq!(r.status(), 429, "{door:?}");
    let wait: u64 = header_str(&r, "retry-after")
        .parse()
        .expect("Retry-After is seconds");
    assert!((1..=60).contains(&wait), "{door:?}: Retry-After {wait}");
    // Harbor's error shape and the OCI one are both {"errors":[{"code","message"}]}; the
    // codes differ.
    let v: Value = r.json().await.expect("JSON error body");
    let (code, message) = (&v["errors"][0]["code"], &v["errors"][0]["message"]);
    let want = match door {
        Door::Api => "TOO_MANY_REQUESTS",
        Door::Token | Door::V2 => "TOOMANYREQUESTS",
    };
    assert_eq!(code, want, "{door:?}: {v}");
    let message = message.as_str().unwrap_or_default().to_string();
    assert!(message.contains("too many failed logins"), "{door:?}: {v}");
    message
}

#[tokio::test]
async fn an_account_is_throttled_after_ten_failures_on_every_door_and_others_are_not() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["user", "create", "alice", "--password", "alice-pass-1"]);
    b.cli_ok(&["user", "create", "bob", "--password", "bob-pass-12"]);
    for (i, door) in (0..10).map(|i| (i, [Door::Token, Door::V2, Door::Api][i % 3])) {
        let r = knock(&b, door, "alice", &format!("wrong-guess-{i}"), None).await;
        assert_eq!(r.status(), 401, "failure {i} through {door:?}");
    }
    // Now even the right password is not checked, through any door.
    let mut messages = Vec::new();
    for door in [Door::Token, Door::V2, Door::Api] {
        let r = knock(&b, door, "alice", "alice-pass-1", None).await;
        messages.push(assert_throttled(door, r).await);
    }
    // An account that does not exist is throttled the same way, with the same words: the
    // answer tells nothing about which names exist.
    for i in 0..10 {
        let r = knock(&b, Door::Token, "nobody", &format!("guess-{i}"), None).await;
        assert_eq!(r.status(), 401);
    }
    let r = knock(&b, Door::Token, "nobody", "guess", None).await;
    let nobody = assert_throttled(Door::Token, r).await;
    assert_eq!(
        strip_wait(&nobody),
        strip_wait(&messages[0]),
        "known and unknown accounts"
    );
    // Another account from the same address still signs in (21 failures < 50).
    for door in [Door::Token, Door::V2, Door::Api] {
        let r = knock(&b, door, "bob", "bob-pass-12", None).await;
        assert_ne!(r.status(), 429, "{door:?}");
        assert_ne!(r.status(), 401, "{door:?}");
    }
    // No password, right or wrong, reached the log.
    let log = b.log_text();
    for secret in ["alice-pass-1", "bob-pass-12", "wrong-guess-3", "guess-7"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// The message without its number of seconds.
fn strip_wait(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

#[tokio::test]
async fn an_address_is_throttled_after_fifty_failures_over_any_accounts() {
    // Behind a trusted proxy (the test client's loopback address), X-Forwarded-For names
    // the client: two clients, one guessing, one not.
    let b = Berth::builtin(&[("BERTH_SERVER__TRUSTED_PROXIES", "127.0.0.1,::1")]);
    b.cli_ok(&["user", "create", "carol", "--password", "carol-pass-1"]);
    let guesser = Some("203.0.113.5");
    for i in 0..50 {
        // Five guesses per account, under the per-account limit.
        let user = format!("user{}", i / 5);
        let r = knock(&b, Door::Token, &user, "wrong", guesser).await;
        assert_eq!(r.status(), 401, "failure {i}");
    }
    for door in [Door::Token, Door::V2, Door::Api] {
        let r = knock(&b, door, "carol", "carol-pass-1", guesser).await;
        assert_throttled(door, r).await;
    }
    // Another client behind the same proxy is not throttled.
    let r = knock(
        &b,
        Door::Token,
        "carol",
        "carol-pass-1",
        Some("203.0.113.6"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A client cannot escape by claiming another address in front of the proxy's entry.
    let r = knock(
        &b,
        Door::Token,
        "carol",
        "carol-pass-1",
        Some("198.51.100.1, 203.0.113.5"),
    )
    .await;
    assert_throttled(Door::Token, r).await;
    // The API shows nothing changed for carol: she still signs in from elsewhere.
    let r = api_send(
        &b,
        Method::GET,
        "/api/v2.0/users/current",
        Some(("carol", "carol-pass-1")),
        None,
    )
    .await;
    // (The test client's own address is 127.0.0.1, a trusted proxy with no header.)
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let b = Berth::builtin(&[]);
    b.cli_ok(&["user", "create", "dave", "--password", "dave-pass-12"]);
    for i in 0..50 {
        let user = format!("user{}", i / 5);
        let spoofed = format!("192.0.2.{i}");
        let r = knock(&b, Door::Token, &user, "wrong", Some(&spoofed)).await;
        assert_eq!(r.status(), 401, "failure {i}");
    }
    let r = knock(&b, Door::Token, "dave", "dave-pass-12", Some("192.0.2.200")).await;
    assert_throttled(Door::Token, r).await;
}
