//! Harbor's permission rules, pure: project roles, resources and actions, what each role may
//! do, robot permissions and the registry's actions in those terms. No database, no HTTP:
//! everything here is a function of its arguments.
//!
//! # The role matrix
//!
//! What a member of a project may do there, by role (Harbor's role ids in brackets). A system
//! administrator may do everything in every project; anyone, signed in or not, gets
//! [`public_allows`] on a public project.
//!
//! | resource            | action | limited guest (5) | guest (3) | developer (2) | maintainer (4) | project admin (1) |
//! |---------------------|--------|:-:|:-:|:-:|:-:|:-:|
//! | `project`           | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `project`           | update |   |   |   |   | ✓ |
//! | `project`           | delete |   |   |   |   | ✓ |
//! | `configuration`     | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `configuration`     | update |   |   |   |   | ✓ |
//! | `metadata`          | read   |   |   |   | ✓ | ✓ |
//! | `metadata`          | list   |   |   |   |   | ✓ |
//! | `metadata`          | create |   |   |   |   | ✓ |
//! | `metadata`          | update |   |   |   |   | ✓ |
//! | `metadata`          | delete |   |   |   |   | ✓ |
//! | `quota`             | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `member`            | read   |   | ✓ | ✓ | ✓ | ✓ |
//! | `member`            | list   |   | ✓ | ✓ | ✓ | ✓ |
//! | `member`            | create |   |   |   |   | ✓ |
//! | `member`            | update |   |   |   |   | ✓ |
//! | `member`            | delete |   |   |   |   | ✓ |
//! | `robot`             | read   |   | ✓ | ✓ | ✓ | ✓ |
//! | `robot`             | list   |   | ✓ | ✓ | ✓ | ✓ |
//! | `robot`             | create |   |   |   |   | ✓ |
//! | `robot`             | update |   |   |   |   | ✓ |
//! | `robot`             | delete |   |   |   |   | ✓ |
//! | `log`               | list   |   |   |   |   | ✓ |
//! | `label`             | read   |   | ✓ | ✓ | ✓ | ✓ |
//! | `label`             | list   |   | ✓ | ✓ | ✓ | ✓ |
//! | `label`             | create |   |   |   | ✓ | ✓ |
//! | `label`             | update |   |   |   | ✓ | ✓ |
//! | `label`             | delete |   |   |   | ✓ | ✓ |
//! | `repository`        | pull   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `repository`        | list   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `repository`        | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `repository`        | push   |   |   | ✓ | ✓ | ✓ |
//! | `repository`        | create |   |   | ✓ | ✓ | ✓ |
//! | `repository`        | update |   |   | ✓ | ✓ | ✓ |
//! | `repository`        | delete |   |   |   | ✓ | ✓ |
//! | `artifact`          | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `artifact`          | list   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `artifact`          | create |   |   | ✓ | ✓ | ✓ |
//! | `artifact`          | delete |   |   |   | ✓ | ✓ |
//! | `artifact-addition` | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `artifact-label`    | create |   |   | ✓ | ✓ | ✓ |
//! | `artifact-label`    | delete |   |   | ✓ | ✓ | ✓ |
//! | `tag`               | list   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `tag`               | create |   |   | ✓ | ✓ | ✓ |
//! | `tag`               | delete |   |   |   | ✓ | ✓ |
//! | `accessory`         | list   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `scan`              | read   | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `scan`              | create |   |   |   | ✓ | ✓ |
//! | `scan`              | stop   |   |   |   | ✓ | ✓ |
//!
//! Every pair not in the table is refused to every role. The roles happen to be nested
//! (each holds everything the one to its left holds), so the rule is written as the lowest
//! role that may do each thing ([`lowest_role`]); a test checks this table against it.
//!
//! The source is Harbor's code as of its main branch after 2.13, where the five built-in
//! roles' grants are seeded from one list (`src/pkg/permission/policy/shipped.go`, with the
//! frozen copy `testdata/shipped_grants_on_main.golden` of the `rolePoliciesMap` that
//! `src/common/rbac/project/rbac_role.go` held before). Harbor's project itself is the
//! empty sub-resource in that list; here it is `project`, the name robot permissions use.
//!
//! ## Where Harbor's documentation and its code differ
//!
//! Harbor's "User Permissions By Role" page (goharbor/website,
//! `docs/administration/managing-users/user-permissions-by-role.md`) says otherwise in these
//! places; this module follows the code, which is what a Harbor server does:
//!
//! - *See a list of project logs*: the page gives it to guest, developer, maintainer and
//!   project admin; since Harbor 2.13 only the project admin holds `log:list` (reported as
//!   goharbor/harbor#22037, closed without a change).
//! - *See a list of project robots*: the page says maintainer and project admin; guest and
//!   developer hold `robot:read`/`robot:list` too.
//! - *See a list of project labels*: the page says maintainer and project admin; guest and
//!   developer hold `label:read`/`label:list` too.
//! - *Edit repositories*: the page says maintainer and project admin; developers hold
//!   `repository:update` as well (only `delete` is maintainer and up).
//! - *Retag image*: the page ticks guest; a guest holds neither `tag:create` nor
//!   `artifact:create`, so cannot.
//! - *Edit the project configurations*: maintainers held `metadata` create/update/delete until
//!   the fix for GHSA-hw28-333w-qxp3 (2024); they now only read it, as the page says.
//! - Limited guests read a repository (`repository:read`) since 2.9.2/2.10.1
//!   (goharbor/harbor#19709); older code lacked it.
//!
//! # Robot permissions
//!
//! A robot holds explicit [`RobotPermission`]s in Harbor's JSON shape: for each `kind`
//! (`project`, or `system` for instance-wide resources) and `namespace` (a project name,
//! `*` for every project, `/` for the system), a list of `access` entries (`resource`,
//! `action`, optional `effect` `allow`/`deny`; a `deny` wins over any `allow`). Which pairs a
//! robot may be given at all is Harbor's robot vocabulary ([`robot_grantable`]); for
//! example `repository:create` is not grantable to robots, and `robot:update` is not either
//! (a robot changing robots' permissions could widen itself).
//!
//! A robot may create a robot only if it holds `robot:create` where the new one applies,
//! and never wider than itself ([`may_create_robot`], [`is_subset`]).
//!
//! # What the registry's actions need
//!
//! Harbor checks `/v2` requests by HTTP method against the `repository` resource of the
//! project (`src/server/middleware/v2auth/access.go`, and the token service's
//! `src/core/service/token/creator.go`, whose `delete` scope is `repository:delete`), not
//! against `artifact` or `tag`. [`registry_action`] does the same:
//!
//! | registry operation                          | needs                                   |
//! |---------------------------------------------|-----------------------------------------|
//! | pull (manifest, blob, tag list, referrers)  | `repository:pull`                       |
//! | push (upload, mount target, manifest PUT)   | `repository:pull` and `repository:push` |
//! | mount source                                | `repository:pull` on the source         |
//! | delete a manifest (by digest)               | `repository:delete`                     |
//! | delete a tag (`DELETE /manifests/<tag>`)    | `repository:delete`                     |
//! | show a repository in `/v2/_catalog`         | `repository:list`                       |
//!
//! A token's `delete` scope cannot tell a manifest from a tag, so both deletes need the same
//! permission (Harbor refuses tag deletes on `/v2` altogether). Harbor's own catalog is for
//! system administrators only (system `catalog:read`); Berth lists instead the repositories
//! the caller may list. For every role `repository:list` and `repository:pull` go together.
//!
//! Harbor's REST API checks the finer resources, which this module also names:
//! deleting an artifact is `artifact:delete`, deleting a tag `tag:delete`, creating a tag
//! `tag:create`, listing repositories `repository:list`, deleting a repository
//! `repository:delete`, listing and reading members `member:list`/`member:read`, adding,
//! changing and removing them `member:create`/`member:update`/`member:delete`, robots
//! likewise with `robot:*`, reading, updating and deleting the project `project:read`/
//! `project:update`/`project:delete`, its settings `metadata:read`/`metadata:update`, its
//! logs `log:list`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A member's role in a project, with Harbor's ids and names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProjectRole {
    ProjectAdmin,
    Developer,
    Guest,
    Maintainer,
    LimitedGuest,
}

