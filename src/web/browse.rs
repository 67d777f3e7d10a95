//! Browsing what the viewer may see: projects, a project (repositories, members, robot
//! accounts, settings), a repository's artifacts with their pull commands, one artifact
//! (manifest, layers, config, referrers, a Helm chart's Chart.yaml and README), and the
//! deletes of tags and artifacts.
//!
//! Access follows the same rules as `/api/v2.0` (`Resolved::may_in_project` and the public
//! flag with `roles::public_allows`): a project the viewer may not see is "not found", as a
//! missing one is. Listings are pages of SQL (`list_projects`, `project_repositories`,
//! `artifacts`); nothing loads a whole project or repository. Deletes go through the content
//! layer as `/v2` and `/api/v2.0` deletes do.
//!
//! URLs (a repository name's components never are `-`, so `/-/` cannot be part of one):
//!
//! | page or action                 | URL                                                      |
//! |--------------------------------|----------------------------------------------------------|
//! | projects                       | `GET /c/projects?q=&page=`                               |
//! | a project                      | `GET /c/projects/{project}?q=&page=`                     |
//! | make it public or private      | `POST /c/projects/{project}/settings` (`csrf`, `public`) |
//! | a repository's artifacts       | `GET /c/repositories/{repository}?page=`                 |
//! | one artifact                   | `GET /c/repositories/{repository}/-/artifacts/{digest}`  |
//! | delete a tag                   | `POST /c/repositories/{repository}/-/delete-tag` (`csrf`, `tag`) |
//! | delete an artifact             | `POST /c/repositories/{repository}/-/delete-artifact` (`csrf`, `digest`) |

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use futures::StreamExt;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;
use serde_json::Value;

use super::session::Viewer;
use super::{
    Web, WebError, WebResult, chart, copy_button, encode, layout, markdown, registry_host,
};
use crate::auth::builtin::rfc3339;
use crate::auth::roles::{self, Action, ProjectRole, Resource};
use crate::content::ContentError;
use crate::metadata::identity::{MemberEntity, Project, ProjectQuery};
use crate::oci::{Digest, Reference, RepoName};

/// Rows per page of projects and repositories.
const PAGE_SIZE: u64 = 25;
/// Artifacts per page of a repository.
const ARTIFACT_PAGE_SIZE: u64 = 30;
/// Tags shown on one artifact's row (one image may carry thousands: the page stays small).
const TAGS_SHOWN: usize = 20;
/// Tags on a page of an artifact's tags.
const TAG_PAGE_SIZE: u64 = 100;
/// Members and robots shown on a project's page at most.
const MAX_MEMBERS_SHOWN: usize = 200;
const ROBOTS_SHOWN: u64 = 100;
/// A config blob larger than this is not shown.
const MAX_CONFIG_SHOWN: u64 = 64 << 10;
/// A chart layer larger than this is not opened.
const MAX_CHART_LAYER: u64 = 8 << 20;
/// Pages beyond this are not asked for (keeps the offset arithmetic small).
const MAX_PAGE: u64 = 1_000_000;

