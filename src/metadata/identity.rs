//! The identity domain: projects, users, groups, project members, robot accounts and the
//! token service's signing keys. Storage only: what a role may do, how a password or a
//! robot secret is hashed and how names are validated belong to the callers; roles are
//! stored as Harbor's integer role ids, hashes as the opaque strings the callers give.
//!
//! Mutations take ids (as Harbor's API does); lookups exist by name and by id. Listings
//! are in byte order of names. Pages are numbered from 1, as Harbor's `page` is.

use async_trait::async_trait;

use super::MetaError;

/// A project: the first path segment of the repositories it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub name: String,
    /// Anyone may pull from a public project.
    pub public: bool,
    /// The user who created it, if known and not deleted since.
    pub owner_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Default)]
pub struct NewProject {
    pub name: String,
    pub public: bool,
    pub owner_id: Option<i64>,
    /// When set (and `owner_id` is), the owner is made a member with this role in the
    /// same transaction that creates the project.
    pub owner_role: Option<i64>,
}

/// Which projects [`IdentityStore::list_projects`] lists.
#[derive(Clone, Debug, Default)]
pub struct ProjectQuery {
    /// Only names containing this (ASCII case-insensitively).
    pub name_contains: Option<String>,
    /// Only public (`Some(true)`) or only private (`Some(false)`) projects.
    pub public: Option<bool>,
    /// Only projects that are public or that this user is a member of, directly or
    /// through one of their groups (a non-admin's listing).
    pub visible_to: Option<i64>,
}

/// One page of a listing and the number of items on every page together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: Option<String>,
    pub realname: String,
    pub comment: String,
    /// An argon2id PHC string; `None`: the user cannot log in with a password.
    pub password_hash: Option<String>,
    pub sysadmin: bool,
    pub oidc_issuer: Option<String>,
    pub oidc_subject: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub username: String,
    /// Unique when set; an empty string is stored as no email.
    pub email: Option<String>,
    pub realname: String,
    pub comment: String,
    pub password_hash: Option<String>,
    pub sysadmin: bool,
    /// The identity provider's issuer and subject; the pair is unique when set.
    pub oidc_issuer: Option<String>,
    pub oidc_subject: Option<String>,
}

/// Harbor's group types.
pub const GROUP_TYPE_LDAP: i64 = 1;
pub const GROUP_TYPE_HTTP: i64 = 2;
pub const GROUP_TYPE_OIDC: i64 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub name: String,
    /// [`GROUP_TYPE_LDAP`], [`GROUP_TYPE_HTTP`] or [`GROUP_TYPE_OIDC`].
    pub group_type: i64,
}

/// Who a project membership is given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberEntity {
    User(i64),
    Group(i64),
}