impl ProjectRole {
    /// Every role, from the most to the least powerful.
    pub const ALL: [ProjectRole; 5] = [
        ProjectRole::ProjectAdmin,
        ProjectRole::Maintainer,
        ProjectRole::Developer,
        ProjectRole::Guest,
        ProjectRole::LimitedGuest,
    ];

    /// Harbor's `role_id`.
    pub fn id(self) -> i64 {
        match self {
            ProjectRole::ProjectAdmin => 1,
            ProjectRole::Developer => 2,
            ProjectRole::Guest => 3,
            ProjectRole::Maintainer => 4,
            ProjectRole::LimitedGuest => 5,
        }
    }

    pub fn from_id(id: i64) -> Option<ProjectRole> {
        ProjectRole::ALL.into_iter().find(|r| r.id() == id)
    }

    /// Harbor's `role_name`, as its JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            ProjectRole::ProjectAdmin => "projectAdmin",
            ProjectRole::Developer => "developer",
            ProjectRole::Guest => "guest",
            ProjectRole::Maintainer => "maintainer",
            ProjectRole::LimitedGuest => "limitedGuest",
        }
    }

    /// The name people read.
    pub fn display_name(self) -> &'static str {
        match self {
            ProjectRole::ProjectAdmin => "Project Admin",
            ProjectRole::Developer => "Developer",
            ProjectRole::Guest => "Guest",
            ProjectRole::Maintainer => "Maintainer",
            ProjectRole::LimitedGuest => "Limited Guest",
        }
    }

    /// Position in the nesting of the roles: a role may do everything a lower one may.
    fn rank(self) -> u8 {
        match self {
            ProjectRole::LimitedGuest => 1,
            ProjectRole::Guest => 2,
            ProjectRole::Developer => 3,
            ProjectRole::Maintainer => 4,
            ProjectRole::ProjectAdmin => 5,
        }
    }
}

impl fmt::Display for ProjectRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProjectRole {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<ProjectRole, UnknownName> {
        ProjectRole::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownName::new("role", s, ProjectRole::ALL.map(|r| r.name())))
    }
}

/// A name that is not one of the known ones; the message lists those.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; valid: {}", valid.join(", "))]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub valid: Vec<&'static str>,
}

impl UnknownName {
    fn new<const N: usize>(what: &'static str, given: &str, valid: [&'static str; N]) -> Self {
        UnknownName {
            what,
            given: given.to_string(),
            valid: valid.to_vec(),
        }
    }
}

/// What a permission is about, named as Harbor names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The project itself (Harbor's roles call it the empty sub-resource).
    Project,
    /// Project settings in the portal's words.
    Configuration,
    /// Project settings (`public`, …) as stored.
    Metadata,
    Quota,
    Member,
    Robot,
    Log,
    Label,
    Repository,
    Artifact,
    /// Build history, vulnerabilities, SBOMs and other additions of an artifact.
    ArtifactAddition,
    ArtifactLabel,
    Tag,
    /// Signatures, SBOMs and other artifacts attached to one.
    Accessory,
    Scan,
}

impl Resource {
    pub const ALL: [Resource; 15] = [
        Resource::Project,
        Resource::Configuration,
        Resource::Metadata,
        Resource::Quota,
        Resource::Member,
        Resource::Robot,
        Resource::Log,
        Resource::Label,
        Resource::Repository,
        Resource::Artifact,
        Resource::ArtifactAddition,
        Resource::ArtifactLabel,
        Resource::Tag,
        Resource::Accessory,
        Resource::Scan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Project => "project",
            Resource::Configuration => "configuration",
            Resource::Metadata => "metadata",
            Resource::Quota => "quota",
            Resource::Member => "member",
            Resource::Robot => "robot",
            Resource::Log => "log",
            Resource::Label => "label",
            Resource::Repository => "repository",
            Resource::Artifact => "artifact",
            Resource::ArtifactAddition => "artifact-addition",
            Resource::ArtifactLabel => "artifact-label",
            Resource::Tag => "tag",
            Resource::Accessory => "accessory",
            Resource::Scan => "scan",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Resource, UnknownName> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName::new("resource", s, Resource::ALL.map(|r| r.as_str())))
    }
}