impl From<ContentError> for WebError {
    fn from(e: ContentError) -> WebError {
        match e {
            ContentError::ManifestUnknown(_)
            | ContentError::NameUnknown(_)
            | ContentError::BlobUnknown(_) => WebError::NotFound(e.to_string()),
            ContentError::Metadata(m) => WebError::Store(m),
            e => WebError::Internal(e.to_string()),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: String,
}

impl ListQuery {
    fn page(&self) -> u64 {
        self.page
            .parse::<u64>()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(1)
            .min(MAX_PAGE)
    }

    fn search(&self) -> Option<&str> {
        Some(self.q.trim()).filter(|q| !q.is_empty())
    }
}

/// The header's user and sign-out token.
fn who(viewer: &Viewer) -> Option<(&str, &str)> {
    viewer
        .user
        .as_ref()
        .map(|u| (u.username.as_str(), viewer.csrf.as_str()))
}

/// May the viewer do `action` on `resource` in `p` (as anyone may in a public project, or
/// by their roles)?
fn may(p: &Project, viewer: &Viewer, resource: Resource, action: Action) -> bool {
    (p.public && roles::public_allows(resource, action))
        || viewer.access.may_in_project(&p.name, resource, action)
}

/// The project named, if the viewer may see it; else "not found" (whether it exists or not).
pub async fn visible_project(web: &Web, viewer: &Viewer, name: &str) -> WebResult<Project> {
    let not_found = || WebError::NotFound(format!("project {name} not found"));
    let p = web.meta().get_project(name).await?.ok_or_else(not_found)?;
    if may(&p, viewer, Resource::Project, Action::Read) {
        Ok(p)
    } else {
        Err(not_found())
    }
}

fn when(ms: i64) -> String {
    rfc3339((ms / 1000).max(0) as u64)
}

/// Bytes for people: `1.5 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `sha256:0123456789ab`: the first 12 hex digits.
fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

/// "Page 2 of 7" with previous and next links keeping the search.
fn pager(base: &str, search: Option<&str>, page: u64, size: u64, total: u64) -> Markup {
    let pages = total.div_ceil(size).max(1);
    let link = |n: u64| match search {
        Some(q) => format!("{base}?q={}&page={n}", encode(q)),
        None => format!("{base}?page={n}"),
    };
    html! {
        p .pager {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "← Previous" } " " }
            "Page " (page) " of " (pages) " (" (total) " in all)"
            @if page < pages { " " a rel="next" href=(link(page + 1)) { "Next →" } }
        }
    }
}

fn search_form(action: &str, q: &str, what: &str) -> Markup {
    html! {
        form .search method="get" action=(action) {
            input type="search" name="q" value=(q) placeholder={ "Search " (what) } aria-label={ "Search " (what) };
            " " button type="submit" { "Search" }
        }
    }
}

fn role_names(ids: &[i64]) -> String {
    ids.iter()
        .filter_map(|id| ProjectRole::from_id(*id))
        .map(ProjectRole::display_name)
        .collect::<Vec<_>>()
        .join(", ")
}

// --- Projects ------------------------------------------------------------------------------

/// `/c/projects`: the projects the viewer may see (public ones for anonymous viewers).
pub async fn projects(
    State(web): State<Web>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> WebResult<Response> {
    let page = q.page();
    let mut query = ProjectQuery {
        name_contains: q.search().map(str::to_string),
        public: None,
        visible_to: None,
    };
    match &viewer.user {
        None => query.public = Some(true),
        Some(_) if viewer.access.is_sysadmin() => {}
        Some(u) => query.visible_to = Some(u.id),
    }
    let found = web.meta().list_projects(&query, page, PAGE_SIZE).await?;
    let mut rows = Vec::with_capacity(found.items.len());
    for p in found.items {
        let repos = web
            .meta()
            .project_repositories(&p.name, None, 1, 1)
            .await?
            .total;
        let roles = role_names(&viewer.access.role_ids(&p.name));
        rows.push((p, repos, roles));
    }
    let body = html! {
        h1 { "Projects" }
        (search_form("/c/projects", &q.q, "projects"))
        @if rows.is_empty() {
            p #no-projects { "No projects" @if q.search().is_some() { " match" } "." }
        } @else {
            table #projects {
                tr { th { "Name" } th { "Access" } th { "Your role" } th { "Repositories" } th { "Created" } }
                @for (p, repos, roles) in &rows {
                    tr .project {
                        td { a .project-name href={ "/c/projects/" (p.name) } { (p.name) } }
                        td { (if p.public { "public" } else { "private" }) }
                        td { (roles) }
                        td .repo-count { (repos) }
                        td { (when(p.created_at)) }
                    }
                }
            }
        }
        (pager("/c/projects", q.search(), page, PAGE_SIZE, found.total))
    };
    Ok(layout("Projects", who(&viewer), body).into_response())
}

