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
//!
//! The built-in backend (`auth.mode = "builtin"`) grants Harbor's way, per project: a role or
//! a robot permission covers every repository of its project. [`Fixture::grants_per_project`]
//! says so, and the rules then name the repositories they grant apart from R in projects of
//! their own ([`apart`]); what a grant does to R's neighbours is a rule of its own
//! ([`a_grant_covers_its_repository_or_its_whole_project`]). The rules about accounts (public
//! projects, revocation, what a token may be issued for) run where [`Fixture::accounts`] has
//! some, and pass trivially elsewhere.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use berth::auth::builtin::{BuiltinAccess, CredentialError, Resolved, ServiceConfig};
use berth::auth::jwt::AccessEntry;
use berth::auth::roles::ProjectRole;
use berth::auth::secrets;
use berth::auth::token::{TokenAccess, TokenConfig};
use berth::auth::{
    self, Access, AccessController, Action, Authority, Credentials, Denied, Grant, OpenAccess,
    Principal, Refusal, project_of,
};
use berth::metadata::{
    MemberEntity, MetadataStore, NewProject, NewRobot, NewUser, RobotLevel,
    RobotPermission as StoredPermission, RobotUpdate, SqlMetadataStore,
};
use common::keys::Keys;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The repository the principals under test are allowed something on.
const R: &str = "team/app";
/// Repositories they are allowed nothing on unless a rule says otherwise.
const OTHER: &str = "team/other";
const S: &str = "team/s";
const T: &str = "team/t";

/// OTHER, S and T where a backend grants per project: in projects of their own, named so
/// that project names must match whole too (`team-s` is not `team`).
const APART: [(&str, &str); 3] = [
    (OTHER, "team-other/app"),
    (S, "team-s/app"),
    (T, "team-t/app"),
];

/// `name` (OTHER, S or T) as this backend can grant it apart from R: itself where grants
/// are per repository, its counterpart in [`APART`] where they are per project.
fn apart(f: &impl Fixture, name: &'static str) -> &'static str {
    if !f.grants_per_project() {
        return name;
    }
    APART
        .iter()
        .find(|(beside, _)| *beside == name)
        .map(|(_, apart)| *apart)
        .unwrap_or_else(|| panic!("{name} has no counterpart in a project of its own"))
}

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

    /// Whether a grant covers every repository of its project (Harbor's roles and robot
    /// permissions) rather than one repository. `credentials` of such a backend cannot
    /// grant two repositories of one project differently; the rules name them [`apart`].
    fn grants_per_project(&self) -> bool {
        false
    }

    /// The backend's own accounts, for the rules about them; `None` where it keeps none.
    fn accounts(&self) -> Option<&Builtin> {
        None
    }
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

    let other = apart(f, OTHER);
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
    assert_eq!(c.allows(&principal, other, Action::Pull), !refuses);
    assert!(c.lists(&principal, R));
    assert_eq!(c.lists(&principal, other), !refuses);
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
    let other = apart(f, OTHER);
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    let wanted = [Access::pull(other)];
    insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    let g = grant(f, &headers, &[Access::pull(R)]).await;
    assert_eq!(g.allows(other, Action::Pull), !f.refuses());
    assert_eq!(g.lists(other), !f.refuses());
}

/// Repository names match whole: `team/app` is not its namespace, a repository below it, a
/// prefix of it or a name it is a prefix of, nor the same name in other case; nor is its
/// project `team` a project whose name starts or ends like it. (Where grants cover a
/// project, the names in R's project are granted: see
/// [`a_grant_covers_its_repository_or_its_whole_project`].)
async fn repository_names_match_exactly(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    for name in [
        "team",
        "team/app/sub",
        "team/ap",
        "team/apps",
        "Team/App",
        "teams/app",
        "tea/app",
        "team-app",
        "my-team/app",
    ] {
        if f.grants_per_project() && project_of(name) == project_of(R) {
            continue;
        }
        let wanted = [Access::pull(name)];
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    }
}

