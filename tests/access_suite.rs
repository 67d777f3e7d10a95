//! The one access suite: every rule below runs against every access backend.
//!
//! The rules ask the seam as the `/v2` dispatcher does, through the library (`auth::check`
//! and the `Grant` it returns, and the three parts of `AccessController` on their own); the
//! HTTP side (status, headers, error bodies) is `tests/auth_token.rs`. Each rule is a plain
//! async function over a [`Fixture`]: the backend under test and a way to make credentials
//! for "a principal allowed these actions on these repositories" in it. `access_suite!`
//! turns the list of rules into `#[tokio::test]`s for one backend, so a new backend is one
//! fixture and one more `access_suite!(name, opener)` line.
//!
//! An open backend (`auth.mode = "none"`) refuses nothing: [`Fixture::refuses`] says so, and
//! every rule that expects a refusal from the others expects a grant from it ([`denied`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use berth::auth::token::{TokenAccess, TokenConfig};
use berth::auth::{
    self, Access, AccessController, Action, Credentials, Denied, Grant, OpenAccess, Principal,
    Refusal,
};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The repository the principals under test are allowed something on.
const R: &str = "team/app";
/// Repositories they are allowed nothing on unless a rule says otherwise.
const OTHER: &str = "team/other";
const S: &str = "team/s";
const T: &str = "team/t";

const PULL: &[Action] = &[Action::Pull];
const PUSH_ONLY: &[Action] = &[Action::Push];
const PULL_PUSH: &[Action] = &[Action::Pull, Action::Push];
const DELETE: &[Action] = &[Action::Delete];

/// What a principal under test may do: actions per repository, and whether it may list the
/// whole catalog.
#[derive(Clone, Copy, Default)]
struct Allowed<'a> {
    repositories: &'a [(&'a str, &'a [Action])],
    catalog: bool,
}

fn allowed<'a>(repositories: &'a [(&'a str, &'a [Action])]) -> Allowed<'a> {
    Allowed {
        repositories,
        catalog: false,
    }
}

/// Credentials that are accepted now and refused once `lapse` has run.
struct Lapsing {
    headers: HeaderMap,
    /// Makes the credentials lapse: waits out a token's expiry, removes a robot, ...
    lapse: BoxFuture<'static, ()>,
    /// What the refusal's reason says afterwards.
    reason: &'static str,
}

/// One access backend under test, and how to make credentials for it.
trait Fixture {
    fn controller(&self) -> Arc<dyn AccessController>;

    /// Whether this backend ever refuses anything. One that does not grants every check, so
    /// rules that expect a refusal from the others expect a grant from it.
    fn refuses(&self) -> bool;

    /// What every challenge names besides the scope (the realm, the service).
    fn challenge_names(&self) -> Vec<String>;