impl MemberEntity {
    /// Harbor's `entity_type`: `u` or `g`.
    pub fn type_code(self) -> &'static str {
        match self {
            MemberEntity::User(_) => "u",
            MemberEntity::Group(_) => "g",
        }
    }

    pub fn id(self) -> i64 {
        match self {
            MemberEntity::User(id) | MemberEntity::Group(id) => id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub project_id: i64,
    pub entity: MemberEntity,
    /// The user's username or the group's name (Harbor's `entity_name`).
    pub entity_name: String,
    /// Harbor's role id.
    pub role: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A project a user is a member of, with every role they hold there (directly and
/// through their groups), in ascending order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRoles {
    pub project: Project,
    pub roles: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RobotLevel {
    System,
    Project,
}

impl RobotLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            RobotLevel::System => "system",
            RobotLevel::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<RobotLevel> {
        match s {
            "system" => Some(RobotLevel::System),
            "project" => Some(RobotLevel::Project),
            _ => None,
        }
    }
}

/// One permission of a robot, in Harbor's shape.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RobotPermission {
    /// `project` (Harbor's permission kind).
    pub kind: String,
    /// A project name, or `*` for every project.
    pub namespace: String,
    pub resource: String,
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Robot {
    pub id: i64,
    /// Without the configurable prefix: `<project>+<name>` or `<name>`.
    pub name: String,
    pub description: String,
    pub level: RobotLevel,
    /// The project of a project robot; `None` for a system robot.
    pub project_id: Option<i64>,
    /// The digest of the secret, as the caller computed it.
    pub secret_hash: String,
    /// -1: never expires.
    pub duration_days: i64,
    /// Unix ms; -1: never.
    pub expires_at: i64,
    pub disabled: bool,
    /// Sorted by kind, namespace, resource and action (byte order); no duplicates.
    pub permissions: Vec<RobotPermission>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct NewRobot {
    pub name: String,
    pub description: String,
    pub level: RobotLevel,
    /// Required for a project robot, absent for a system robot.
    pub project_id: Option<i64>,
    pub secret_hash: String,
    pub duration_days: i64,
    pub expires_at: i64,
    pub disabled: bool,
    pub permissions: Vec<RobotPermission>,
}

/// What [`IdentityStore::update_robot`] changes: everything here, the permissions replaced.
#[derive(Clone, Debug)]
pub struct RobotUpdate {
    pub description: String,
    pub disabled: bool,
    pub duration_days: i64,
    pub expires_at: i64,
    pub permissions: Vec<RobotPermission>,
}

/// A key of the token service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `ES256`, `RS256`, ...: opaque here.
    pub algorithm: String,
    /// PEM.
    pub private_key: String,
    pub created_at: i64,
    /// `None` while the key is in force (signs); set once it only verifies.
    pub retired_at: Option<i64>,
}

#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    // --- Projects ---------------------------------------------------------------------

    /// Creates a project (and, with `owner_role`, the owner's membership). A taken name is
    /// `MetaError::Conflict` naming it, and nothing is created.
    async fn create_project(&self, p: &NewProject) -> Result<Project, MetaError>;

    async fn get_project(&self, name: &str) -> Result<Option<Project>, MetaError>;

    async fn get_project_by_id(&self, id: i64) -> Result<Option<Project>, MetaError>;

    /// Projects matching `q` in byte order of name: page `page` (from 1) of `page_size`.
    async fn list_projects(
        &self,
        q: &ProjectQuery,
        page: u64,
        page_size: u64,
    ) -> Result<Page<Project>, MetaError>;

    /// `false` when there is no such project.
    async fn set_project_public(&self, id: i64, public: bool) -> Result<bool, MetaError>;

    /// Whether any repository `<project>` or `<project>/...` exists.
    async fn project_has_repositories(&self, name: &str) -> Result<bool, MetaError>;

    /// Deletes a project with its memberships, its project robots and every robot
    /// permission naming it, in one transaction. While repositories `<project>` or
    /// `<project>/...` exist it is refused with `MetaError::ProjectNotEmpty` unless
    /// `cascade`, in which case they go too, with everything the metadata store holds for
    /// them (manifests, tags, references, blob links, upload sessions; the blob records
    /// themselves stay for garbage collection). `None` when there is no such project;
    /// otherwise the names of the repositories deleted, in byte order.
    async fn delete_project(
        &self,
        id: i64,
        cascade: bool,
    ) -> Result<Option<Vec<String>>, MetaError>;

    // --- Users ------------------------------------------------------------------------

    /// A taken username, email or OIDC identity is `MetaError::Conflict` saying which.
    async fn create_user(&self, u: &NewUser) -> Result<User, MetaError>;

    /// Creates the user unless one of that username exists; safe when several processes
    /// do it at once (one creates). The user of that name, and whether this call created it.
    async fn create_user_unless_exists(&self, u: &NewUser) -> Result<(User, bool), MetaError>;

    async fn get_user(&self, username: &str) -> Result<Option<User>, MetaError>;

    async fn get_user_by_id(&self, id: i64) -> Result<Option<User>, MetaError>;

    /// The user an identity provider's (issuer, subject) belongs to.
    async fn get_user_by_oidc(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, MetaError>;

    /// The user with this email address (emails are unique), if any.
    async fn get_user_by_email(&self, email: &str) -> Result<Option<User>, MetaError>;

    /// Links a user to an identity provider's (issuer, subject), replacing any previous
    /// link (the provider was redeployed and knows the person under a new subject); `None`
    /// unlinks. `Conflict` when another user has that identity; whether the user exists.
    async fn set_user_oidc(
        &self,
        id: i64,
        identity: Option<(&str, &str)>,
    ) -> Result<bool, MetaError>;

    /// Users in byte order of username, optionally only those whose username contains
    /// `username_contains` (ASCII case-insensitively).
    async fn list_users(
        &self,
        username_contains: Option<&str>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<User>, MetaError>;

    async fn count_users(&self) -> Result<u64, MetaError>;

    /// `false` when there is no such user.
    async fn set_password_hash(&self, id: i64, hash: Option<&str>) -> Result<bool, MetaError>;

    async fn set_sysadmin(&self, id: i64, sysadmin: bool) -> Result<bool, MetaError>;

    /// Deletes a user with their memberships and group memberships; projects they owned
    /// keep no owner. `false` when there was none.
    async fn delete_user(&self, id: i64) -> Result<bool, MetaError>;

    // --- Groups -----------------------------------------------------------------------

    /// The group of that name and type, created if needed (safe when done concurrently).
    async fn ensure_group(&self, name: &str, group_type: i64) -> Result<Group, MetaError>;

    async fn get_group(&self, id: i64) -> Result<Option<Group>, MetaError>;

    /// Makes the user's groups of `group_type` exactly `names` (creating groups as
    /// needed), leaving their groups of other types; one transaction. Returns the user's
    /// groups of that type, or `MetaError::NotFound` when the user does not exist.
    async fn set_user_groups(
        &self,
        user_id: i64,
        group_type: i64,
        names: &[String],
    ) -> Result<Vec<Group>, MetaError>;

    /// The user's groups, in byte order of name, then type.
    async fn user_groups(&self, user_id: i64) -> Result<Vec<Group>, MetaError>;

    // --- Project members --------------------------------------------------------------

    /// A membership that exists already is `MetaError::Conflict`; a project, user or group
    /// that does not exist is `MetaError::NotFound`. Nothing is changed in either case.
    async fn add_member(
        &self,
        project_id: i64,
        entity: MemberEntity,
        role: i64,
    ) -> Result<Member, MetaError>;

    async fn get_member(
        &self,
        project_id: i64,
        member_id: i64,
    ) -> Result<Option<Member>, MetaError>;

    /// `false` when the project has no such member.
    async fn set_member_role(
        &self,
        project_id: i64,
        member_id: i64,
        role: i64,
    ) -> Result<bool, MetaError>;

    async fn remove_member(&self, project_id: i64, member_id: i64) -> Result<bool, MetaError>;

    /// The project's members in byte order of entity name (then users before groups),
    /// optionally only those whose name contains `name_contains` (ASCII case-insensitively).
    async fn list_members(
        &self,
        project_id: i64,
        name_contains: Option<&str>,
    ) -> Result<Vec<Member>, MetaError>;

    /// Every role the user holds in the project, directly or through any of their groups,
    /// ascending and without repeats (one query).
    async fn user_project_roles(
        &self,
        user_id: i64,
        project_id: i64,
    ) -> Result<Vec<i64>, MetaError>;

    /// Every project the user is a member of (directly or through a group), with their
    /// roles there, in byte order of project name.
    async fn user_projects(&self, user_id: i64) -> Result<Vec<ProjectRoles>, MetaError>;

    // --- Robot accounts ---------------------------------------------------------------

    /// Creates a robot and its permissions in one transaction. A taken name is
    /// `MetaError::Conflict`; a project robot's missing project is `MetaError::NotFound`.
    async fn create_robot(&self, r: &NewRobot) -> Result<Robot, MetaError>;

    async fn get_robot(&self, name: &str) -> Result<Option<Robot>, MetaError>;

    async fn get_robot_by_id(&self, id: i64) -> Result<Option<Robot>, MetaError>;

    /// Robots in byte order of name: every robot, or a project's robots.
    async fn list_robots(
        &self,
        project_id: Option<i64>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<Robot>, MetaError>;

    /// `false` when there is no such robot.
    async fn update_robot(&self, id: i64, u: &RobotUpdate) -> Result<bool, MetaError>;

    async fn set_robot_secret(&self, id: i64, secret_hash: &str) -> Result<bool, MetaError>;

    async fn delete_robot(&self, id: i64) -> Result<bool, MetaError>;

    // --- Signing keys -----------------------------------------------------------------

    /// The key in force (never more than one), if any.
    async fn signing_key_in_force(&self) -> Result<Option<SigningKey>, MetaError>;

    /// Stores `key` as the key in force unless a key is in force already; safe when
    /// several processes do it at once (one key results). Returns the key in force.
    async fn insert_signing_key_if_none(&self, key: &SigningKey) -> Result<SigningKey, MetaError>;

    /// Retires the key in force (if any) and puts `key` in force, in one transaction.
    async fn rotate_signing_key(&self, key: &SigningKey) -> Result<(), MetaError>;

    /// Retires a key; `false` when there is no such key in force.
    async fn retire_signing_key(&self, kid: &str) -> Result<bool, MetaError>;

    /// Retired keys not yet dropped, most recently retired first: a token they signed may
    /// still be valid.
    async fn retired_signing_keys(&self) -> Result<Vec<SigningKey>, MetaError>;

    /// Deletes a retired key; `false` when there is no such retired key.
    async fn drop_signing_key(&self, kid: &str) -> Result<bool, MetaError>;
}
