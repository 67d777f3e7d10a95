//! What the admin CLI does (`berth user ...`, `berth project ...`, `berth robot ...`): it
//! talks to the metadata database directly, so it works while no server runs — the way
//! back in when nobody can log in. Every function returns what to print; errors say what
//! is wrong in words a person can act on.

use anyhow::{Context, bail};

use crate::auth::builtin::{Resolved, flatten};
use crate::auth::roles::{self, ProjectRole, RobotAccess, RobotPermission};
use crate::auth::secrets;
use crate::metadata::identity::{
    self, MemberEntity, NewProject, NewRobot, NewUser, ProjectQuery, RobotLevel, User,
};
use crate::metadata::{MetaError, MetadataStore, now_millis};

/// Longest robot name (without its prefix).
const MAX_ROBOT_NAME: usize = 255;

async fn user(meta: &dyn MetadataStore, name: &str) -> anyhow::Result<User> {
    meta.get_user(name)
        .await?
        .with_context(|| format!("there is no user {name:?}"))
}

async fn hash(password: String) -> anyhow::Result<String> {
    Ok(tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await??)
}

/// The password to set: the one given, or a generated one (returned so it can be shown).
fn password_or_generated(password: Option<String>) -> anyhow::Result<(String, bool)> {
    match password {
        Some(p) if p.len() < 8 => bail!("a password needs at least 8 characters"),
        Some(p) => Ok((p, false)),
        None => Ok((secrets::generate_secret()?, true)),
    }
}

/// Links (or with `None` unlinks) a user to an OpenID Connect identity (issuer, subject).
pub async fn user_link(
    meta: &dyn MetadataStore,
    name: &str,
    identity: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    if let Some((issuer, subject)) = identity {
        if issuer.is_empty() || subject.is_empty() {
            bail!("an identity needs an issuer (--issuer, or auth.oidc.issuer) and a subject");
        }
    }
    let u = user(meta, name).await?;
    meta.set_user_oidc(u.id, identity).await?;
    Ok(())
}

/// A username's rules: 1-255 characters, no ':', '/' or whitespace, not starting with the
/// robot prefix (those names are robots').
pub fn check_username(name: &str, robot_prefix: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name.contains([':', '/'])
        || name.contains(char::is_whitespace)
        || (!robot_prefix.is_empty() && name.starts_with(robot_prefix))
    {
        return Err(format!(
            "username {name:?} is invalid: 1-255 characters, no ':', '/' or spaces, and not \
             starting with the robot prefix {robot_prefix:?}"
        ));
    }
    Ok(())
}

/// Creates a local user; returns the password when it was generated.
pub async fn user_create(
    meta: &dyn MetadataStore,
    robot_prefix: &str,
    name: &str,
    password: Option<String>,
    email: Option<String>,
    sysadmin: bool,
) -> anyhow::Result<Option<String>> {
    if let Err(why) = check_username(name, robot_prefix) {
        bail!("{why}");
    }
    let (password, generated) = password_or_generated(password)?;
    meta.create_user(&NewUser {
        username: name.into(),
        email,
        password_hash: Some(hash(password.clone()).await?),
        sysadmin,
        ..Default::default()
    })
    .await?;
    Ok(generated.then_some(password))
}

/// Sets a user's password; returns it when it was generated.
pub async fn user_password(
    meta: &dyn MetadataStore,
    name: &str,
    password: Option<String>,
) -> anyhow::Result<Option<String>> {
    let u = user(meta, name).await?;
    let (password, generated) = password_or_generated(password)?;
    meta.set_password_hash(u.id, Some(&hash(password.clone()).await?))
        .await?;
    Ok(generated.then_some(password))
}

pub async fn user_set_admin(
    meta: &dyn MetadataStore,
    name: &str,
    sysadmin: bool,
) -> anyhow::Result<()> {
    let u = user(meta, name).await?;
    meta.set_sysadmin(u.id, sysadmin).await?;
    Ok(())
}

pub async fn user_list(meta: &dyn MetadataStore) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let p = meta.list_users(None, page, 500).await?;
        let n = p.items.len();
        out.extend(p.items.into_iter().map(|u| {
            format!(
                "{}{}",
                u.username,
                if u.sysadmin { " (system admin)" } else { "" }
            )
        }));
        if n < 500 {
            return Ok(out);
        }
        page += 1;
    }
}