/// What is done to a resource, named as Harbor names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Create,
    Read,
    Update,
    Delete,
    List,
    Stop,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Pull,
        Action::Push,
        Action::Create,
        Action::Read,
        Action::Update,
        Action::Delete,
        Action::List,
        Action::Stop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::List => "list",
            Action::Stop => "stop",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Action, UnknownName> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownName::new("action", s, Action::ALL.map(|a| a.as_str())))
    }
}

/// The least powerful role that may do `action` on `resource` (every more powerful role
/// may too); `None` when no project role may.
pub fn lowest_role(resource: Resource, action: Action) -> Option<ProjectRole> {
    use Action as A;
    use ProjectRole::*;
    use Resource as R;
    Some(match (resource, action) {
        (R::Project, A::Read) => LimitedGuest,
        (R::Project, A::Update | A::Delete) => ProjectAdmin,
        (R::Configuration, A::Read) => LimitedGuest,
        (R::Configuration, A::Update) => ProjectAdmin,
        (R::Metadata, A::Read) => Maintainer,
        (R::Metadata, A::List | A::Create | A::Update | A::Delete) => ProjectAdmin,
        (R::Quota, A::Read) => LimitedGuest,
        (R::Member, A::Read | A::List) => Guest,
        (R::Member, A::Create | A::Update | A::Delete) => ProjectAdmin,
        (R::Robot, A::Read | A::List) => Guest,
        (R::Robot, A::Create | A::Update | A::Delete) => ProjectAdmin,
        (R::Log, A::List) => ProjectAdmin,
        (R::Label, A::Read | A::List) => Guest,
        (R::Label, A::Create | A::Update | A::Delete) => Maintainer,
        (R::Repository, A::Pull | A::List | A::Read) => LimitedGuest,
        (R::Repository, A::Push | A::Create | A::Update) => Developer,
        (R::Repository, A::Delete) => Maintainer,
        (R::Artifact, A::Read | A::List) => LimitedGuest,
        (R::Artifact, A::Create) => Developer,
        (R::Artifact, A::Delete) => Maintainer,
        (R::ArtifactAddition, A::Read) => LimitedGuest,
        (R::ArtifactLabel, A::Create | A::Delete) => Developer,
        (R::Tag, A::List) => LimitedGuest,
        (R::Tag, A::Create) => Developer,
        (R::Tag, A::Delete) => Maintainer,
        (R::Accessory, A::List) => LimitedGuest,
        (R::Scan, A::Read) => LimitedGuest,
        (R::Scan, A::Create | A::Stop) => Maintainer,
        _ => return None,
    })
}

/// Whether a member with `role` may do `action` on `resource` of its project: Harbor's
/// matrix, in the table at the top of this module.
pub fn role_allows(role: ProjectRole, resource: Resource, action: Action) -> bool {
    lowest_role(resource, action).is_some_and(|lowest| role.rank() >= lowest.rank())
}

/// What anyone, anonymous callers included, may do in a public project without being a
/// member (Harbor's `publicProjectPolicies`, `src/common/rbac/project/util.go`).
pub fn public_allows(resource: Resource, action: Action) -> bool {
    use Action as A;
    use Resource as R;
    matches!(
        (resource, action),
        (R::Project, A::Read)
            | (R::Label, A::Read | A::List)
            | (R::Repository, A::List | A::Pull)
            | (R::Scan, A::Read)
            | (R::Tag, A::List)
            | (R::Artifact, A::Read | A::List)
            | (R::ArtifactAddition, A::Read)
    )
}

/// The registry operations whose permission is asked on `/v2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistryOp {
    /// Anything read: manifests, blobs, tag lists, referrers; also a mount's source.
    Pull,
    /// Uploads, mounts into the repository, manifest `PUT`s.
    Push,
    /// `DELETE /v2/<name>/manifests/<digest>`.
    DeleteManifest,
    /// `DELETE /v2/<name>/manifests/<tag>`.
    DeleteTag,
    /// Showing the repository in `/v2/_catalog`.
    ListCatalog,
}

/// What a registry operation on a repository needs in its project, in Harbor's terms; all
/// of it is needed. See the module documentation for where this comes from.
pub fn registry_action(op: RegistryOp) -> &'static [(Resource, Action)] {
    match op {
        RegistryOp::Pull => &[(Resource::Repository, Action::Pull)],
        RegistryOp::Push => &[
            (Resource::Repository, Action::Pull),
            (Resource::Repository, Action::Push),
        ],
        RegistryOp::DeleteManifest | RegistryOp::DeleteTag => {
            &[(Resource::Repository, Action::Delete)]
        }
        RegistryOp::ListCatalog => &[(Resource::Repository, Action::List)],
    }
}

impl From<super::Action> for RegistryOp {
    /// The access seam's actions (which are also the token scope's): `delete` stands for
    /// both deletes, which need the same permission.
    fn from(action: super::Action) -> RegistryOp {
        match action {
            super::Action::Pull => RegistryOp::Pull,
            super::Action::Push => RegistryOp::Push,
            super::Action::Delete => RegistryOp::DeleteManifest,
        }
    }
}

/// `kind` of a permission that applies to projects.
pub const KIND_PROJECT: &str = "project";
/// `kind` of a permission that applies to the whole instance.
pub const KIND_SYSTEM: &str = "system";
/// The namespace that covers every project.
pub const ALL_PROJECTS: &str = "*";
/// The namespace of `system` permissions.
pub const SYSTEM_NAMESPACE: &str = "/";

/// One robot permission, Harbor's `RobotPermission`: what the robot may do in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RobotPermission {
    /// `project` or `system`.
    pub kind: String,
    /// A project name or `*` (every project) for `project`; `/` for `system`.
    pub namespace: String,
    #[serde(default)]
    pub access: Vec<RobotAccess>,
}

/// One entry of a robot permission, Harbor's `Access`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Access)]
pub struct RobotAccess {
    pub resource: String,
    pub action: String,
    /// `allow` (also when absent or empty) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

impl RobotAccess {
    pub fn allow(resource: Resource, action: Action) -> RobotAccess {
        RobotAccess {
            resource: resource.as_str().into(),
            action: action.as_str().into(),
            effect: None,
        }
    }