/// A grant covers its repository alone, or, where the backend grants per project, every
/// repository of that project (its neighbours, the namespace itself, names below and beside
/// it); never a repository of another project.
async fn a_grant_covers_its_repository_or_its_whole_project(f: &impl Fixture) {
    let headers = f.credentials(allowed(&[(R, PULL)])).await;
    let g = grant(f, &headers, &[Access::pull(R)]).await;
    for name in [OTHER, S, "team", "team/app/sub", "team/ap"] {
        let wanted = [Access::pull(name)];
        if f.grants_per_project() {
            let g = grant(f, &headers, &wanted).await;
            assert!(g.allows(name, Action::Pull) && g.lists(name), "{name}");
            assert!(!g.allows(name, Action::Push), "{name}");
        } else {
            insufficient(f, ask(f, &headers, &wanted).await, &wanted);
            assert_eq!(g.lists(name), !f.refuses(), "{name}");
        }
    }
    for (_, elsewhere) in APART {
        let wanted = [Access::pull(elsewhere)];
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
        assert_eq!(g.lists(elsewhere), !f.refuses(), "{elsewhere}");
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
    for name in [R, OTHER, S, apart(f, OTHER), apart(f, S)] {
        assert!(g.lists(name), "{name}");
    }
    assert_eq!(g.allows(apart(f, OTHER), Action::Pull), !f.refuses());
}

/// Without the catalog grant a principal lists only what it may pull: not what it may only
/// push or delete, nor anything else.
async fn without_the_catalog_grant_only_pullable_repositories_are_listed(f: &impl Fixture) {
    let (s, t) = (apart(f, S), apart(f, T));
    let headers = f
        .credentials(allowed(&[(R, PULL), (s, PUSH_ONLY), (t, DELETE)]))
        .await;
    let g = grant(f, &headers, &[]).await;
    assert!(g.lists(R));
    for name in [s, t, apart(f, OTHER)] {
        assert_eq!(g.lists(name), !f.refuses(), "{name}");
    }
}

/// `check` asks for everything a request needs at once: one refused access refuses the
/// request, whichever comes first, and the scope names them all.
async fn check_asks_for_everything_at_once(f: &impl Fixture) {
    let (other, s) = (apart(f, OTHER), apart(f, S));
    let headers = f
        .credentials(allowed(&[(R, PULL_PUSH), (other, PULL)]))
        .await;
    grant(f, &headers, &[Access::push(R), Access::pull(other)]).await;
    for wanted in [
        [Access::pull(R), Access::pull(s)],
        [Access::pull(s), Access::pull(R)],
        [Access::push(R), Access::push(other)],
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

// ---------------------------------------------------------------------------------------
// The rules about accounts: where a backend has none (`Fixture::accounts` is `None`), there
// is nothing to take away, no public project and no token service, and they pass trivially.

/// Anyone may pull from a public project: anonymous callers through the token the token
/// service gives them (`/v2` itself still challenges a request without credentials, so
/// that clients fetch one), signed-in principals with no role there directly. Never a push
/// or a delete, and nothing in a private project.
async fn public_projects_are_pulled_anonymously_through_a_token(f: &impl Fixture) {
    let Some(b) = f.accounts() else {
        return;
    };
    let (public, private) = ("open/app", "closed/app");
    b.project("open", true).await;
    b.project("closed", false).await;
    let asked = [
        entry("repository", public, &["pull", "push", "delete"]),
        entry("repository", private, &["pull"]),
    ];

    let anonymous = b.access.anonymous().await.expect("anonymous authority");
    let token = b.issue(&anonymous, &asked);
    let g = grant(f, &token, &[Access::pull(public)]).await;
    assert!(matches!(g.principal(), Principal::Token { .. }));
    assert!(g.lists(public));
    assert!(!g.lists(private));
    for wanted in [
        [Access::push(public)],
        [Access::delete(public)],
        [Access::pull(private)],
    ] {
        insufficient(f, ask(f, &token, &wanted).await, &wanted);
    }

    let none = HeaderMap::new();
    let wanted = [Access::pull(public)];
    let d = denied(f, ask(f, &none, &wanted).await, &wanted).expect("challenged");
    assert_eq!(d.refusal, Refusal::Missing);

    let nobody = b.user(&[]).await;
    let headers = b
        .present(&nobody, allowed(&[(public, PULL_PUSH), (private, PULL)]))
        .await;
    let g = grant(f, &headers, &[Access::pull(public)]).await;
    assert!(g.lists(public));
    for wanted in [[Access::push(public)], [Access::pull(private)]] {
        insufficient(f, ask(f, &headers, &wanted).await, &wanted);
    }
}

/// What was given can be taken away: a removed membership, a changed password, a refreshed
/// robot secret, a disabled or deleted robot. Checked afresh (as the token endpoint checks
/// every time, and `/v2` once its cache has let the credential go), the credentials no longer
/// sign in, or sign in allowed nothing more; a refusal never says which part was wrong.
async fn revoked_accounts_are_refused_when_checked_afresh(f: &impl Fixture) {
    let Some(b) = f.accounts() else {
        return;
    };
    let team = b.project(project_of(R), false).await;
    let refused = |outcome: Result<Arc<Resolved>, CredentialError>, what: &str| match outcome {
        Err(CredentialError::Wrong) => {}
        other => panic!("{what}: {other:?}"),
    };

    // A removed membership: the user still signs in, allowed nothing there.
    let user = b.user(&[(project_of(R), ProjectRole::Developer)]).await;
    let who = b.afresh(&user).await.expect("a member signs in");
    assert!(who.allows(R, Action::Push) && who.lists(R));
    let members = b.meta.list_members(team, None).await.expect("members");
    let membership = members
        .iter()
        .find(|m| m.entity == MemberEntity::User(user.id))
        .expect("the membership");
    assert!(
        b.meta
            .remove_member(team, membership.id)
            .await
            .expect("remove")
    );
    let who = b
        .afresh(&user)
        .await
        .expect("a user without roles signs in");
    assert!(!who.allows(R, Action::Pull) && !who.lists(R));
    let token = b.issue(&who, &[entry("repository", R, &["pull", "push"])]);
    let wanted = [Access::pull(R)];
    insufficient(f, ask(f, &token, &wanted).await, &wanted);

    // A changed password: the old one is refused, the new one signs in.
    let user = b.user(&[(project_of(R), ProjectRole::Guest)]).await;
    let changed = Account {
        password: "a new password".into(),
        ..user.clone()
    };
    b.meta
        .set_password_hash(user.id, Some(&cheap_hash(&changed.password)))
        .await
        .expect("set password");
    refused(b.afresh(&user).await, "the old password");
    let who = b.afresh(&changed).await.expect("the new password");
    assert!(who.allows(R, Action::Pull));

    // A refreshed robot secret: the old one is refused at once, the new one signs in.
    let robot = b.robot(allowed(&[(R, PULL)]), -1).await;
    let refreshed = Account {
        password: secrets::generate_secret().expect("secret"),
        ..robot.clone()
    };
    let digest = secrets::secret_digest(&refreshed.password);
    assert!(
        b.meta
            .set_robot_secret(robot.id, &digest)
            .await
            .expect("refresh")
    );
    refused(b.afresh(&robot).await, "the refreshed-away secret");
    let who = b.afresh(&refreshed).await.expect("the new secret");
    assert!(who.allows(R, Action::Pull));

    // A disabled robot, then enabled again; then deleted.
    let stored = b
        .meta
        .get_robot_by_id(robot.id)
        .await
        .expect("get robot")
        .expect("the robot");
    let mut update = RobotUpdate {
        description: stored.description.clone(),
        disabled: true,
        duration_days: stored.duration_days,
        expires_at: stored.expires_at,
        permissions: stored.permissions.clone(),
    };
    assert!(
        b.meta
            .update_robot(robot.id, &update)
            .await
            .expect("disable")
    );
    refused(b.afresh(&refreshed).await, "a disabled robot");
    update.disabled = false;
    assert!(
        b.meta
            .update_robot(robot.id, &update)
            .await
            .expect("enable")
    );
    b.afresh(&refreshed).await.expect("an enabled robot");
    assert!(b.meta.delete_robot(robot.id).await.expect("delete"));
    refused(b.afresh(&refreshed).await, "a deleted robot");
}

/// A token grants what was asked for and the principal may do, scope by scope: asking for
/// more (push on a pull-only grant, delete, `*`, another project, the whole catalog) gets
/// less, never more; and what was not asked for is not granted, even if it may be done.
async fn a_token_grants_only_what_was_asked_and_may_be_done(f: &impl Fixture) {
    let Some(b) = f.accounts() else {
        return;
    };
    // A repository of another project, whatever the backend grants per.
    let (_, elsewhere) = APART[0];
    b.project(project_of(elsewhere), false).await;

    // A developer (pull and push in R's project) asks for everything.
    let developer = b.user(&[(project_of(R), ProjectRole::Developer)]).await;
    let who = b.afresh(&developer).await.expect("signs in");
    let token = b.issue(
        &who,
        &[
            entry("repository", R, &["pull", "push", "delete", "*"]),
            entry("repository", elsewhere, &["pull"]),
            entry("project", project_of(elsewhere), &["pull"]),
            entry("registry", "catalog", &["*"]),
        ],
    );
    let g = grant(f, &token, &[Access::push(R)]).await;
    assert!(g.allows(R, Action::Pull));
    assert!(g.lists(S), "the catalog shows the projects it may list");
    assert!(!g.lists(elsewhere));
    for wanted in [
        [Access::delete(R)],
        [Access::pull(elsewhere)],
        // Not asked for, though the developer may.
        [Access::pull(S)],
    ] {
        insufficient(f, ask(f, &token, &wanted).await, &wanted);
    }

    // A robot allowed to pull asks to push: it gets pull alone.
    let robot = b.robot(allowed(&[(R, PULL)]), -1).await;
    let who = b.afresh(&robot).await.expect("signs in");
    let token = b.issue(&who, &[entry("repository", R, &["pull", "push"])]);
    grant(f, &token, &[Access::pull(R)]).await;
    let wanted = [Access::push(R)];
    insufficient(f, ask(f, &token, &wanted).await, &wanted);

    // Asking for nothing it may do gets a token that grants nothing.
    let token = b.issue(&who, &[entry("repository", elsewhere, &["pull", "push"])]);
    let g = grant(f, &token, &[]).await;
    assert!(!g.lists(R) && !g.allows(R, Action::Pull));
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
            rule!(a_grant_covers_its_repository_or_its_whole_project);
            rule!(push_needs_pull_and_push);
            rule!(delete_is_separate_from_push);
            rule!(a_principal_allowed_nothing_comes_in_but_takes_nothing);
            rule!(the_catalog_grant_lists_every_repository);
            rule!(without_the_catalog_grant_only_pullable_repositories_are_listed);
            rule!(check_asks_for_everything_at_once);
            rule!(lapsed_credentials_are_refused_even_after_being_accepted);
            rule!(public_projects_are_pulled_anonymously_through_a_token);
            rule!(revoked_accounts_are_refused_when_checked_afresh);
            rule!(a_token_grants_only_what_was_asked_and_may_be_done);
        }
    };
}

access_suite!(open, super::open_access);
access_suite!(token, super::token_access);
access_suite!(builtin_basic, super::builtin_basic);
access_suite!(builtin_robot, super::builtin_robot);
access_suite!(builtin_token, super::builtin_token);

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
    _keys: Keys,
}