/// `/c/projects/{project}`: its repositories, and for its members the members, robot
/// accounts and settings.
pub async fn project(
    State(web): State<Web>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> WebResult<Response> {
    let p = visible_project(&web, &viewer, &name).await?;
    let page = q.page();
    let repos = if may(&p, &viewer, Resource::Repository, Action::List) {
        Some(
            web.meta()
                .project_repositories(&p.name, q.search(), page, PAGE_SIZE)
                .await?,
        )
    } else {
        None
    };
    let members = if viewer
        .access
        .may_in_project(&p.name, Resource::Member, Action::List)
    {
        Some(web.meta().list_members(p.id, None).await?)
    } else {
        None
    };
    let robots = if viewer
        .access
        .may_in_project(&p.name, Resource::Robot, Action::List)
    {
        Some(web.meta().list_robots(Some(p.id), 1, ROBOTS_SHOWN).await?)
    } else {
        None
    };
    let may_update = viewer
        .access
        .may_in_project(&p.name, Resource::Project, Action::Update);
    let may_manage_robots = viewer.signed_in()
        && viewer
            .access
            .may_in_project(&p.name, Resource::Robot, Action::Create);
    let base = format!("/c/projects/{}", p.name);
    let body = html! {
        p .crumbs { a href="/c/projects" { "Projects" } " / " }
        h1 #project-name { (p.name) }
        p { "Access: " strong #access { (if p.public { "public" } else { "private" }) }
            @let roles = role_names(&viewer.access.role_ids(&p.name));
            @if !roles.is_empty() { " · your role: " (roles) } }
        h2 { "Repositories" }
        @if let Some(repos) = &repos {
            (search_form(&base, &q.q, "repositories"))
            @if repos.items.is_empty() {
                p #no-repositories { "No repositories" @if q.search().is_some() { " match" } "." }
            } @else {
                table #repositories {
                    tr { th { "Name" } th { "Artifacts" } th { "Created" } }
                    @for r in &repos.items {
                        tr .repository {
                            td { a .repository-name href={ "/c/repositories/" (r.name) } { (r.name) } }
                            td { (r.artifacts) }
                            td { (when(r.created_at)) }
                        }
                    }
                }
            }
            (pager(&base, q.search(), page, PAGE_SIZE, repos.total))
        } @else {
            p { "You may not list this project's repositories." }
        }
        @if let Some(members) = &members {
            h2 { "Members" }
            @if members.is_empty() {
                p #no-members { "No members." }
            } @else {
                table #members {
                    tr { th { "Name" } th { "Kind" } th { "Role" } }
                    @for m in members.iter().take(MAX_MEMBERS_SHOWN) {
                        tr .member {
                            td .member-name { (m.entity_name) }
                            td { (match m.entity { MemberEntity::User(_) => "user", MemberEntity::Group(_) => "group" }) }
                            td { (role_names(&[m.role])) }
                        }
                    }
                }
                @if members.len() > MAX_MEMBERS_SHOWN {
                    p { "… and " (members.len() - MAX_MEMBERS_SHOWN) " more (see the API)." }
                }
            }
        }
        @if let Some(robots) = &robots {
            h2 { "Robot accounts" }
            @if may_manage_robots {
                p { a #new-robot href={ (base) "/robots/new" } { "New robot account" } }
            }
            @if robots.items.is_empty() {
                p #no-robots { "No robot accounts." }
            } @else {
                table #robots {
                    tr { th { "Name" } th { "Description" } th { "Expires" } th { "State" } th {} }
                    @for r in &robots.items {
                        tr .robot {
                            td .robot-name { (crate::admin::robot_full_name(&web.state.robot_prefix, &r.name)) }
                            td { (r.description) }
                            td { (if r.expires_at < 0 { "never".to_string() } else { when(r.expires_at) }) }
                            td .robot-state { (if r.disabled { "disabled" } else { "enabled" }) }
                            td { @if may_manage_robots { (super::robots::actions(r.id, r.disabled, &viewer.csrf)) } }
                        }
                    }
                }
                @if robots.total > ROBOTS_SHOWN {
                    p { "… and " (robots.total - ROBOTS_SHOWN) " more (see the API)." }
                }
            }
        }
        @if members.is_some() || may_update {
            h2 { "Settings" }
            @if may_update {
                form #settings method="post" action={ (base) "/settings" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    p { label { input #public type="checkbox" name="public" value="true" checked[p.public];
                        " Public: anyone, signed in or not, may pull from it" } }
                    p { button type="submit" { "Save" } }
                }
            } @else {
                p { "Public: " (if p.public { "yes" } else { "no" }) }
            }
        }
    };
    Ok(layout(&p.name, who(&viewer), body).into_response())
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public: Option<String>,
}