    /// Request headers carrying credentials of a principal allowed exactly `allowed`.
    async fn credentials(&self, allowed: Allowed<'_>) -> HeaderMap;

    /// Headers with credentials that are not valid, each with what the refusal's reason says.
    async fn invalid(&self) -> Vec<(HeaderMap, &'static str)>;

    /// Headers with credentials in a scheme the backend does not speak, or malformed.
    fn foreign(&self) -> Vec<HeaderMap>;

    /// Credentials for `allowed` that lapse; `None` when nothing this backend accepts lapses.
    async fn lapsing(&self, allowed: Allowed<'_>) -> Option<Lapsing>;
}

fn authorization(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(value).expect("header value"),
    );
    h
}

async fn ask(
    f: &impl Fixture,
    headers: &HeaderMap,
    wanted: &[Access<'_>],
) -> Result<Grant, Denied> {
    auth::check(&f.controller(), headers, wanted).await
}

async fn grant(f: &impl Fixture, headers: &HeaderMap, wanted: &[Access<'_>]) -> Grant {
    match ask(f, headers, wanted).await {
        Ok(g) => g,
        Err(d) => panic!("{} refused: {d:?}", auth::scope(wanted)),
    }
}

/// An outcome a refusing backend must deny: the denial, after the checks every denial
/// passes (it names the scope `wanted` needed; its challenge names where to authenticate
/// and, when something was wanted, the scope). From an open backend, the outcome must be a
/// grant, and there is nothing more to check: `None`.
fn denied(
    f: &impl Fixture,
    outcome: Result<Grant, Denied>,
    wanted: &[Access<'_>],
) -> Option<Denied> {
    let scope = auth::scope(wanted);
    if !f.refuses() {
        assert!(outcome.is_ok(), "an open backend refused {scope:?}");
        return None;
    }
    let Err(d) = outcome else {
        panic!("{scope:?} was granted");
    };
    assert_eq!(d.scope, scope, "the denial names what was wanted");
    let Some(challenge) = &d.challenge else {
        panic!("a refusal without a challenge: {d:?}");
    };
    for name in f.challenge_names() {
        assert!(challenge.0.contains(&name), "{challenge:?} names {name}");
    }
    assert_eq!(
        challenge.0.contains("scope="),
        !wanted.is_empty(),
        "{challenge:?}"
    );
    if !wanted.is_empty() {
        assert!(
            challenge.0.contains(&format!("scope=\"{scope}\"")),
            "{challenge:?} carries the scope {scope}"
        );
    }
    assert!(!d.message.is_empty());
    Some(d)
}

/// `outcome` is refused as `Insufficient` (granted by an open backend), and the message
/// says what the principal lacks.
fn insufficient(f: &impl Fixture, outcome: Result<Grant, Denied>, wanted: &[Access<'_>]) {
    if let Some(d) = denied(f, outcome, wanted) {
        assert_eq!(d.refusal, Refusal::Insufficient, "{d:?}");
        assert!(d.message.contains(&d.scope), "{}", d.message);
    }
}

// ---------------------------------------------------------------------------------------
// The rules.

/// No credentials and nothing wanted (`GET /v2/`): an open backend lets the caller in; any
/// other refuses it as `Missing`, with a challenge that names no scope.
async fn no_credentials_come_in_or_are_challenged(f: &impl Fixture) {
    let none = HeaderMap::new();
    if let Some(d) = denied(f, ask(f, &none, &[]).await, &[]) {
        assert_eq!(d.refusal, Refusal::Missing);
    }
}

/// No credentials for a repository: `Missing`, and the challenge carries the scope
/// `repository:<name>:<actions>` the client must ask a token for.
async fn no_credentials_for_a_repository_are_challenged_with_its_scope(f: &impl Fixture) {
    let none = HeaderMap::new();
    for wanted in [[Access::pull(R)], [Access::push(R)], [Access::delete(R)]] {
        if let Some(d) = denied(f, ask(f, &none, &wanted).await, &wanted) {
            assert_eq!(d.refusal, Refusal::Missing);
        }
    }
}

/// Credentials that are not valid are refused as `Invalid`, whatever is wanted, with the
/// reason in the refusal and in the message.
async fn invalid_credentials_are_refused_with_a_reason(f: &impl Fixture) {
    for (headers, reason) in f.invalid().await {
        for wanted in [&[][..], &[Access::pull(R)][..]] {
            let Some(d) = denied(f, ask(f, &headers, wanted).await, wanted) else {
                continue;
            };
            let Refusal::Invalid(why) = &d.refusal else {
                panic!("{headers:?}: refused as {:?}", d.refusal);
            };
            assert!(why.contains(reason), "{headers:?}: {why:?} says {reason:?}");
            assert!(d.message.contains(why.as_str()), "{}", d.message);
        }
    }
}

/// Credentials in a scheme the backend does not speak (or malformed) count as none: the
/// same outcome, refusal and challenge as a request without any.
async fn unsupported_schemes_count_as_none(f: &impl Fixture) {
    let none = HeaderMap::new();
    for headers in f.foreign() {
        for wanted in [&[][..], &[Access::pull(R)][..], &[Access::push(R)][..]] {
            let foreign = ask(f, &headers, wanted).await;
            let without = ask(f, &none, wanted).await;
            assert_eq!(foreign.is_ok(), without.is_ok(), "{headers:?}");
            assert_eq!(foreign.err(), without.err(), "{headers:?}");
        }
    }
}

/// The three parts answer on their own: authentication turns credentials into a principal
/// without deciding anything; authorization answers per principal, repository and action.
async fn authentication_and_authorization_answer_separately(f: &impl Fixture) {
    let c = f.controller();
    let refuses = f.refuses();
    let anonymous = c
        .authenticate(&Credentials::None)
        .await
        .expect("no credentials are anonymous");
    assert!(matches!(anonymous, Principal::Anonymous));
    assert_eq!(c.allows(&anonymous, R, Action::Pull), !refuses);

    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    let principal = c
        .authenticate(&Credentials::from_headers(&headers))
        .await
        .expect("valid credentials authenticate");
    if refuses {
        assert!(!matches!(principal, Principal::Anonymous), "{principal:?}");
    }
    assert!(c.admits(&principal));
    assert!(c.allows(&principal, R, Action::Pull));
    assert_eq!(c.allows(&principal, R, Action::Push), !refuses);
    assert_eq!(c.allows(&principal, OTHER, Action::Pull), !refuses);
    assert!(c.lists(&principal, R));
    assert_eq!(c.lists(&principal, OTHER), !refuses);
}

/// A principal allowed pull on R pulls R; its grant says so and lists R.
async fn a_principal_allowed_pull_pulls(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    let g = grant(f, &headers, &[Access::pull(R)]).await;
    if f.refuses() {
        assert!(!matches!(g.principal(), Principal::Anonymous));
    }
    assert!(g.allows(R, Action::Pull));
    assert!(g.lists(R));
}

/// Pull on R grants neither push nor delete on R, and the refusal names the scope.
async fn pull_does_not_extend_to_push_or_delete(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    for wanted in [[Access::push(R)], [Access::delete(R)]] {
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    }
    let g = grant(f, &headers, &[Access::pull(R)]).await;
    assert_eq!(g.allows(R, Action::Push), !f.refuses());
    assert_eq!(g.allows(R, Action::Delete), !f.refuses());
}

/// Pull on R grants nothing on another repository, nor lists it.
async fn pull_on_one_repository_does_not_extend_to_another(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    let wanted = [Access::pull(OTHER)];
    insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    let g = grant(f, &headers, &[Access::pull(R)]).await;
    assert_eq!(g.allows(OTHER, Action::Pull), !f.refuses());
    assert_eq!(g.lists(OTHER), !f.refuses());
}

/// Repository names match whole: `team/app` is not its namespace, a repository below it, a
/// prefix of it or a name it is a prefix of, nor the same name in other case.
async fn repository_names_match_exactly(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    for name in ["team", "team/app/sub", "team/ap", "team/apps", "Team/App"] {
        let wanted = [Access::pull(name)];
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    }
}

/// Pushing needs pull and push: a principal allowed both pushes (and pulls); one allowed
/// push alone is refused the scope `repository:R:pull,push`.
async fn push_needs_pull_and_push(f: &impl Fixture) {
    let both = f.credentials(allowed(&[(R, PULL_PUSH)])).await;
    let g = grant(f, &both, &[Access::push(R)]).await;
    assert!(g.allows(R, Action::Push) && g.allows(R, Action::Pull));
    grant(f, &both, &[Access::pull(R)]).await;

    let push_only = f.credentials(allowed(&[(R, PUSH_ONLY)])).await;
    let wanted = [Access::push(R)];
    insufficient(f, ask(f, &push_only, &wanted).await, &wanted);
    if let Some(d) = denied(f, ask(f, &push_only, &wanted).await, &wanted) {
        assert_eq!(d.scope, format!("repository:{R}:pull,push"));
    }
}

/// Delete is its own action: pull and push do not grant it, and it grants neither.
async fn delete_is_separate_from_push(f: &impl Fixture) {
    let pusher = f.credentials(allowed(&[(R, PULL_PUSH)])).await;
    let wanted = [Access::delete(R)];
    insufficient(f, ask(f, &pusher, &wanted).await, &wanted);

    let deleter = f.credentials(allowed(&[(R, DELETE)])).await;
    grant(f, &deleter, &[Access::delete(R)]).await;
    for wanted in [[Access::pull(R)], [Access::push(R)]] {
        insufficient(f, ask(f, &deleter, &wanted).await, &wanted);
    }
}

/// A principal allowed nothing is still a known principal: it comes in (`GET /v2/`), and
/// what it asks for is refused as `Insufficient`, not `Missing`.
async fn a_principal_allowed_nothing_comes_in_but_takes_nothing(f: &impl Fixture) {
    let headers = f.credentials(Allowed::default()).await;
    let g = grant(f, &headers, &[]).await;
    assert_eq!(g.lists(R), !f.refuses());
    let wanted = [Access::pull(R)];
    insufficient(f, ask(f, &headers, &wanted).await, &wanted);
}

/// With the catalog grant a principal lists every repository, and may still pull only
/// what it is allowed to.
async fn the_catalog_grant_lists_every_repository(f: &impl Fixture) {
    let headers = f
        .credentials(Allowed {
            repositories: &[(R, PULL)],
            catalog: true,
        })
        .await;
    let g = grant(f, &headers, &[]).await;
    for name in [R, OTHER, S] {
        assert!(g.lists(name), "{name}");
    }
    assert_eq!(g.allows(OTHER, Action::Pull), !f.refuses());
}

/// Without the catalog grant a principal lists only what it may pull: not what it may only
/// push or delete, nor anything else.
async fn without_the_catalog_grant_only_pullable_repositories_are_listed(f: &impl Fixture) {
    let headers = f
        .credentials(allowed(&[(R, PULL), (S, PUSH_ONLY), (T, DELETE)]))
        .await;
    let g = grant(f, &headers, &[]).await;
    assert!(g.lists(R));
    for name in [S, T, OTHER] {
        assert_eq!(g.lists(name), !f.refuses(), "{name}");
    }
}

/// `check` asks for everything a request needs at once: one refused access refuses the
/// request, whichever comes first, and the scope names them all.
async fn check_asks_for_everything_at_once(f: &impl Fixture) {
    let headers = f
        .credentials(allowed(&[(R, PULL_PUSH), (OTHER, PULL)]))
        .await;
    grant(f, &headers, &[Access::push(R), Access::pull(OTHER)]).await;
    for wanted in [
        [Access::pull(R), Access::pull(S)],
        [Access::pull(S), Access::pull(R)],
        [Access::push(R), Access::push(OTHER)],
    ] {
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
        if let Some(d) = denied(f, ask(f, &headers, &wanted).await, &wanted) {
            for a in &wanted {
                let one = auth::scope(std::slice::from_ref(a));
                assert!(d.scope.contains(&one), "{} names {one}", d.scope);
            }
        }
    }
}

/// Credentials accepted once (and remembered) are refused once they lapse.
async fn lapsed_credentials_are_refused_even_after_being_accepted(f: &impl Fixture) {
    let Some(lapsing) = f.lapsing(allowed(&[(R, PULL)])).await else {
        return;
    };
    let wanted = [Access::pull(R)];
    grant(f, &lapsing.headers, &wanted).await;
    grant(f, &lapsing.headers, &wanted).await;
    lapsing.lapse.await;
    for wanted in [&[][..], &wanted[..]] {
        let d = denied(f, ask(f, &lapsing.headers, wanted).await, wanted)
            .expect("a backend whose credentials lapse refuses");
        let Refusal::Invalid(why) = &d.refusal else {
            panic!("refused as {:?}", d.refusal);
        };
        assert!(why.contains(lapsing.reason), "{why:?}");
    }
}

macro_rules! access_suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            macro_rules! rule {
                ($rule:ident) => {
                    #[tokio::test]
                    async fn $rule() {
                        super::$rule(&$open().await).await;
                    }
                };
            }

            rule!(no_credentials_come_in_or_are_challenged);
            rule!(no_credentials_for_a_repository_are_challenged_with_its_scope);
            rule!(invalid_credentials_are_refused_with_a_reason);
            rule!(unsupported_schemes_count_as_none);
            rule!(authentication_and_authorization_answer_separately);
            rule!(a_principal_allowed_pull_pulls);
            rule!(pull_does_not_extend_to_push_or_delete);
            rule!(pull_on_one_repository_does_not_extend_to_another);
            rule!(repository_names_match_exactly);
            rule!(push_needs_pull_and_push);
            rule!(delete_is_separate_from_push);
            rule!(a_principal_allowed_nothing_comes_in_but_takes_nothing);
            rule!(the_catalog_grant_lists_every_repository);
            rule!(without_the_catalog_grant_only_pullable_repositories_are_listed);
            rule!(check_asks_for_everything_at_once);
            rule!(lapsed_credentials_are_refused_even_after_being_accepted);
        }
    };
}

access_suite!(open, super::open_access);
access_suite!(token, super::token_access);

// ---------------------------------------------------------------------------------------
// The backends.

/// `auth.mode = "none"`: everyone is anonymous and may do everything; whatever a request
/// carries is not looked at.
struct Open;

async fn open_access() -> Open {
    Open
}

impl Fixture for Open {
    fn controller(&self) -> Arc<dyn AccessController> {
        Arc::new(OpenAccess)
    }

    fn refuses(&self) -> bool {
        false
    }

    fn challenge_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn credentials(&self, _allowed: Allowed<'_>) -> HeaderMap {
        HeaderMap::new()
    }

    async fn invalid(&self) -> Vec<(HeaderMap, &'static str)> {
        vec![
            (authorization("Bearer not-a-token"), ""),
            (authorization("Basic YWxpY2U6d3Jvbmc="), ""),
        ]
    }

    fn foreign(&self) -> Vec<HeaderMap> {
        vec![authorization("Negotiate abc")]
    }

    async fn lapsing(&self, _allowed: Allowed<'_>) -> Option<Lapsing> {
        None
    }
}

const ISSUER: &str = "berth-suite-issuer";
const SERVICE: &str = "berth-suite";
const REALM: &str = "http://127.0.0.1:1/token";

/// `auth.mode = "token"`: bearer JWTs from an external issuer, signed here with a key the
/// backend trusts (EC P-256, made with openssl), or one it does not.
struct Tokens {
    controller: Arc<dyn AccessController>,
    trusted: EncodingKey,
    untrusted: EncodingKey,
    _dir: tempfile::TempDir,
}

async fn token_access() -> Tokens {
    let dir = tempfile::tempdir().expect("temp dir");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for name in ["trusted", "untrusted"] {
        let private = format!("{name}.key");
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &private,
        ]);
        openssl(&[
            "pkey",
            "-in",
            &private,
            "-pubout",
            "-out",
            &format!("{name}.pub"),
        ]);
    }
    let key = |name: &str| {
        let pem = std::fs::read(dir.path().join(format!("{name}.key"))).expect("private key");
        EncodingKey::from_ec_pem(&pem).expect("EC key")
    };
    let config = TokenConfig {
        realm: REALM.into(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        public_keys: vec![dir.path().join("trusted.pub")],
        leeway_seconds: 0,
    };
    Tokens {
        controller: Arc::new(TokenAccess::new(&config).expect("token backend")),
        trusted: key("trusted"),
        untrusted: key("untrusted"),
        _dir: dir,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

impl Tokens {
    /// A token granting `allowed`, signed with `key`; `tweak` edits the claims first.
    fn token(
        &self,
        key: &EncodingKey,
        allowed: Allowed<'_>,
        tweak: impl FnOnce(&mut serde_json::Value),
    ) -> HeaderMap {
        let mut access: Vec<_> = allowed
            .repositories
            .iter()
            .map(|(name, actions)| {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                json!({"type": "repository", "name": name, "actions": actions})
            })
            .collect();
        if allowed.catalog {
            access.push(json!({"type": "registry", "name": "catalog", "actions": ["*"]}));
        }
        let mut claims = json!({
            "iss": ISSUER,
            "aud": SERVICE,
            "sub": "suite",
            "nbf": now() - 5,
            "exp": now() + 300,
            "access": access,
        });
        tweak(&mut claims);
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, key).expect("sign token");
        authorization(&format!("Bearer {token}"))
    }
}

impl Fixture for Tokens {
    fn controller(&self) -> Arc<dyn AccessController> {
        self.controller.clone()
    }

    fn refuses(&self) -> bool {
        true
    }

    fn challenge_names(&self) -> Vec<String> {
        vec![
            format!("Bearer realm=\"{REALM}\""),
            format!("service=\"{SERVICE}\""),
        ]
    }

    async fn credentials(&self, allowed: Allowed<'_>) -> HeaderMap {
        self.token(&self.trusted, allowed, |_| {})
    }

    async fn invalid(&self) -> Vec<(HeaderMap, &'static str)> {
        let a = allowed(&[(R, PULL)]);
        let k = &self.trusted;
        vec![
            (authorization("Bearer not-a-token"), "not a JWT"),
            (self.token(&self.untrusted, a, |_| {}), "signature"),
            (
                self.token(k, a, |c| c["exp"] = json!(now() - 120)),
                "expired",
            ),
            (
                self.token(k, a, |c| c["nbf"] = json!(now() + 600)),
                "not valid yet",
            ),
            (
                self.token(k, a, |c| c["iss"] = json!("someone-else")),
                "issuer",
            ),
            (
                self.token(k, a, |c| c["aud"] = json!("elsewhere")),
                "another service",
            ),
        ]
    }

    fn foreign(&self) -> Vec<HeaderMap> {
        vec![
            // alice:s3cr3t:too, a password with a colon.
            authorization("Basic YWxpY2U6czNjcjN0OnRvbw=="),
            authorization("Negotiate abc"),
            authorization("Bearer"),
        ]
    }

    async fn lapsing(&self, allowed: Allowed<'_>) -> Option<Lapsing> {
        let expires = now() + 2;
        let headers = self.token(&self.trusted, allowed, |c| c["exp"] = json!(expires));
        let lapse = Box::pin(async move {
            // Until the clock has passed `exp` (no leeway is configured): about 3 s.
            for _ in 0..50 {
                if now() > expires {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Some(Lapsing {
            headers,
            lapse,
            reason: "expired",
        })
    }
}