pub async fn user_delete(meta: &dyn MetadataStore, name: &str) -> anyhow::Result<()> {
    let u = user(meta, name).await?;
    meta.delete_user(u.id).await?;
    Ok(())
}

fn check_project_name(name: &str) -> anyhow::Result<()> {
    if !roles::is_valid_project_name(name) {
        bail!(
            "project name {name:?} is invalid: lowercase letters and digits, separated by '.', \
             '_', '__' or dashes (one component of a repository name)"
        );
    }
    Ok(())
}

pub async fn project_create(
    meta: &dyn MetadataStore,
    name: &str,
    public: bool,
) -> anyhow::Result<()> {
    check_project_name(name)?;
    meta.create_project(&NewProject {
        name: name.into(),
        public,
        ..Default::default()
    })
    .await?;
    Ok(())
}

pub async fn project_list(meta: &dyn MetadataStore) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let p = meta
            .list_projects(&ProjectQuery::default(), page, 500)
            .await?;
        let n = p.items.len();
        out.extend(p.items.into_iter().map(|p| {
            format!(
                "{} ({})",
                p.name,
                if p.public { "public" } else { "private" }
            )
        }));
        if n < 500 {
            return Ok(out);
        }
        page += 1;
    }
}

/// Deletes a project; with `with_repositories` also its repositories (their metadata:
/// blob bytes wait for garbage collection). Returns the repositories deleted.
pub async fn project_delete(
    meta: &dyn MetadataStore,
    name: &str,
    with_repositories: bool,
) -> anyhow::Result<Vec<String>> {
    let p = meta
        .get_project(name)
        .await?
        .with_context(|| format!("there is no project {name:?}"))?;
    match meta.delete_project(p.id, with_repositories).await {
        Ok(Some(deleted)) => Ok(deleted),
        Ok(None) => bail!("there is no project {name:?}"),
        Err(MetaError::ProjectNotEmpty { repositories, .. }) => bail!(
            "project {name} still holds {repositories} repositories; delete them first, or \
             pass --with-repositories to delete them with it"
        ),
        Err(e) => Err(e.into()),
    }
}

pub async fn project_public(
    meta: &dyn MetadataStore,
    name: &str,
    public: bool,
) -> anyhow::Result<()> {
    let p = meta
        .get_project(name)
        .await?
        .with_context(|| format!("there is no project {name:?}"))?;
    meta.set_project_public(p.id, public).await?;
    Ok(())
}

/// Makes a user a member of a project with `role` (Harbor's names: projectAdmin,
/// maintainer, developer, guest, limitedGuest).
pub async fn member_add(
    meta: &dyn MetadataStore,
    project: &str,
    username: &str,
    role: &str,
) -> anyhow::Result<()> {
    let role: ProjectRole = role.parse()?;
    let p = meta
        .get_project(project)
        .await?
        .with_context(|| format!("there is no project {project:?}"))?;
    let u = user(meta, username).await?;
    meta.add_member(p.id, MemberEntity::User(u.id), role.id())
        .await?;
    Ok(())
}

/// A robot account's full name as clients log in with it.
pub fn robot_full_name(prefix: &str, stored: &str) -> String {
    format!("{prefix}{stored}")
}

/// Puts a new signing key in force for the built-in token service; the old one is retired
/// but keeps verifying the tokens it signed. Returns the new key's id.
pub async fn rotate_signing_key(meta: &dyn MetadataStore) -> anyhow::Result<String> {
    let key = crate::auth::jwt::SigningKey::generate()?;
    meta.rotate_signing_key(&identity::SigningKey {
        kid: key.kid.clone(),
        algorithm: "ES256".into(),
        private_key: key.to_pem(),
        created_at: now_millis(),
        retired_at: None,
    })
    .await?;
    Ok(key.kid)
}

/// Why an account request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request itself is wrong (a name, a permission); nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] MetaError),
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
}