async fn token_access() -> Tokens {
    let keys = Keys::generate(&[
        ("trusted", Algorithm::ES256),
        ("untrusted", Algorithm::ES256),
    ]);
    let config = TokenConfig {
        realm: REALM.into(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        public_keys: vec![keys.public("trusted")],
        leeway_seconds: 0,
    };
    Tokens {
        controller: Arc::new(TokenAccess::new(&config).expect("token backend")),
        trusted: keys.encoding("trusted").1,
        untrusted: keys.encoding("untrusted").1,
        _keys: keys,
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

/// What the three built-in fixtures' `credentials` present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presents {
    /// Basic credentials: a user with a role in each project where Harbor's fixed bundles
    /// express the allowed actions (pull: guest; pull, push: developer; pull, push, delete:
    /// maintainer) and the catalog is not asked for; a robot with exactly those
    /// permissions otherwise.
    Users,
    /// Basic credentials of a robot, always.
    Robots,
    /// A token the service issued to such a user or robot, asking for exactly `allowed`.
    Tokens,
}

/// `auth.mode = "builtin"`: Berth's own accounts in a metadata store (SQLite in a temporary
/// directory), resolved by Harbor's role matrix, and the tokens its token service signs.
/// The credential cache is the default one (`credential_cache_seconds = 30`).
struct Builtin {
    access: Arc<BuiltinAccess>,
    meta: Arc<dyn MetadataStore>,
    presents: Presents,
    made: AtomicUsize,
    _dir: tempfile::TempDir,
}

/// A user's or robot's credentials, and its id in the store.
#[derive(Clone, Debug)]
struct Account {
    username: String,
    password: String,
    id: i64,
}

/// The prefix of robot names.
const ROBOT: &str = "robot$";
const BUILTIN_REALM: &str = "http://localhost/service/token";
const WRONG: &str = "unknown user or wrong password";

async fn builtin_basic() -> Builtin {
    Builtin::open(Presents::Users).await
}

async fn builtin_robot() -> Builtin {
    Builtin::open(Presents::Robots).await
}

async fn builtin_token() -> Builtin {
    Builtin::open(Presents::Tokens).await
}

/// An argon2id hash of `password` with the smallest cost argon2 allows: the stored form is
/// the real one (the parameters travel in the hash), without seconds of hashing per user in
/// a debug build.
fn cheap_hash(password: &str) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(8, 1, 1, None).expect("argon2 parameters");
    let salt = argon2::password_hash::SaltString::encode_b64(b"access-suite-salt").expect("salt");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

fn entry(kind: &str, name: &str, actions: &[&str]) -> AccessEntry {
    AccessEntry {
        kind: kind.into(),
        name: name.into(),
        actions: actions.iter().map(|a| a.to_string()).collect(),
    }
}

fn basic(username: &str, password: &str) -> HeaderMap {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    authorization(&format!("Basic {encoded}"))
}

fn bearer(token: &str) -> HeaderMap {
    authorization(&format!("Bearer {token}"))
}

fn now_millis() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("milliseconds fit")
}

/// Actions allowed per project (each repository's, together), in the order first named.
fn per_project<'a>(allowed: Allowed<'a>) -> Vec<(&'a str, Vec<Action>)> {
    let mut out: Vec<(&str, Vec<Action>)> = Vec::new();
    for &(repository, actions) in allowed.repositories {
        let project = project_of(repository);
        match out.iter_mut().find(|(p, _)| *p == project) {
            Some((_, held)) => {
                for a in actions {
                    if !held.contains(a) {
                        held.push(*a);
                    }
                }
            }
            None => out.push((project, actions.to_vec())),
        }
    }
    out
}