/// `POST /c/projects/{project}/settings`: public or private, as `PUT /api/v2.0/projects`.
pub async fn project_settings(
    State(web): State<Web>,
    viewer: Viewer,
    Path(name): Path<String>,
    Form(f): Form<SettingsForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let p = visible_project(&web, &viewer, &name).await?;
    if !viewer
        .access
        .may_in_project(&p.name, Resource::Project, Action::Update)
    {
        return Err(WebError::Forbidden(format!(
            "only a project admin of {} or a system admin may change it",
            p.name
        )));
    }
    let public = f.public.as_deref() == Some("true");
    web.meta().set_project_public(p.id, public).await?;
    Ok(Redirect::to(&format!("/c/projects/{}", p.name)).into_response())
}

// --- Repositories and artifacts ---------------------------------------------------------------

/// What a `/c/repositories/...` path names.
enum RepoPath<'a> {
    Repository(&'a str),
    Artifact(&'a str, &'a str),
    Action(&'a str, &'a str),
}

fn repo_path(path: &str) -> RepoPath<'_> {
    match path.split_once("/-/") {
        None => RepoPath::Repository(path.trim_end_matches('/')),
        Some((repo, rest)) => match rest.strip_prefix("artifacts/") {
            Some(digest) => RepoPath::Artifact(repo, digest),
            None => RepoPath::Action(repo, rest),
        },
    }
}

/// The repository and its project, if the viewer may list its artifacts; else "not found".
async fn visible_repository(
    web: &Web,
    viewer: &Viewer,
    name: &str,
) -> WebResult<(Project, RepoName)> {
    let not_found = || WebError::NotFound(format!("repository {name} not found"));
    let repo = RepoName::parse(name).map_err(|_| not_found())?;
    let project = name.split('/').next().unwrap_or(name);
    let p = visible_project(web, viewer, project)
        .await
        .map_err(|e| match e {
            WebError::NotFound(_) => not_found(),
            e => e,
        })?;
    if !may(&p, viewer, Resource::Artifact, Action::List) {
        return Err(not_found());
    }
    Ok((p, repo))
}