/// A robot account to create, in Harbor's terms.
pub struct RobotSpec {
    /// Its own name: lowercase letters, digits, `.`, `_`, `-`.
    pub name: String,
    pub description: String,
    pub level: RobotLevel,
    /// A project robot has exactly one `project` permission, on its project; a system
    /// robot any `project` permissions (a project or `*` each) and `system` ones.
    pub permissions: Vec<RobotPermission>,
    /// Days until it expires; -1: never.
    pub duration_days: i64,
    pub disabled: bool,
}

/// May `who` manage (create, change, refresh, delete) a robot with `perms` at `level`?
/// A system admin may; a project admin may manage its project's robots; a robot may only
/// within its own permissions, and never wider than itself.
pub fn may_manage_robot(who: &Resolved, level: RobotLevel, perms: &[RobotPermission]) -> bool {
    if who.is_sysadmin() {
        return true;
    }
    if let Some(mine) = who.robot_permissions() {
        return roles::may_create_robot(mine, perms);
    }
    level == RobotLevel::Project
        && perms.iter().all(|p| {
            who.may_in_project(&p.namespace, roles::Resource::Robot, roles::Action::Create)
        })
}

/// May `who` see a robot with `perms` at `level`: manage it, or, for a project robot, read
/// its project's robots (Harbor gives that to guests and up)?
pub fn may_see_robot(who: &Resolved, level: RobotLevel, perms: &[RobotPermission]) -> bool {
    may_manage_robot(who, level, perms)
        || (level == RobotLevel::Project
            && !perms.is_empty()
            && perms.iter().all(|p| {
                who.may_in_project(&p.namespace, roles::Resource::Robot, roles::Action::Read)
            }))
}

/// Creates a robot account: `<project>+<name>` for a project robot, `<name>` for a system
/// one. Returns it, its full name (with `prefix`) and its secret (shown only now).
pub async fn create_robot(
    meta: &dyn MetadataStore,
    prefix: &str,
    spec: RobotSpec,
) -> Result<(identity::Robot, String, String), AccountError> {
    let name = &spec.name;
    let name_ok = !name.is_empty()
        && name.len() <= MAX_ROBOT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !name_ok {
        return Err(AccountError::Invalid(format!(
            "robot name {name:?} is invalid: lowercase letters, digits, '.', '_' and '-', at \
             most {MAX_ROBOT_NAME} characters"
        )));
    }
    roles::validate_permissions(&spec.permissions)
        .map_err(|e| AccountError::Invalid(e.to_string()))?;
    if spec.duration_days < -1 {
        return Err(AccountError::Invalid(format!(
            "duration {} is invalid: a number of days, or -1 for never",
            spec.duration_days
        )));
    }
    let (stored, project_id) = match spec.level {
        RobotLevel::Project => {
            let [perm] = spec.permissions.as_slice() else {
                return Err(AccountError::Invalid(
                    "a project robot has exactly one permission, on its project".into(),
                ));
            };
            if perm.kind != roles::KIND_PROJECT || perm.namespace == roles::ALL_PROJECTS {
                return Err(AccountError::Invalid(
                    "a project robot's permission is of kind project and names its project".into(),
                ));
            }
            let p = meta.get_project(&perm.namespace).await?.ok_or_else(|| {
                MetaError::NotFound(format!("project {} not found", perm.namespace))
            })?;
            (format!("{}+{name}", perm.namespace), Some(p.id))
        }
        RobotLevel::System => {
            if spec.permissions.is_empty() {
                return Err(AccountError::Invalid(
                    "a system robot needs at least one permission".into(),
                ));
            }
            for p in &spec.permissions {
                if p.kind == roles::KIND_PROJECT
                    && p.namespace != roles::ALL_PROJECTS
                    && meta.get_project(&p.namespace).await?.is_none()
                {
                    return Err(
                        MetaError::NotFound(format!("project {} not found", p.namespace)).into(),
                    );
                }
            }
            (name.clone(), None)
        }
    };
    let secret = secrets::generate_secret()?;
    let expires_at = if spec.duration_days < 0 {
        -1
    } else {
        now_millis() + spec.duration_days * 86_400_000
    };
    let robot = meta
        .create_robot(&NewRobot {
            name: stored.clone(),
            description: spec.description,
            level: spec.level,
            project_id,
            secret_hash: secrets::secret_digest(&secret),
            duration_days: spec.duration_days,
            expires_at,
            disabled: spec.disabled,
            permissions: flatten(&spec.permissions),
        })
        .await?;
    Ok((robot, robot_full_name(prefix, &stored), secret))
}