    pub fn deny(resource: Resource, action: Action) -> RobotAccess {
        RobotAccess {
            effect: Some("deny".into()),
            ..RobotAccess::allow(resource, action)
        }
    }

    /// Whether this entry is about `resource`/`action`, and if so whether it denies it.
    /// Entries that do not parse are about nothing.
    fn verdict(&self, resource: Resource, action: Action) -> Option<Effect> {
        if self.resource != resource.as_str() || self.action != action.as_str() {
            return None;
        }
        self.effect().ok()
    }

    fn effect(&self) -> Result<Effect, PermissionError> {
        match self.effect.as_deref() {
            None | Some("") | Some("allow") => Ok(Effect::Allow),
            Some("deny") => Ok(Effect::Deny),
            Some(other) => Err(PermissionError::Effect(other.to_string())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

impl RobotPermission {
    /// A `project` permission on `namespace` (a project name or `*`).
    pub fn project(namespace: &str, access: Vec<RobotAccess>) -> RobotPermission {
        RobotPermission {
            kind: KIND_PROJECT.into(),
            namespace: namespace.into(),
            access,
        }
    }

    /// A `system` permission.
    pub fn system(access: Vec<RobotAccess>) -> RobotPermission {
        RobotPermission {
            kind: KIND_SYSTEM.into(),
            namespace: SYSTEM_NAMESPACE.into(),
            access,
        }
    }

    /// Checks the kind, the namespace and every entry; the error names what is wrong.
    pub fn validate(&self) -> Result<(), PermissionError> {
        match self.kind.as_str() {
            KIND_PROJECT => {
                if self.namespace.is_empty() {
                    return Err(PermissionError::EmptyNamespace);
                }
                if self.namespace != ALL_PROJECTS && !is_valid_project_name(&self.namespace) {
                    return Err(PermissionError::Namespace(self.namespace.clone()));
                }
            }
            KIND_SYSTEM => {
                if self.namespace != SYSTEM_NAMESPACE {
                    return Err(PermissionError::SystemNamespace(self.namespace.clone()));
                }
            }
            other => return Err(PermissionError::Kind(other.to_string())),
        }
        if self.access.is_empty() {
            return Err(PermissionError::EmptyAccess(self.namespace.clone()));
        }
        for entry in &self.access {
            let resource: Resource = entry.resource.parse()?;
            let action: Action = entry.action.parse()?;
            entry.effect()?;
            if !robot_grantable(&self.kind, resource, action) {
                return Err(PermissionError::NotGrantable {
                    kind: self.kind.clone(),
                    resource,
                    action,
                });
            }
        }
        Ok(())
    }

    fn covers_project(&self, project: &str) -> bool {
        self.kind == KIND_PROJECT && (self.namespace == ALL_PROJECTS || self.namespace == project)
    }
}

/// Checks every permission of a robot ([`RobotPermission::validate`]).
pub fn validate_permissions(perms: &[RobotPermission]) -> Result<(), PermissionError> {
    perms.iter().try_for_each(RobotPermission::validate)
}

/// Why a robot permission is not valid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("unknown permission kind {0:?}; valid: project, system")]
    Kind(String),
    #[error("a project permission needs a namespace: a project name, or * for every project")]
    EmptyNamespace,
    #[error(
        "namespace {0:?} is not a valid project name (lowercase letters and digits, \
         separated by '.', '_', '__' or dashes) nor * for every project"
    )]
    Namespace(String),
    #[error("a system permission's namespace is \"/\", not {0:?}")]
    SystemNamespace(String),
    #[error("the permission on namespace {0:?} grants nothing (its access list is empty)")]
    EmptyAccess(String),
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    #[error("unknown effect {0:?}; valid: allow, deny")]
    Effect(String),
    #[error("{resource}:{action} cannot be granted to a robot in a {kind} permission")]
    NotGrantable {
        kind: String,
        resource: Resource,
        action: Action,
    },
}

/// Whether a robot may be given `action` on `resource` in a permission of `kind`: Harbor's
/// robot vocabulary (`src/common/rbac/const.go`, `PoliciesMap` and the additions of its
/// permission provider), for the resources this module names.
pub fn robot_grantable(kind: &str, resource: Resource, action: Action) -> bool {
    use Action as A;
    use Resource as R;
    match kind {
        KIND_PROJECT => matches!(
            (resource, action),
            (R::Log, A::List)
                | (R::Project, A::Read | A::Update | A::Delete)
                | (
                    R::Metadata | R::Label,
                    A::Read | A::List | A::Create | A::Update | A::Delete
                )
                | (
                    R::Repository,
                    A::Read | A::List | A::Update | A::Delete | A::Pull | A::Push
                )
                | (R::Artifact, A::Read | A::List | A::Create | A::Delete)
                | (R::ArtifactAddition, A::Read)
                | (R::ArtifactLabel, A::Create | A::Delete)
                | (R::Tag, A::List | A::Create | A::Delete)
                | (R::Accessory, A::List)
                | (R::Scan, A::Read | A::Create | A::Stop)
                | (R::Quota, A::Read)
                | (
                    R::Member,
                    A::Read | A::List | A::Create | A::Update | A::Delete
                )
                | (R::Robot, A::Read | A::List | A::Create | A::Delete)
        ),
        KIND_SYSTEM => matches!(
            (resource, action),
            (R::Project, A::List | A::Create)
                | (R::Robot, A::Read | A::List | A::Create | A::Delete)
                | (R::Label, A::Read | A::Create | A::Update | A::Delete)
                | (R::Quota, A::Read | A::List)
        ),
        _ => false,
    }
}

/// Whether a robot with `perms` may do `action` on `resource` in `project`: some `project`
/// permission on that project or on `*` allows it, and none denies it.
pub fn robot_allows(
    perms: &[RobotPermission],
    project: &str,
    resource: Resource,
    action: Action,
) -> bool {
    decide(
        perms.iter().filter(|p| p.covers_project(project)),
        resource,
        action,
    )
}

/// Whether a robot with `perms` may do `action` on the instance-wide `resource` (create or
/// list projects, create system robots…): some `system` permission allows it, none denies it.
pub fn robot_allows_system(perms: &[RobotPermission], resource: Resource, action: Action) -> bool {
    decide(
        perms.iter().filter(|p| p.kind == KIND_SYSTEM),
        resource,
        action,
    )
}

fn decide<'a>(
    perms: impl Iterator<Item = &'a RobotPermission>,
    resource: Resource,
    action: Action,
) -> bool {
    let mut allowed = false;
    for entry in perms.flat_map(|p| &p.access) {
        match entry.verdict(resource, action) {
            Some(Effect::Deny) => return false,
            Some(Effect::Allow) => allowed = true,
            None => {}
        }
    }
    allowed
}

/// Whether everything `child` allows, `parent` allows too: a robot may never create (or
/// give) a robot wider than itself. A child permission on `*` needs the parent to allow the
/// same on `*` and to deny it nowhere. `deny` entries of the child only narrow it. A child
/// entry that does not parse is never covered.
pub fn is_subset(child: &[RobotPermission], parent: &[RobotPermission]) -> bool {
    child.iter().all(|perm| {
        perm.access.iter().all(|entry| {
            let (Ok(resource), Ok(action), Ok(effect)) = (
                entry.resource.parse::<Resource>(),
                entry.action.parse::<Action>(),
                entry.effect(),
            ) else {
                return false;
            };
            if effect == Effect::Deny {
                return true;
            }
            parent_allows_where(parent, perm, resource, action)
        })
    })
}

/// Whether `parent` allows `resource`/`action` everywhere `perm` applies.
fn parent_allows_where(
    parent: &[RobotPermission],
    perm: &RobotPermission,
    resource: Resource,
    action: Action,
) -> bool {
    match perm.kind.as_str() {
        KIND_SYSTEM => robot_allows_system(parent, resource, action),
        KIND_PROJECT if perm.namespace == ALL_PROJECTS => {
            let everywhere = parent
                .iter()
                .filter(|p| p.kind == KIND_PROJECT && p.namespace == ALL_PROJECTS);
            decide(everywhere, resource, action)
                && !parent
                    .iter()
                    .filter(|p| p.kind == KIND_PROJECT)
                    .flat_map(|p| &p.access)
                    .any(|e| e.verdict(resource, action) == Some(Effect::Deny))
        }
        KIND_PROJECT => robot_allows(parent, &perm.namespace, resource, action),
        _ => false,
    }
}

/// Whether a robot holding `creator` may create a robot with `requested`: it holds
/// `robot:create` wherever the new robot applies (each project it names, every project for
/// `*`, the system for `system` permissions), and `requested` is no wider than `creator`.
pub fn may_create_robot(creator: &[RobotPermission], requested: &[RobotPermission]) -> bool {
    let may_create_there = |perm: &RobotPermission| {
        let wanted = [RobotAccess::allow(Resource::Robot, Action::Create)];
        let probe = RobotPermission {
            kind: perm.kind.clone(),
            namespace: perm.namespace.clone(),
            access: wanted.to_vec(),
        };
        is_subset(std::slice::from_ref(&probe), creator)
    };
    !requested.is_empty() && requested.iter().all(may_create_there) && is_subset(requested, creator)
}

/// Longest project name Harbor accepts.
pub const MAX_PROJECT_NAME: usize = 255;

/// Whether `name` may name a project: one lowercase component of a repository name,
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, at most [`MAX_PROJECT_NAME`] bytes.
pub fn is_valid_project_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_PROJECT_NAME {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    let mut i = 0;
    loop {
        // a run of letters and digits
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // one separator: '.', '_', '__' or one or more '-'
        let sep = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let ok = match &bytes[sep..i] {
            b"." | b"_" | b"__" => true,
            s => s.iter().all(|&b| b == b'-'),
        };
        if !ok {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use ProjectRole::*;
    use Resource as R;

    /// The whole matrix, written out independently of `lowest_role`: for each pair, whether
    /// limited guest, guest, developer, maintainer, project admin may (in that order).
    /// Pairs not listed are refused to everyone.
    const MATRIX: &[(Resource, Action, [bool; 5])] = &[
        (R::Project, A::Read, [true, true, true, true, true]),
        (R::Project, A::Update, [false, false, false, false, true]),
        (R::Project, A::Delete, [false, false, false, false, true]),
        (R::Configuration, A::Read, [true, true, true, true, true]),
        (
            R::Configuration,
            A::Update,
            [false, false, false, false, true],
        ),
        (R::Metadata, A::Read, [false, false, false, true, true]),
        (R::Metadata, A::List, [false, false, false, false, true]),
        (R::Metadata, A::Create, [false, false, false, false, true]),
        (R::Metadata, A::Update, [false, false, false, false, true]),
        (R::Metadata, A::Delete, [false, false, false, false, true]),
        (R::Quota, A::Read, [true, true, true, true, true]),
        (R::Member, A::Read, [false, true, true, true, true]),
        (R::Member, A::List, [false, true, true, true, true]),
        (R::Member, A::Create, [false, false, false, false, true]),
        (R::Member, A::Update, [false, false, false, false, true]),
        (R::Member, A::Delete, [false, false, false, false, true]),
        (R::Robot, A::Read, [false, true, true, true, true]),
        (R::Robot, A::List, [false, true, true, true, true]),
        (R::Robot, A::Create, [false, false, false, false, true]),
        (R::Robot, A::Update, [false, false, false, false, true]),
        (R::Robot, A::Delete, [false, false, false, false, true]),
        (R::Log, A::List, [false, false, false, false, true]),
        (R::Label, A::Read, [false, true, true, true, true]),
        (R::Label, A::List, [false, true, true, true, true]),
        (R::Label, A::Create, [false, false, false, true, true]),
        (R::Label, A::Update, [false, false, false, true, true]),
        (R::Label, A::Delete, [false, false, false, true, true]),
        (R::Repository, A::Pull, [true, true, true, true, true]),
        (R::Repository, A::List, [true, true, true, true, true]),
        (R::Repository, A::Read, [true, true, true, true, true]),
        (R::Repository, A::Push, [false, false, true, true, true]),
        (R::Repository, A::Create, [false, false, true, true, true]),
        (R::Repository, A::Update, [false, false, true, true, true]),
        (R::Repository, A::Delete, [false, false, false, true, true]),
        (R::Artifact, A::Read, [true, true, true, true, true]),
        (R::Artifact, A::List, [true, true, true, true, true]),
        (R::Artifact, A::Create, [false, false, true, true, true]),
        (R::Artifact, A::Delete, [false, false, false, true, true]),
        (R::ArtifactAddition, A::Read, [true, true, true, true, true]),
        (
            R::ArtifactLabel,
            A::Create,
            [false, false, true, true, true],
        ),
        (
            R::ArtifactLabel,
            A::Delete,
            [false, false, true, true, true],
        ),
        (R::Tag, A::List, [true, true, true, true, true]),
        (R::Tag, A::Create, [false, false, true, true, true]),
        (R::Tag, A::Delete, [false, false, false, true, true]),
        (R::Accessory, A::List, [true, true, true, true, true]),
        (R::Scan, A::Read, [true, true, true, true, true]),
        (R::Scan, A::Create, [false, false, false, true, true]),
        (R::Scan, A::Stop, [false, false, false, true, true]),
    ];

    const COLUMNS: [ProjectRole; 5] = [LimitedGuest, Guest, Developer, Maintainer, ProjectAdmin];

    fn expected(resource: Resource, action: Action) -> [bool; 5] {
        MATRIX
            .iter()
            .find(|(r, a, _)| *r == resource && *a == action)
            .map_or([false; 5], |(_, _, row)| *row)
    }

    #[test]
    fn every_role_every_resource_every_action_is_harbors_matrix() {
        let mut failures = Vec::new();
        let mut checked = 0;
        for resource in Resource::ALL {
            for action in Action::ALL {
                let row = expected(resource, action);
                for (role, want) in COLUMNS.into_iter().zip(row) {
                    checked += 1;
                    let got = role_allows(role, resource, action);
                    if got != want {
                        failures.push(format!(
                            "{role} {resource}:{action}: expected {want}, got {got}"
                        ));
                    }
                }
            }
        }
        assert_eq!(checked, 5 * Resource::ALL.len() * Action::ALL.len());
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // Every row of the table is a pair some role holds (no dead rows, no duplicates).
        for (i, (resource, action, row)) in MATRIX.iter().enumerate() {
            assert!(row.iter().any(|&b| b), "{resource}:{action} grants nothing");
            assert!(
                !MATRIX[..i]
                    .iter()
                    .any(|(r, a, _)| r == resource && a == action),
                "{resource}:{action} listed twice"
            );
        }
    }

    /// The table in this module's documentation says what the code does.
    #[test]
    fn the_documented_table_is_the_matrix() {
        let source = include_str!("roles.rs");
        let mut rows = 0;
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("//! | `") else {
                continue;
            };
            let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
            let resource = cells[0].trim_end_matches('`');
            // The second table (registry operations) has no role columns.
            if cells.len() < 7 {
                continue;
            }
            let resource: Resource = resource.parse().unwrap();
            let action: Action = cells[1].parse().unwrap();
            let documented: Vec<bool> = cells[2..7].iter().map(|c| *c == "✓").collect();
            assert_eq!(
                documented,
                expected(resource, action).to_vec(),
                "documented row {resource}:{action}"
            );
            rows += 1;
        }
        assert_eq!(rows, MATRIX.len(), "the documented table has every row");
    }

    #[test]
    fn roles_have_harbors_ids_and_names() {
        let table = [
            (ProjectAdmin, 1, "projectAdmin", "Project Admin"),
            (Developer, 2, "developer", "Developer"),
            (Guest, 3, "guest", "Guest"),
            (Maintainer, 4, "maintainer", "Maintainer"),
            (LimitedGuest, 5, "limitedGuest", "Limited Guest"),
        ];
        for (role, id, name, display) in table {
            assert_eq!(role.id(), id, "{role:?}");
            assert_eq!(ProjectRole::from_id(id), Some(role), "{role:?}");
            assert_eq!(role.name(), name, "{role:?}");
            assert_eq!(role.to_string(), name, "{role:?}");
            assert_eq!(name.parse::<ProjectRole>(), Ok(role), "{role:?}");
            assert_eq!(role.display_name(), display, "{role:?}");
        }
        assert_eq!(ProjectRole::from_id(0), None);
        assert_eq!(ProjectRole::from_id(6), None);
        let err = "master".parse::<ProjectRole>().unwrap_err().to_string();
        assert!(err.contains("\"master\""), "{err}");
        assert!(
            err.contains("projectAdmin") && err.contains("limitedGuest"),
            "{err}"
        );
    }

    #[test]
    fn resources_and_actions_parse_from_harbors_strings_and_back() {
        for resource in Resource::ALL {
            assert_eq!(resource.as_str().parse::<Resource>(), Ok(resource));
        }
        for action in Action::ALL {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
        }
        assert_eq!("artifact-addition".parse(), Ok(R::ArtifactAddition));
        let err = "helm-chart".parse::<Resource>().unwrap_err().to_string();
        assert!(err.contains("unknown resource \"helm-chart\""), "{err}");
        assert!(
            err.contains("repository") && err.contains("artifact-label"),
            "{err}"
        );
        let err = "*".parse::<Action>().unwrap_err().to_string();
        assert!(err.contains("unknown action \"*\""), "{err}");
        assert!(err.contains("pull") && err.contains("list"), "{err}");
        // Case matters, as in Harbor.
        assert!("Repository".parse::<Resource>().is_err());
        assert!("PULL".parse::<Action>().is_err());
    }

    #[test]
    fn public_projects_let_anyone_read() {
        for (resource, action, want) in [
            (R::Repository, A::Pull, true),
            (R::Repository, A::List, true),
            (R::Tag, A::List, true),
            (R::Artifact, A::Read, true),
            (R::Project, A::Read, true),
            (R::Repository, A::Push, false),
            (R::Repository, A::Delete, false),
            (R::Artifact, A::Delete, false),
            (R::Tag, A::Delete, false),
            (R::Member, A::List, false),
            (R::Robot, A::List, false),
            (R::Metadata, A::Read, false),
        ] {
            assert_eq!(public_allows(resource, action), want, "{resource}:{action}");
        }
    }

    #[test]
    fn registry_operations_need_what_harbors_v2_checks() {
        let rows: [(RegistryOp, &[(Resource, Action)]); 5] = [
            (RegistryOp::Pull, &[(R::Repository, A::Pull)]),
            (
                RegistryOp::Push,
                &[(R::Repository, A::Pull), (R::Repository, A::Push)],
            ),
            (RegistryOp::DeleteManifest, &[(R::Repository, A::Delete)]),
            (RegistryOp::DeleteTag, &[(R::Repository, A::Delete)]),
            (RegistryOp::ListCatalog, &[(R::Repository, A::List)]),
        ];
        for (op, needs) in rows {
            assert_eq!(registry_action(op), needs, "{op:?}");
        }
        assert_eq!(
            RegistryOp::from(super::super::Action::Pull),
            RegistryOp::Pull
        );
        assert_eq!(
            RegistryOp::from(super::super::Action::Push),
            RegistryOp::Push
        );
        assert_eq!(
            RegistryOp::from(super::super::Action::Delete),
            RegistryOp::DeleteManifest
        );
        // Which roles may do each: pull for all, push from developer, deletes from maintainer.
        let may = |role, op| {
            registry_action(op)
                .iter()
                .all(|&(r, a)| role_allows(role, r, a))
        };
        for role in ProjectRole::ALL {
            assert!(may(role, RegistryOp::Pull), "{role}");
            assert!(may(role, RegistryOp::ListCatalog), "{role}");
            let writer = matches!(role, Developer | Maintainer | ProjectAdmin);
            assert_eq!(may(role, RegistryOp::Push), writer, "{role}");
            let deleter = matches!(role, Maintainer | ProjectAdmin);
            assert_eq!(may(role, RegistryOp::DeleteManifest), deleter, "{role}");
            assert_eq!(may(role, RegistryOp::DeleteTag), deleter, "{role}");
            // The REST API's finer deletes go to the same roles.
            assert_eq!(role_allows(role, R::Artifact, A::Delete), deleter, "{role}");
            assert_eq!(role_allows(role, R::Tag, A::Delete), deleter, "{role}");
        }
    }

    #[test]
    fn robot_permissions_round_trip_harbors_json() {
        let json = r#"[
            {"kind":"project","namespace":"payments","access":[
                {"resource":"repository","action":"pull"},
                {"resource":"repository","action":"push","effect":"allow"},
                {"resource":"tag","action":"delete","effect":"deny"}]},
            {"kind":"system","namespace":"/","access":[
                {"resource":"project","action":"create"}]}
        ]"#;
        let perms: Vec<RobotPermission> = serde_json::from_str(json).unwrap();
        assert_eq!(
            perms,
            vec![
                RobotPermission::project(
                    "payments",
                    vec![
                        RobotAccess::allow(R::Repository, A::Pull),
                        RobotAccess {
                            effect: Some("allow".into()),
                            ..RobotAccess::allow(R::Repository, A::Push)
                        },
                        RobotAccess::deny(R::Tag, A::Delete),
                    ]
                ),
                RobotPermission::system(vec![RobotAccess::allow(R::Project, A::Create)]),
            ]
        );
        validate_permissions(&perms).unwrap();
        let back: serde_json::Value = serde_json::to_value(&perms).unwrap();
        let original: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, original);
        // Field names exactly as Harbor's.
        let one = serde_json::to_value(&perms[0]).unwrap();
        let keys: Vec<&String> = one.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3);
        for key in ["kind", "namespace", "access"] {
            assert!(one.get(key).is_some(), "{key}");
        }
        assert_eq!(
            one["access"][2],
            serde_json::json!({"resource":"tag","action":"delete","effect":"deny"})
        );
        // A missing access list is an empty one (and then not valid).
        let bare: RobotPermission =
            serde_json::from_str(r#"{"kind":"project","namespace":"x"}"#).unwrap();
        assert!(bare.access.is_empty());
    }