/// `GET /c/repositories/{repository}[/-/artifacts/{digest}]`.
pub async fn repository_get(
    State(web): State<Web>,
    viewer: Viewer,
    Path(path): Path<String>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> WebResult<Response> {
    match repo_path(&path) {
        RepoPath::Repository(name) => repository(&web, &viewer, name, &q, &headers).await,
        RepoPath::Artifact(name, digest) => {
            artifact(&web, &viewer, name, digest, &q, &headers).await
        }
        RepoPath::Action(..) => Err(WebError::NotFound(format!("no page at {path}"))),
    }
}

fn pull_command(host: &str, repo: &RepoName, is_chart: bool, reference: &Reference) -> String {
    match (is_chart, reference) {
        (true, Reference::Tag(t)) => format!("helm pull oci://{host}/{repo} --version {t}"),
        (true, Reference::Digest(d)) => format!("helm pull oci://{host}/{repo}@{d}"),
        (false, Reference::Tag(t)) => format!("docker pull {host}/{repo}:{t}"),
        (false, Reference::Digest(d)) => format!("docker pull {host}/{repo}@{d}"),
    }
}

async fn repository(
    web: &Web,
    viewer: &Viewer,
    name: &str,
    q: &ListQuery,
    headers: &HeaderMap,
) -> WebResult<Response> {
    let (p, repo) = visible_repository(web, viewer, name).await?;
    let page = q.page();
    let found = web
        .meta()
        .artifacts(&repo, page, ARTIFACT_PAGE_SIZE, TAGS_SHOWN as u64)
        .await?;
    if found.total == 0 && !web.meta().repository_exists(&repo).await? {
        return Err(WebError::NotFound(format!("repository {name} not found")));
    }
    let host = registry_host(web, headers);
    let may_delete_tag = viewer
        .access
        .may_in_project(&p.name, Resource::Tag, Action::Delete);
    let may_delete_artifact =
        viewer
            .access
            .may_in_project(&p.name, Resource::Artifact, Action::Delete);
    let base = format!("/c/repositories/{repo}");
    let body = html! {
        p .crumbs { a href="/c/projects" { "Projects" } " / " a href={ "/c/projects/" (p.name) } { (p.name) } " / " }
        h1 #repository-name { (repo) }
        @if found.items.is_empty() {
            p #no-artifacts { "No artifacts." }
        } @else {
            table #artifacts {
                tr { th { "Artifact" } th { "Tags and pull commands" } th { "Type" } th { "Size" } th { "Pushed" } }
                @for (i, a) in found.items.iter().enumerate() {
                    @let digest = a.digest.to_string();
                    @let is_chart = a.artifact_type.as_deref() == Some(chart::CONFIG_MEDIA_TYPE);
                    tr .artifact data-digest=(digest) {
                        td {
                            a .digest href={ (base) "/-/artifacts/" (digest) } title=(digest) { code { (short_digest(&digest)) } }
                            @if may_delete_artifact {
                                form .delete-artifact method="post" action={ (base) "/-/delete-artifact" }
                                    onsubmit="return confirm('Delete this artifact and all its tags?')" {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="digest" value=(digest);
                                    button type="submit" { "Delete artifact" }
                                }
                            }
                        }
                        td {
                            @if a.tags.is_empty() {
                                @let id = format!("pull-{i}");
                                div .pull {
                                    "(untagged) "
                                    code .pull-command id=(id) { (pull_command(&host, &repo, is_chart, &Reference::Digest(a.digest.clone()))) }
                                    " " (copy_button(&id))
                                }
                            }
                            @for (j, (tag, moved)) in a.tags.iter().enumerate() {
                                @let id = format!("pull-{i}-{j}");
                                div .tag data-tag=(tag) {
                                    strong .tag-name title={ "moved " (when(*moved)) } { (tag) } " "
                                    code .pull-command id=(id) { (pull_command(&host, &repo, is_chart, &Reference::Tag(tag.clone()))) }
                                    " " (copy_button(&id))
                                    @if may_delete_tag {
                                        " "
                                        form .delete-tag .inline method="post" action={ (base) "/-/delete-tag" }
                                            onsubmit="return confirm('Delete this tag?')" {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            input type="hidden" name="tag" value=(tag);
                                            button type="submit" { "Delete tag" }
                                        }
                                    }
                                }
                            }
                            @if a.tag_count > a.tags.len() as u64 {
                                p .more-tags { "… and " (a.tag_count - a.tags.len() as u64) " more tags ("
                                    a href={ (base) "/-/artifacts/" (digest) "#tags" } { "all of them" } ")" }
                            }
                            @if a.referrers > 0 {
                                p .referrer-count { a href={ (base) "/-/artifacts/" (digest) "#referrers" } {
                                    (a.referrers) @if a.referrers == 1 { " referrer" } @else { " referrers" } }
                                    " (signatures, SBOMs, attestations)" }
                            }
                        }
                        td {
                            (a.artifact_type.as_deref().unwrap_or("")) br;
                            small { (a.media_type) }
                        }
                        td title={ (a.size) " bytes" } { (human_size(a.size)) }
                        td { (when(a.pushed_at)) }
                    }
                }
            }
        }
        (pager(&base, None, page, ARTIFACT_PAGE_SIZE, found.total))
    };
    Ok(layout(repo.as_str(), who(viewer), body).into_response())
}

/// A descriptor out of a manifest's JSON.
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    /// `org.opencontainers.image.title`, or a platform for an index's child.
    note: String,
}

fn descriptor(v: &Value) -> Descriptor {
    let text = |key: &str| v[key].as_str().unwrap_or("").to_string();
    let platform = &v["platform"];
    let note = match v["annotations"]["org.opencontainers.image.title"].as_str() {
        Some(t) => t.to_string(),
        None if platform.is_object() => {
            let part = |k: &str| platform[k].as_str().unwrap_or("").to_string();
            [part("os"), part("architecture"), part("variant")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        }
        None => String::new(),
    };
    Descriptor {
        media_type: text("mediaType"),
        digest: text("digest"),
        size: v["size"].as_u64().unwrap_or(0),
        note,
    }
}

/// What kind of accessory a referrer is, by its artifact type.
fn referrer_kind(artifact_type: &str) -> &'static str {
    let t = artifact_type.to_ascii_lowercase();
    if t.contains("signature") || t.contains(".sig") {
        "signature"
    } else if t.contains("spdx") || t.contains("cyclonedx") || t.contains("sbom") {
        "SBOM"
    } else if t.contains("attestation") || t.contains("in-toto") || t.contains("provenance") {
        "attestation"
    } else if t.contains("vuln") || t.contains("sarif") {
        "vulnerability report"
    } else {
        "other"
    }
}