/// The CLI's robot creation: a project robot (`project` set: its `access` entries apply to
/// that project) or a system robot (`namespaces`: the projects, or `*`, its `access`
/// entries apply to). `access` entries are `resource:action`.
#[allow(clippy::too_many_arguments)]
pub async fn robot_create(
    meta: &dyn MetadataStore,
    prefix: &str,
    name: &str,
    project: Option<&str>,
    namespaces: &[String],
    access: &[String],
    days: i64,
    description: &str,
) -> anyhow::Result<(String, String)> {
    let entries = access
        .iter()
        .map(|a| {
            let (resource, action) = a.split_once(':').with_context(|| {
                format!(
                    "access {a:?} is not of the form <resource>:<action> (e.g. repository:pull)"
                )
            })?;
            Ok(RobotAccess {
                resource: resource.into(),
                action: action.into(),
                effect: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (level, permissions) = match project {
        Some(project) => (
            RobotLevel::Project,
            vec![RobotPermission::project(project, entries)],
        ),
        None => {
            if namespaces.is_empty() {
                bail!("a system robot needs --namespace (a project, or * for every project)");
            }
            let perms = namespaces
                .iter()
                .map(|ns| RobotPermission::project(ns, entries.clone()))
                .collect();
            (RobotLevel::System, perms)
        }
    };
    let (_, full, secret) = create_robot(
        meta,
        prefix,
        RobotSpec {
            name: name.into(),
            description: description.into(),
            level,
            permissions,
            duration_days: days,
            disabled: false,
        },
    )
    .await?;
    Ok((full, secret))
}

async fn robot(
    meta: &dyn MetadataStore,
    prefix: &str,
    full: &str,
) -> anyhow::Result<identity::Robot> {
    let stored = full.strip_prefix(prefix).unwrap_or(full);
    meta.get_robot(stored)
        .await?
        .with_context(|| format!("there is no robot {}", robot_full_name(prefix, stored)))
}

/// Gives a robot a new secret; the old one stops working at once (and on servers within
/// their credential cache's lifetime). Returns the new secret.
pub async fn robot_refresh(
    meta: &dyn MetadataStore,
    prefix: &str,
    full: &str,
) -> anyhow::Result<String> {
    let r = robot(meta, prefix, full).await?;
    let secret = secrets::generate_secret()?;
    meta.set_robot_secret(r.id, &secrets::secret_digest(&secret))
        .await?;
    Ok(secret)
}

pub async fn robot_delete(
    meta: &dyn MetadataStore,
    prefix: &str,
    full: &str,
) -> anyhow::Result<()> {
    let r = robot(meta, prefix, full).await?;
    meta.delete_robot(r.id).await?;
    Ok(())
}

/// Disables or enables a robot.
pub async fn robot_disable(
    meta: &dyn MetadataStore,
    prefix: &str,
    full: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let r = robot(meta, prefix, full).await?;
    meta.update_robot(
        r.id,
        &identity::RobotUpdate {
            description: r.description,
            disabled,
            duration_days: r.duration_days,
            expires_at: r.expires_at,
            permissions: r.permissions,
        },
    )
    .await?;
    Ok(())
}

pub async fn robot_list(meta: &dyn MetadataStore, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut page = 1;
    loop {
        let p = meta.list_robots(None, page, 500).await?;
        let n = p.items.len();
        out.extend(p.items.into_iter().map(|r| {
            let perms: Vec<String> = r
                .permissions
                .iter()
                .map(|p| format!("{}:{}:{}", p.namespace, p.resource, p.action))
                .collect();
            format!(
                "{} ({}{}) {}",
                robot_full_name(prefix, &r.name),
                r.level.as_str(),
                if r.disabled { ", disabled" } else { "" },
                perms.join(" ")
            )
        }));
        if n < 500 {
            return Ok(out);
        }
        page += 1;
    }
}