    fn pull_push(namespace: &str) -> RobotPermission {
        RobotPermission::project(
            namespace,
            vec![
                RobotAccess::allow(R::Repository, A::Pull),
                RobotAccess::allow(R::Repository, A::Push),
            ],
        )
    }

    #[test]
    fn invalid_robot_permissions_say_what_is_wrong() {
        let access = |resource: &str, action: &str, effect: Option<&str>| RobotAccess {
            resource: resource.into(),
            action: action.into(),
            effect: effect.map(Into::into),
        };
        let with = |kind: &str, namespace: &str, entries: Vec<RobotAccess>| RobotPermission {
            kind: kind.into(),
            namespace: namespace.into(),
            access: entries,
        };
        let pull = || vec![access("repository", "pull", None)];
        let cases: Vec<(RobotPermission, &str)> = vec![
            (with("project", "", pull()), "needs a namespace"),
            (
                with("project", "Payments", pull()),
                "\"Payments\" is not a valid project name",
            ),
            (
                with("project", "a/b", pull()),
                "\"a/b\" is not a valid project name",
            ),
            (
                with("project", "-x", pull()),
                "\"-x\" is not a valid project name",
            ),
            (
                with("team", "x", pull()),
                "unknown permission kind \"team\"",
            ),
            (with("system", "x", pull()), "namespace is \"/\", not \"x\""),
            (with("project", "x", vec![]), "grants nothing"),
            (
                with("project", "x", vec![access("helm-chart", "read", None)]),
                "unknown resource \"helm-chart\"; valid: project, configuration",
            ),
            (
                with("project", "x", vec![access("repository", "*", None)]),
                "unknown action \"*\"; valid: pull, push",
            ),
            (
                with(
                    "project",
                    "x",
                    vec![access("repository", "pull", Some("maybe"))],
                ),
                "unknown effect \"maybe\"",
            ),
            (
                with("project", "x", vec![access("repository", "create", None)]),
                "repository:create cannot be granted to a robot in a project permission",
            ),
            (
                with("project", "x", vec![access("robot", "update", None)]),
                "robot:update cannot be granted",
            ),
            (
                with("system", "/", vec![access("repository", "pull", None)]),
                "repository:pull cannot be granted to a robot in a system permission",
            ),
        ];
        for (perm, wanted) in cases {
            let err = perm.validate().expect_err(wanted).to_string();
            assert!(err.contains(wanted), "{perm:?}: {err:?} lacks {wanted:?}");
        }
        for good in [
            pull_push("payments"),
            pull_push("*"),
            pull_push("a.b_c__d--e"),
            RobotPermission::project("x", vec![access("repository", "pull", Some(""))]),
        ] {
            assert_eq!(good.validate(), Ok(()), "{good:?}");
        }
        let err = validate_permissions(&[pull_push("ok"), pull_push("NOT")]).unwrap_err();
        assert!(err.to_string().contains("\"NOT\""), "{err}");
    }