/// The role whose bundle is exactly `actions`, if one is.
fn role_for(actions: &[Action]) -> Option<ProjectRole> {
    let has = |a| actions.contains(&a);
    let (pull, push, delete) = (has(Action::Pull), has(Action::Push), has(Action::Delete));
    match (pull, push, delete) {
        (true, false, false) => Some(ProjectRole::Guest),
        (true, true, false) => Some(ProjectRole::Developer),
        (true, true, true) => Some(ProjectRole::Maintainer),
        _ => None,
    }
}

impl Builtin {
    async fn open(presents: Presents) -> Builtin {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("meta.db").display());
        let sql = SqlMetadataStore::connect(&url, 4).await.expect("connect");
        sql.migrate().await.expect("migrate");
        let meta: Arc<dyn MetadataStore> = Arc::new(sql);
        let access = BuiltinAccess::open(meta.clone(), &ServiceConfig::default(), ROBOT, false)
            .await
            .expect("built-in backend");
        Builtin {
            access: Arc::new(access),
            meta,
            presents,
            made: AtomicUsize::new(0),
            _dir: dir,
        }
    }

    /// A name not used before in this store.
    fn fresh(&self, what: &str) -> String {
        format!("{what}{}", self.made.fetch_add(1, Ordering::Relaxed))
    }

    /// The project's id; created (private or public as asked) when there is none.
    async fn project(&self, name: &str, public: bool) -> i64 {
        if let Some(p) = self.meta.get_project(name).await.expect("get project") {
            return p.id;
        }
        let p = NewProject {
            name: name.into(),
            public,
            ..Default::default()
        };
        self.meta
            .create_project(&p)
            .await
            .expect("create project")
            .id
    }

    /// A user with `roles` (creating the projects).
    async fn user(&self, roles: &[(&str, ProjectRole)]) -> Account {
        let username = self.fresh("user");
        let password = format!("{username}-password");
        let u = NewUser {
            username: username.clone(),
            password_hash: Some(cheap_hash(&password)),
            ..Default::default()
        };
        let id = self.meta.create_user(&u).await.expect("create user").id;
        for &(project, role) in roles {
            let project = self.project(project, false).await;
            self.meta
                .add_member(project, MemberEntity::User(id), role.id())
                .await
                .expect("add member");
        }
        Account {
            username,
            password,
            id,
        }
    }

    /// A robot allowed exactly `allowed` (pull also lists; the catalog is listing every
    /// project), expiring at `expires_at` (unix ms; -1: never): a project robot
    /// (`<project>+<name>`) where `allowed` is in one project, a system robot otherwise.
    async fn robot(&self, allowed: Allowed<'_>, expires_at: i64) -> Account {
        let permission = |namespace: &str, resource: &str, action: &str| StoredPermission {
            kind: "project".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            action: action.into(),
        };
        let mut permissions = Vec::new();
        for (project, actions) in per_project(allowed) {
            for a in actions {
                permissions.push(permission(project, "repository", a.as_str()));
                if a == Action::Pull {
                    permissions.push(permission(project, "repository", "list"));
                }
            }
        }
        if allowed.catalog {
            permissions.push(permission("*", "repository", "list"));
        }
        permissions.sort();
        permissions.dedup();
        let (name, level, project_id) = match per_project(allowed).as_slice() {
            [(project, _)] if !allowed.catalog => (
                format!("{project}+{}", self.fresh("ci")),
                RobotLevel::Project,
                Some(self.project(project, false).await),
            ),
            _ => (self.fresh("ci"), RobotLevel::System, None),
        };
        let secret = secrets::generate_secret().expect("secret");
        let r = NewRobot {
            name: name.clone(),
            description: String::new(),
            level,
            project_id,
            secret_hash: secrets::secret_digest(&secret),
            duration_days: if expires_at < 0 { -1 } else { 1 },
            expires_at,
            disabled: false,
            permissions,
        };
        let id = self.meta.create_robot(&r).await.expect("create robot").id;
        Account {
            username: format!("{ROBOT}{name}"),
            password: secret,
            id,
        }
    }

    /// A principal allowed `allowed`: a user where roles express it and this fixture
    /// presents users, a robot otherwise.
    async fn principal(&self, allowed: Allowed<'_>) -> Account {
        let projects = per_project(allowed);
        if self.presents != Presents::Tokens {
            // Per project, the rules grant every repository alike (see `apart`).
            for &(repository, actions) in allowed.repositories {
                let (_, all) = projects
                    .iter()
                    .find(|(p, _)| *p == project_of(repository))
                    .expect("its project");
                assert!(
                    all.len() == actions.len(),
                    "{repository} is granted apart from its project's other repositories"
                );
            }
        }
        let roles: Option<Vec<(&str, ProjectRole)>> = projects
            .iter()
            .map(|(p, actions)| role_for(actions).map(|r| (*p, r)))
            .collect();
        match roles {
            Some(roles) if self.presents != Presents::Robots && !allowed.catalog => {
                self.user(&roles).await
            }
            _ => self.robot(allowed, -1).await,
        }
    }

    /// What `account` presents: its Basic credentials, or a token issued to it for exactly
    /// `allowed` (checked afresh, as the token endpoint does).
    async fn present(&self, account: &Account, allowed: Allowed<'_>) -> HeaderMap {
        self.present_with(&self.access, account, allowed).await
    }

    async fn present_with(
        &self,
        access: &BuiltinAccess,
        account: &Account,
        allowed: Allowed<'_>,
    ) -> HeaderMap {
        if self.presents != Presents::Tokens {
            return basic(&account.username, &account.password);
        }
        let who = access
            .sign_in(&account.username, &account.password, false)
            .await
            .expect("the token endpoint signs the account in");
        let mut asked: Vec<AccessEntry> = allowed
            .repositories
            .iter()
            .map(|(name, actions)| {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                entry("repository", name, &actions)
            })
            .collect();
        if allowed.catalog {
            asked.push(entry("registry", "catalog", &["*"]));
        }
        bearer(&access.issue(&who, &asked).expect("issue").token)
    }

    /// The account's credentials checked afresh, as the token endpoint checks them.
    async fn afresh(&self, account: &Account) -> Result<Arc<Resolved>, CredentialError> {
        self.access
            .sign_in(&account.username, &account.password, false)
            .await
    }

    /// A token the service issues to `who` for `asked`.
    fn issue(&self, who: &Resolved, asked: &[AccessEntry]) -> HeaderMap {
        bearer(&self.access.issue(who, asked).expect("issue").token)
    }

    /// A token signed with the service's own key (or `key`), its claims edited by `tweak`.
    async fn forged(
        &self,
        key: Option<(&str, &EncodingKey)>,
        alg: Algorithm,
        tweak: impl FnOnce(&mut serde_json::Value),
    ) -> HeaderMap {
        let stored = self
            .meta
            .signing_key_in_force()
            .await
            .expect("signing key")
            .expect("a key in force");
        let own = EncodingKey::from_ec_pem(stored.private_key.as_bytes()).expect("EC key");
        let (kid, key) = key.unwrap_or((&stored.kid, &own));
        let mut claims = json!({
            "iss": ServiceConfig::default().issuer,
            "aud": ServiceConfig::default().service,
            "sub": "suite",
            "nbf": now() - 5,
            "exp": now() + 300,
            "access": [{"type": "repository", "name": R, "actions": ["pull"]}],
        });
        tweak(&mut claims);
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        bearer(&jsonwebtoken::encode(&header, &claims, key).expect("sign"))
    }
}