/// A blob of `repo`, whole, when it is at most `cap` bytes; `None` when it is larger or
/// not in the repository.
async fn small_blob(
    web: &Web,
    repo: &RepoName,
    digest: &Digest,
    cap: u64,
) -> WebResult<Option<Vec<u8>>> {
    let content = &web.state.content;
    let size = match content.blob_size(repo, digest).await {
        Ok(size) if size <= cap => size,
        Ok(_) | Err(ContentError::BlobUnknown(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Read from the store (not a redirect: the server itself needs the bytes).
    let mut reader = content
        .blob_store()
        .read(digest, None)
        .await
        .map_err(|e| WebError::Internal(e.to_string()))?;
    let mut bytes = Vec::with_capacity(size as usize);
    while let Some(chunk) = reader.body.next().await {
        let chunk = chunk.map_err(|e| WebError::Internal(e.to_string()))?;
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Err(WebError::Internal(format!(
                "blob {digest} is longer than its recorded {size} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// A Helm chart's Chart.yaml and README, or why they are not shown.
async fn chart_files(
    web: &Web,
    repo: &RepoName,
    layers: &[Descriptor],
) -> Result<chart::ChartFiles, String> {
    let layer = layers
        .iter()
        .find(|l| l.media_type == chart::CHART_MEDIA_TYPE)
        .ok_or("the chart has no chart layer")?;
    let digest: Digest = layer
        .digest
        .parse()
        .map_err(|_| "the chart layer's digest is malformed")?;
    let bytes = small_blob(web, repo, &digest, MAX_CHART_LAYER)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "the chart layer is missing or larger than {}",
                human_size(MAX_CHART_LAYER)
            )
        })?;
    tokio::task::spawn_blocking(move || chart::read_chart(&bytes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the chart layer could not be read: {e}"))
}

async fn artifact(
    web: &Web,
    viewer: &Viewer,
    name: &str,
    digest: &str,
    q: &ListQuery,
    headers: &HeaderMap,
) -> WebResult<Response> {
    let (p, repo) = visible_repository(web, viewer, name).await?;
    let not_found = || WebError::NotFound(format!("artifact {digest} not found in {name}"));
    let digest: Digest = digest.parse().map_err(|_| not_found())?;
    let record = match web
        .state
        .content
        .manifest(&repo, &Reference::Digest(digest.clone()))
        .await
    {
        Ok(r) => r,
        Err(ContentError::ManifestUnknown(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let json: Value = serde_json::from_slice(&record.content).unwrap_or(Value::Null);
    let pretty = serde_json::to_string_pretty(&json)
        .unwrap_or_else(|_| String::from_utf8_lossy(&record.content).into_owned());
    let layers: Vec<Descriptor> = json["layers"]
        .as_array()
        .map(|l| l.iter().map(descriptor).collect())
        .unwrap_or_default();
    let children: Vec<Descriptor> = json["manifests"]
        .as_array()
        .map(|l| l.iter().map(descriptor).collect())
        .unwrap_or_default();
    let config = json["config"]
        .is_object()
        .then(|| descriptor(&json["config"]));
    let config_text = match &config {
        Some(c) if c.media_type.ends_with("json") => match c.digest.parse::<Digest>() {
            Ok(d) => small_blob(web, &repo, &d, MAX_CONFIG_SHOWN)
                .await?
                .map(|b| match serde_json::from_slice::<Value>(&b) {
                    Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    Err(_) => String::from_utf8_lossy(&b).into_owned(),
                }),
            Err(_) => None,
        },
        _ => None,
    };
    let is_chart = config
        .as_ref()
        .is_some_and(|c| c.media_type == chart::CONFIG_MEDIA_TYPE);
    let chart_view = if is_chart {
        Some(chart_files(web, &repo, &layers).await)
    } else {
        None
    };
    let annotations: Vec<(String, String)> = json["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut referrers = web.state.content.referrers(&repo, &digest, None).await?;
    referrers.sort_by(|a, b| a.artifact_type.cmp(&b.artifact_type));
    let page = q.page();
    let tags = web
        .meta()
        .manifest_tags(&repo, &digest, page, TAG_PAGE_SIZE)
        .await?;
    let may_delete_tag = viewer
        .access
        .may_in_project(&p.name, Resource::Tag, Action::Delete);
    let host = registry_host(web, headers);
    let base = format!("/c/repositories/{repo}");
    let pull = pull_command(&host, &repo, is_chart, &Reference::Digest(digest.clone()));
    let artifact_link = |d: &str| format!("{base}/-/artifacts/{d}");
    let this_page = artifact_link(&digest.to_string());
    let body = html! {
        p .crumbs { a href="/c/projects" { "Projects" } " / " a href={ "/c/projects/" (p.name) } { (p.name) } " / "
            a href=(base) { (repo) } " / " }
        h1 { "Artifact " code #digest title=(digest) { (short_digest(&digest.to_string())) } }
        table #summary {
            tr { th { "Digest" } td { code { (digest) } } }
            tr { th { "Media type" } td { (record.media_type) } }
            @if let Some(t) = json["artifactType"].as_str() { tr { th { "Artifact type" } td #artifact-type { (t) } } }
            tr { th { "Pull" } td { code .pull-command #pull { (pull) } " " (copy_button("pull")) } }
        }
        h2 #tags { "Tags" }
        @if tags.total == 0 {
            p #no-tags { "Not tagged: pull it by its digest." }
        } @else {
            table #tag-list {
                tr { th { "Tag" } th { "Pull command" } th { "Moved here" } }
                @for (j, (tag, moved)) in tags.items.iter().enumerate() {
                    @let id = format!("pull-tag-{j}");
                    tr .tag data-tag=(tag) {
                        td { strong .tag-name { (tag) } }
                        td { code .pull-command id=(id) { (pull_command(&host, &repo, is_chart, &Reference::Tag(tag.clone()))) } " " (copy_button(&id)) }
                        td { (when(*moved)) }
                        @if may_delete_tag {
                            td { form .delete-tag .inline method="post" action={ (base) "/-/delete-tag" }
                                onsubmit="return confirm('Delete this tag?')" {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                input type="hidden" name="tag" value=(tag);
                                button type="submit" { "Delete tag" }
                            } }
                        }
                    }
                }
            }
            (pager(&this_page, None, page, TAG_PAGE_SIZE, tags.total))
        }
        @if let Some(chart_view) = &chart_view {
            h2 { "Helm chart" }
            @match chart_view {
                Ok(files) => {
                    @if let Some(yaml) = &files.chart_yaml {
                        table #chart-fields {
                            @for (k, v) in chart::chart_fields(yaml) {
                                tr { th { (k) } td .chart-field data-key=(k) { (v) } }
                            }
                        }
                        details { summary { "Chart.yaml" } pre #chart-yaml { (yaml) } }
                    } @else {
                        p { "The chart has no Chart.yaml." }
                    }
                    @if files.truncated { p .notice { "A file was too large and is shown cut." } }
                    @if let Some(readme) = &files.readme {
                        h3 { "README" }
                        // Sanitised by markdown::render (ammonia): the only HTML not escaped by maud.
                        div #readme .readme { (PreEscaped(markdown::render(readme))) }
                    }
                }
                Err(why) => { p #chart-error .error { (why) } }
            }
        }
        @if !annotations.is_empty() {
            h2 { "Annotations" }
            table #annotations {
                @for (k, v) in &annotations { tr { th { (k) } td { (v) } } }
            }
        }
        @if let Some(c) = &config {
            h2 { "Config" }
            table #config {
                tr { th { "Media type" } td { (c.media_type) } }
                tr { th { "Digest" } td { code { (c.digest) } } }
                tr { th { "Size" } td { (human_size(c.size)) } }
            }
            @if let Some(text) = &config_text { details { summary { "Content" } pre #config-content { (text) } } }
        }
        @if !layers.is_empty() {
            h2 { "Layers" }
            table #layers {
                tr { th { "#" } th { "Media type" } th { "Digest" } th { "Size" } th { "Title" } }
                @for (i, l) in layers.iter().enumerate() {
                    tr .layer {
                        td { (i + 1) }
                        td { (l.media_type) }
                        td { code title=(l.digest) { (short_digest(&l.digest)) } }
                        td title={ (l.size) " bytes" } { (human_size(l.size)) }
                        td { (l.note) }
                    }
                }
            }
        }
        @if !children.is_empty() {
            h2 { "Manifests" }
            table #manifests {
                tr { th { "Platform" } th { "Digest" } th { "Media type" } th { "Size" } }
                @for c in &children {
                    tr .child {
                        td { (c.note) }
                        td { a href=(artifact_link(&c.digest)) title=(c.digest) { code { (short_digest(&c.digest)) } } }
                        td { (c.media_type) }
                        td { (human_size(c.size)) }
                    }
                }
            }
        }
        h2 #referrers-heading { "Referrers" }
        @if referrers.is_empty() {
            p #no-referrers { "No signatures, SBOMs or other artifacts refer to this one." }
        } @else {
            table #referrers {
                tr { th { "Kind" } th { "Artifact type" } th { "Digest" } th { "Size" } }
                @for r in &referrers {
                    @let t = r.artifact_type.as_deref().unwrap_or("");
                    @let d = r.digest.to_string();
                    tr .referrer {
                        td { (referrer_kind(t)) }
                        td { (t) }
                        td { a href=(artifact_link(&d)) title=(d) { code { (short_digest(&d)) } } }
                        td { (human_size(r.size.max(0) as u64)) }
                    }
                }
            }
        }
        h2 { "Manifest" }
        pre #manifest { (pretty) }
    };
    Ok(layout(&format!("{repo}@{digest}"), who(viewer), body).into_response())
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    digest: String,
}

/// `POST /c/repositories/{repository}/-/delete-tag` and `.../-/delete-artifact`: the same
/// permission checks and content-layer deletes as `/api/v2.0`'s.
pub async fn repository_post(
    State(web): State<Web>,
    viewer: Viewer,
    Path(path): Path<String>,
    Form(f): Form<DeleteForm>,
) -> WebResult<Response> {
    viewer.check_csrf(&f.csrf)?;
    let RepoPath::Action(name, action) = repo_path(&path) else {
        return Err(WebError::NotFound(format!("no action at {path}")));
    };
    let (p, repo) = visible_repository(&web, &viewer, name).await?;
    let (resource, reference) = match action {
        "delete-tag" => match Reference::parse(&f.tag) {
            Ok(t @ Reference::Tag(_)) => (Resource::Tag, t),
            _ => return Err(WebError::BadRequest(format!("{:?} is not a tag", f.tag))),
        },
        "delete-artifact" => match f.digest.parse::<Digest>() {
            Ok(d) => (Resource::Artifact, Reference::Digest(d)),
            Err(e) => return Err(WebError::BadRequest(e.to_string())),
        },
        _ => return Err(WebError::NotFound(format!("no action at {path}"))),
    };
    if !viewer
        .access
        .may_in_project(&p.name, resource, Action::Delete)
    {
        return Err(WebError::Forbidden(format!(
            "you may not delete {}s in project {}",
            if resource == Resource::Tag {
                "tag"
            } else {
                "artifact"
            },
            p.name
        )));
    }
    web.state.content.delete_manifest(&repo, &reference).await?;
    Ok(Redirect::to(&format!("/c/repositories/{repo}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths_split_at_the_separator() {
        assert!(matches!(
            repo_path("team/a/b"),
            RepoPath::Repository("team/a/b")
        ));
        assert!(matches!(
            repo_path("team/a/-/artifacts/sha256:00"),
            RepoPath::Artifact("team/a", "sha256:00")
        ));
        assert!(matches!(
            repo_path("team/a/-/delete-tag"),
            RepoPath::Action("team/a", "delete-tag")
        ));
        // `-` alone is not a repository path component.
        assert!(RepoName::parse("team/-/x").is_err());
    }

    #[test]
    fn sizes_and_digests_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn pull_commands_by_kind() {
        let repo = RepoName::parse("team/app").expect("name");
        let tag = Reference::Tag("v1".into());
        assert_eq!(
            pull_command("h:5000", &repo, false, &tag),
            "docker pull h:5000/team/app:v1"
        );
        assert_eq!(
            pull_command("h:5000", &repo, true, &tag),
            "helm pull oci://h:5000/team/app --version v1"
        );
    }
}