    #[test]
    fn project_names_follow_the_repository_component_grammar() {
        for good in [
            "a", "library", "a1", "a.b", "a_b", "a__b", "a-b", "a---b", "1-2.3_4",
        ] {
            assert!(is_valid_project_name(good), "{good}");
        }
        let long_ok = "a".repeat(MAX_PROJECT_NAME);
        assert!(is_valid_project_name(&long_ok));
        let too_long = "a".repeat(MAX_PROJECT_NAME + 1);
        for bad in [
            "",
            "A",
            "aB",
            "a/b",
            "a..b",
            "a___b",
            "a._b",
            "a-_b",
            "-a",
            "a-",
            ".a",
            "a.",
            "_",
            "a b",
            "é",
            "*",
            too_long.as_str(),
        ] {
            assert!(!is_valid_project_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn robots_may_do_what_their_permissions_allow_where_they_apply() {
        let perms = vec![
            pull_push("payments"),
            RobotPermission::project("*", vec![RobotAccess::allow(R::Repository, A::Pull)]),
            RobotPermission::project("secret", vec![RobotAccess::deny(R::Repository, A::Pull)]),
            RobotPermission::system(vec![RobotAccess::allow(R::Project, A::Create)]),
        ];
        let rows = [
            ("payments", R::Repository, A::Pull, true),
            ("payments", R::Repository, A::Push, true),
            ("payments", R::Repository, A::Delete, false),
            ("other", R::Repository, A::Pull, true),
            ("other", R::Repository, A::Push, false),
            ("secret", R::Repository, A::Pull, false),
            ("payments", R::Artifact, A::Delete, false),
            // a system permission is about the instance, not a project
            ("payments", R::Project, A::Create, false),
        ];
        for (project, resource, action, want) in rows {
            assert_eq!(
                robot_allows(&perms, project, resource, action),
                want,
                "{project} {resource}:{action}"
            );
        }
        assert!(robot_allows_system(&perms, R::Project, A::Create));
        assert!(!robot_allows_system(&perms, R::Project, A::List));
        assert!(!robot_allows(&[], "payments", R::Repository, A::Pull));
    }

    #[test]
    fn a_robot_never_gives_more_than_it_holds() {
        let pull = |ns: &str| {
            RobotPermission::project(ns, vec![RobotAccess::allow(R::Repository, A::Pull)])
        };
        let creator = vec![
            RobotPermission::project(
                "payments",
                vec![
                    RobotAccess::allow(R::Repository, A::Pull),
                    RobotAccess::allow(R::Repository, A::Push),
                    RobotAccess::allow(R::Robot, A::Create),
                ],
            ),
            pull("*"),
        ];
        let cases: Vec<(&str, Vec<RobotPermission>, bool)> = vec![
            ("nothing", vec![], true),
            ("the same", creator.clone(), true),
            ("less in its project", vec![pull("payments")], true),
            ("pull on a project covered by *", vec![pull("other")], true),
            ("pull on * from *", vec![pull("*")], true),
            ("push elsewhere", vec![pull_push("other")], false),
            ("push on *", vec![pull_push("*")], false),
            (
                "delete in its project",
                vec![RobotPermission::project(
                    "payments",
                    vec![RobotAccess::allow(R::Repository, A::Delete)],
                )],
                false,
            ),
            (
                "a deny only narrows",
                vec![RobotPermission::project(
                    "payments",
                    vec![RobotAccess::deny(R::Artifact, A::Delete)],
                )],
                true,
            ),
            (
                "system permissions it lacks",
                vec![RobotPermission::system(vec![RobotAccess::allow(
                    R::Project,
                    A::Create,
                )])],
                false,
            ),
            (
                "an entry that does not parse",
                vec![RobotPermission::project(
                    "payments",
                    vec![RobotAccess {
                        resource: "repository".into(),
                        action: "*".into(),
                        effect: None,
                    }],
                )],
                false,
            ),
        ];
        for (name, child, want) in cases {
            assert_eq!(is_subset(&child, &creator), want, "{name}");
        }

        // A parent's deny anywhere keeps a child from having it on *.
        let parent = vec![
            pull("*"),
            RobotPermission::project("secret", vec![RobotAccess::deny(R::Repository, A::Pull)]),
        ];
        assert!(is_subset(&[pull("other")], &parent));
        assert!(!is_subset(&[pull("secret")], &parent));
        assert!(!is_subset(&[pull("*")], &parent));
    }

    #[test]
    fn a_robot_creates_robots_only_where_it_may() {
        let creator = vec![RobotPermission::project(
            "payments",
            vec![
                RobotAccess::allow(R::Repository, A::Pull),
                RobotAccess::allow(R::Robot, A::Create),
            ],
        )];
        let pull = |ns: &str| {
            RobotPermission::project(ns, vec![RobotAccess::allow(R::Repository, A::Pull)])
        };
        assert!(may_create_robot(&creator, &[pull("payments")]));
        // Wider than itself.
        assert!(!may_create_robot(&creator, &[pull_push("payments")]));
        // Where it may not create robots.
        let everywhere_pull = vec![
            creator[0].clone(),
            RobotPermission::project("*", vec![RobotAccess::allow(R::Repository, A::Pull)]),
        ];
        assert!(!may_create_robot(&everywhere_pull, &[pull("other")]));
        // Without robot:create at all.
        let no_create = vec![pull("payments")];
        assert!(!may_create_robot(&no_create, &[pull("payments")]));
        // A robot with no permissions is not a robot anyone creates.
        assert!(!may_create_robot(&creator, &[]));
    }
}