impl Fixture for Builtin {
    fn controller(&self) -> Arc<dyn AccessController> {
        self.access.clone()
    }

    fn refuses(&self) -> bool {
        true
    }

    fn challenge_names(&self) -> Vec<String> {
        vec![
            format!("Bearer realm=\"{BUILTIN_REALM}\""),
            format!("service=\"{}\"", ServiceConfig::default().service),
        ]
    }

    async fn credentials(&self, allowed: Allowed<'_>) -> HeaderMap {
        let account = self.principal(allowed).await;
        self.present(&account, allowed).await
    }

    async fn invalid(&self) -> Vec<(HeaderMap, &'static str)> {
        let a = allowed(&[(R, PULL)]);
        if self.presents != Presents::Tokens {
            let user = self.user(&[(project_of(R), ProjectRole::Guest)]).await;
            let robot = self.robot(a, -1).await;
            let disabled = self.robot(a, -1).await;
            let stored = self
                .meta
                .get_robot_by_id(disabled.id)
                .await
                .expect("get robot")
                .expect("the robot");
            let update = RobotUpdate {
                description: stored.description,
                disabled: true,
                duration_days: stored.duration_days,
                expires_at: stored.expires_at,
                permissions: stored.permissions,
            };
            self.meta
                .update_robot(disabled.id, &update)
                .await
                .expect("disable");
            let expired = self.robot(a, now_millis() - 1000).await;
            let prefix_only = ROBOT;
            return vec![
                (basic(&user.username, "wrong"), WRONG),
                (basic(&user.username, ""), WRONG),
                (basic(&user.username.to_uppercase(), &user.password), WRONG),
                (basic("nobody", &user.password), WRONG),
                (basic(&robot.username, "wrong"), WRONG),
                (basic(&robot.username, &user.password), WRONG),
                // The robot's secret under the name without its prefix: a user that
                // does not exist.
                (
                    basic(&robot.username[ROBOT.len()..], &robot.password),
                    WRONG,
                ),
                (basic(&format!("{ROBOT}nobody"), &robot.password), WRONG),
                (basic(prefix_only, &robot.password), WRONG),
                (basic(&disabled.username, &disabled.password), WRONG),
                (basic(&expired.username, &expired.password), WRONG),
            ];
        }
        let who = self
            .afresh(&self.principal(a).await)
            .await
            .expect("signs in");
        let issued = self.issue(&who, &[entry("repository", R, &["pull"])]);
        let issued = issued[header::AUTHORIZATION]
            .to_str()
            .expect("ascii")
            .trim_start_matches("Bearer ")
            .to_string();
        // The issued token with its claims rewritten to grant push, the signature kept.
        let parts: Vec<&str> = issued.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[1]).expect("base64")).expect("claims");
        claims["access"] = json!([{"type": "repository", "name": R, "actions": ["pull", "push"]}]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(claims.to_string()),
            parts[2]
        );
        let foreign = jsonwebtoken::get_current_timestamp().to_string();
        let foreign_key = {
            let k = berth::auth::jwt::SigningKey::generate().expect("key");
            EncodingKey::from_ec_pem(k.to_pem().as_bytes()).expect("EC key")
        };
        let own_kid = self
            .meta
            .signing_key_in_force()
            .await
            .expect("signing key")
            .expect("a key in force")
            .kid;
        let hmac = EncodingKey::from_secret(b"guessable");
        vec![
            (authorization("Bearer not-a-token"), "not a JWT"),
            (bearer(&tampered), "signature"),
            (
                self.forged(Some((&own_kid, &foreign_key)), Algorithm::ES256, |_| {})
                    .await,
                "signature",
            ),
            (
                self.forged(Some((&foreign, &foreign_key)), Algorithm::ES256, |_| {})
                    .await,
                "does not know",
            ),
            (
                self.forged(Some((&own_kid, &hmac)), Algorithm::HS256, |_| {})
                    .await,
                "not accepted",
            ),
            (
                self.forged(None, Algorithm::ES256, |c| c["exp"] = json!(now() - 120))
                    .await,
                "expired",
            ),
            (
                self.forged(None, Algorithm::ES256, |c| c["nbf"] = json!(now() + 600))
                    .await,
                "not valid yet",
            ),
            (
                self.forged(None, Algorithm::ES256, |c| c["iss"] = json!("someone-else"))
                    .await,
                "issuer",
            ),
            (
                self.forged(None, Algorithm::ES256, |c| c["aud"] = json!("elsewhere"))
                    .await,
                "another service",
            ),
        ]
    }

    fn foreign(&self) -> Vec<HeaderMap> {
        vec![
            authorization("Negotiate abc"),
            authorization("Bearer"),
            authorization("Basic !!!"),
            // `nocolon`: no password.
            authorization("Basic bm9jb2xvbg=="),
        ]
    }

    async fn lapsing(&self, allowed: Allowed<'_>) -> Option<Lapsing> {
        if self.presents == Presents::Tokens {
            // A token service on the same store (and so the same key) whose tokens last a
            // second; they lapse once that and the leeway have passed.
            let short = ServiceConfig {
                token_seconds: 1,
                ..ServiceConfig::default()
            };
            let access = BuiltinAccess::open(self.meta.clone(), &short, ROBOT, false)
                .await
                .expect("short-lived token service");
            let account = self.principal(allowed).await;
            let headers = self.present_with(&access, &account, allowed).await;
            let expires = now() + 1 + 5;
            let lapse = Box::pin(async move {
                for _ in 0..100 {
                    if now() > expires {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            return Some(Lapsing {
                headers,
                lapse,
                reason: "expired",
            });
        }
        // A robot that expires in two seconds.
        let expires = now_millis() + 2000;
        let robot = self.robot(allowed, expires).await;
        let lapse = Box::pin(async move {
            for _ in 0..50 {
                if now_millis() > expires {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Some(Lapsing {
            headers: basic(&robot.username, &robot.password),
            lapse,
            reason: WRONG,
        })
    }

    fn grants_per_project(&self) -> bool {
        self.presents != Presents::Tokens
    }

    fn accounts(&self) -> Option<&Builtin> {
        Some(self)
    }
}
