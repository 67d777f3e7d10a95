//! The identity domain on SQL: projects, users, groups, project members, robot accounts
//! and signing keys.
//!
//! Uniqueness is the database's: inserts are `ON CONFLICT DO NOTHING RETURNING id`, and no
//! row back means the name was taken (then a read says which). A write that adds a row
//! pointing at a project, user or group first "touches" that row (`UPDATE ... SET x = x`):
//! on PostgreSQL this locks it until the transaction ends, so a concurrent delete either
//! waits and then removes the new row too, or has already removed the row and the add
//! finds nothing; SQLite's single writer serializes them anyway. Deletes remove dependent
//! rows explicitly, in the same transaction, as `delete_manifest` does.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row};

use super::{SqlMetadataStore, placeholders};
use crate::metadata::identity::{
    Group, IdentityStore, Member, MemberEntity, NewProject, NewRobot, NewUser, Page, Project,
    ProjectQuery, ProjectRoles, Robot, RobotLevel, RobotPermission, RobotUpdate, SigningKey, User,
};
use crate::metadata::{MetaError, now_millis};

const PROJECT_COLS: &str = "id, name, public, owner_id, created_at, updated_at";
const USER_COLS: &str = "id, username, email, realname, comment, password_hash, sysadmin, \
                         oidc_issuer, oidc_subject, created_at, updated_at";
const ROBOT_COLS: &str = "id, name, description, level, project_id, secret_hash, duration_days, \
                          expires_at, disabled, created_at, updated_at";
const KEY_COLS: &str = "kid, algorithm, private_key, created_at, retired_at";
/// The member's name, for a query over `project_members pm` with [`MEMBER_JOINS`].
const MEMBER_COLS: &str = "pm.id, pm.project_id, pm.entity_type, pm.entity_id, pm.role, \
                           pm.created_at, pm.updated_at, COALESCE(u.username, g.name) AS entity_name";
const MEMBER_JOINS: &str = "LEFT JOIN users u ON pm.entity_type = 'u' AND u.id = pm.entity_id \
                            LEFT JOIN user_groups g ON pm.entity_type = 'g' AND g.id = pm.entity_id";

/// The memberships of user `$k` in `project_members`: their own and their groups'.
fn memberships_of_user(k: usize) -> String {
    format!(
        "((entity_type = 'u' AND entity_id = ${k}) OR (entity_type = 'g' AND entity_id IN \
         (SELECT group_id FROM user_group_members WHERE user_id = ${k})))"
    )
}

/// Repositories of the project `$1` (`name`), `$2` (`name/`) and `$3` (`name0`, '0' being
/// the byte after '/'): the project's own name or anything under it, never `name-x/...`.
/// A range on `repositories.name`, whose order is byte order on both dialects.
const PROJECT_REPOSITORIES: &str = "name = $1 OR (name >= $2 AND name < $3)";

fn project_repository_bounds(project: &str) -> (String, String) {
    (format!("{project}/"), format!("{project}0"))
}

/// A bound value of a query built at run time.
enum Arg {
    Int(i64),
    Text(String),
}

fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    args: &'q [Arg],
) -> Query<'q, Any, AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(i) => q.bind(*i),
            Arg::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}

/// A `LIKE` pattern for "contains `s`", ASCII case-insensitively against `lower(column)`.
fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.to_ascii_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// `LIMIT` and `OFFSET` for page `page` (from 1; 0 is taken as 1) of `size`.
fn limit_offset(page: u64, size: u64) -> (i64, i64) {
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    let skip = i64::try_from(page.max(1) - 1).unwrap_or(i64::MAX);
    (size, skip.saturating_mul(size))
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// A unique constraint refused the write (both dialects' codes).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || d.code()
                    .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}

/// The error for an identity provider's identity that belongs to another user.
fn taken(identity: Option<(&str, &str)>) -> MetaError {
    let (issuer, subject) = identity.unwrap_or_default();
    MetaError::Conflict(format!(
        "another user is already linked to subject {subject:?} of {issuer}"
    ))
}

fn count_col(row: &AnyRow) -> Result<u64, MetaError> {
    Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
}

fn project_row(r: &AnyRow) -> Result<Project, MetaError> {
    Ok(Project {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        public: r.try_get::<i64, _>("public")? != 0,
        owner_id: r.try_get("owner_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn user_row(r: &AnyRow) -> Result<User, MetaError> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: r.try_get("email")?,
        realname: r.try_get("realname")?,
        comment: r.try_get("comment")?,
        password_hash: r.try_get("password_hash")?,
        sysadmin: r.try_get::<i64, _>("sysadmin")? != 0,
        oidc_issuer: r.try_get("oidc_issuer")?,
        oidc_subject: r.try_get("oidc_subject")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn group_row(r: &AnyRow) -> Result<Group, MetaError> {
    Ok(Group {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        group_type: r.try_get("group_type")?,
    })
}

fn member_row(r: &AnyRow) -> Result<Member, MetaError> {
    let entity_type: String = r.try_get("entity_type")?;
    let entity_id: i64 = r.try_get("entity_id")?;
    let entity = match entity_type.as_str() {
        "u" => MemberEntity::User(entity_id),
        "g" => MemberEntity::Group(entity_id),
        other => {
            return Err(MetaError::Corrupt(format!(
                "project member of entity type {other:?}"
            )));
        }
    };
    Ok(Member {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        entity,
        entity_name: r
            .try_get::<Option<String>, _>("entity_name")?
            .unwrap_or_default(),
        role: r.try_get("role")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Byte order of name, users before groups of the same name.
fn sort_members(members: &mut [Member]) {
    members.sort_by(|a, b| {
        (a.entity_name.as_bytes(), a.entity.type_code() == "g", a.id).cmp(&(
            b.entity_name.as_bytes(),
            b.entity.type_code() == "g",
            b.id,
        ))
    });
}

/// A robot without its permissions.
fn robot_row(r: &AnyRow) -> Result<Robot, MetaError> {
    let level: String = r.try_get("level")?;
    Ok(Robot {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        level: RobotLevel::parse(&level)
            .ok_or_else(|| MetaError::Corrupt(format!("robot of level {level:?}")))?,
        project_id: r.try_get("project_id")?,
        secret_hash: r.try_get("secret_hash")?,
        duration_days: r.try_get("duration_days")?,
        expires_at: r.try_get("expires_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        permissions: Vec::new(),
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn permission_row(r: &AnyRow) -> Result<(i64, RobotPermission), MetaError> {
    Ok((
        r.try_get("robot_id")?,
        RobotPermission {
            kind: r.try_get("kind")?,
            namespace: r.try_get("namespace")?,
            resource: r.try_get("resource")?,
            action: r.try_get("action")?,
        },
    ))
}

fn key_row(r: &AnyRow) -> Result<SigningKey, MetaError> {
    Ok(SigningKey {
        kid: r.try_get("kid")?,
        algorithm: r.try_get("algorithm")?,
        private_key: r.try_get("private_key")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

fn entity_label(entity: MemberEntity) -> &'static str {
    match entity {
        MemberEntity::User(_) => "user",
        MemberEntity::Group(_) => "group",
    }
}

/// Locks a project row for the rest of the transaction; its name, or `None` when it does
/// not exist.
async fn touch_project(c: &mut AnyConnection, id: i64) -> Result<Option<String>, MetaError> {
    let row =
        sqlx::query("UPDATE projects SET updated_at = updated_at WHERE id = $1 RETURNING name")
            .bind(id)
            .fetch_optional(c)
            .await?;
    Ok(row.map(|r| r.try_get("name")).transpose()?)
}

/// Locks a user or group row for the rest of the transaction; its name, or `None`.
async fn touch_entity(
    c: &mut AnyConnection,
    entity: MemberEntity,
) -> Result<Option<String>, MetaError> {
    let sql = match entity {
        MemberEntity::User(_) => {
            "UPDATE users SET updated_at = updated_at WHERE id = $1 RETURNING username AS name"
        }
        MemberEntity::Group(_) => "UPDATE user_groups SET name = name WHERE id = $1 RETURNING name",
    };
    let row = sqlx::query(sql).bind(entity.id()).fetch_optional(c).await?;
    Ok(row.map(|r| r.try_get("name")).transpose()?)
}

/// Finds or creates a group inside a transaction.
async fn ensure_group_on(
    c: &mut AnyConnection,
    name: &str,
    group_type: i64,
) -> Result<Group, MetaError> {
    sqlx::query(
        "INSERT INTO user_groups (name, group_type, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(group_type)
    .bind(now_millis())
    .execute(&mut *c)
    .await?;
    let row = sqlx::query(
        "SELECT id, name, group_type FROM user_groups WHERE name = $1 AND group_type = $2",
    )
    .bind(name)
    .bind(group_type)
    .fetch_one(&mut *c)
    .await?;
    group_row(&row)
}

async fn insert_permissions(
    c: &mut AnyConnection,
    robot_id: i64,
    permissions: &BTreeSet<&RobotPermission>,
) -> Result<(), MetaError> {
    for p in permissions {
        sqlx::query(
            "INSERT INTO robot_permissions (robot_id, kind, namespace, resource, action) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(robot_id)
        .bind(p.kind.as_str())
        .bind(p.namespace.as_str())
        .bind(p.resource.as_str())
        .bind(p.action.as_str())
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Why an insert into `users` found a conflict, as the error to report.
async fn user_conflict(c: &mut AnyConnection, u: &NewUser) -> Result<MetaError, MetaError> {
    let name_taken = sqlx::query("SELECT 1 FROM users WHERE username = $1")
        .bind(u.username.as_str())
        .fetch_optional(&mut *c)
        .await?
        .is_some();
    if name_taken {
        return Ok(MetaError::Conflict(format!(
            "user name {} is taken",
            u.username
        )));
    }
    if let Some(email) = email_of(u) {
        let email_taken = sqlx::query("SELECT 1 FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut *c)
            .await?
            .is_some();
        if email_taken {
            return Ok(MetaError::Conflict(format!(
                "email {email} belongs to another user"
            )));
        }
    }
    Ok(MetaError::Conflict(
        "this OIDC identity belongs to another user".to_string(),
    ))
}

fn email_of(u: &NewUser) -> Option<&str> {
    u.email.as_deref().filter(|e| !e.is_empty())
}

impl SqlMetadataStore {
    /// Inserts a user unless a unique column is taken; its id, or `None`.
    async fn insert_user(
        &self,
        c: &mut AnyConnection,
        u: &NewUser,
        now: i64,
    ) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query(
            "INSERT INTO users (username, email, realname, comment, password_hash, sysadmin, \
             oidc_issuer, oidc_subject, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(u.username.as_str())
        .bind(email_of(u))
        .bind(u.realname.as_str())
        .bind(u.comment.as_str())
        .bind(u.password_hash.as_deref())
        .bind(flag(u.sysadmin))
        .bind(u.oidc_issuer.as_deref())
        .bind(u.oidc_subject.as_deref())
        .bind(now)
        .fetch_optional(&mut *c)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Fills in the permissions of `robots` (one query).
    async fn with_permissions(&self, mut robots: Vec<Robot>) -> Result<Vec<Robot>, MetaError> {
        if robots.is_empty() {
            return Ok(robots);
        }
        let sql = format!(
            "SELECT robot_id, kind, namespace, resource, action FROM robot_permissions \
             WHERE robot_id IN ({})",
            placeholders(1, robots.len())
        );
        let mut q = sqlx::query(&sql);
        for r in &robots {
            q = q.bind(r.id);
        }
        let mut by_robot: BTreeMap<i64, BTreeSet<RobotPermission>> = BTreeMap::new();
        for row in self.read.fetch_all(q).await? {
            let (id, p) = permission_row(&row)?;
            by_robot.entry(id).or_default().insert(p);
        }
        for r in &mut robots {
            r.permissions = by_robot
                .remove(&r.id)
                .unwrap_or_default()
                .into_iter()
                .collect();
        }
        Ok(robots)
    }

    /// One robot with its permissions, in one query (the token endpoint reads a robot on
    /// every request: one round trip instead of two).
    async fn robot_where(&self, column: &str, value: Arg) -> Result<Option<Robot>, MetaError> {
        let cols = ROBOT_COLS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {cols}, p.kind AS p_kind, p.namespace AS p_namespace, \
             p.resource AS p_resource, p.action AS p_action \
             FROM robots r LEFT JOIN robot_permissions p ON p.robot_id = r.id \
             WHERE r.{column} = $1"
        );
        let args = [value];
        let rows = self
            .read
            .fetch_all(bind_all(sqlx::query(&sql), &args))
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut robot = robot_row(first)?;
        let mut permissions = BTreeSet::new();
        for row in &rows {
            if let Some(kind) = row.try_get::<Option<String>, _>("p_kind")? {
                permissions.insert(RobotPermission {
                    kind,
                    namespace: row.try_get("p_namespace")?,
                    resource: row.try_get("p_resource")?,
                    action: row.try_get("p_action")?,
                });
            }
        }
        robot.permissions = permissions.into_iter().collect();
        Ok(Some(robot))
    }

    /// `SELECT COUNT(*)` and one page of `SELECT {cols}` from `table` under `conditions`.
    async fn page_of(
        &self,
        cols: &str,
        table: &str,
        conditions: &[String],
        args: Vec<Arg>,
        order: &str,
        (page, page_size): (u64, u64),
    ) -> Result<(Vec<AnyRow>, u64), MetaError> {
        let wh = where_clause(conditions);
        let count_sql = format!("SELECT COUNT(*) AS n FROM {table}{wh}");
        let total = count_col(
            &self
                .read
                .fetch_one(bind_all(sqlx::query(&count_sql), &args))
                .await?,
        )?;
        let (limit, offset) = limit_offset(page, page_size);
        let mut args = args;
        args.push(Arg::Int(limit));
        args.push(Arg::Int(offset));
        let n = args.len();
        let page_sql = format!(
            "SELECT {cols} FROM {table}{wh} ORDER BY {order} LIMIT ${} OFFSET ${n}",
            n - 1
        );
        let rows = if limit == 0 {
            Vec::new()
        } else {
            self.read
                .fetch_all(bind_all(sqlx::query(&page_sql), &args))
                .await?
        };
        Ok((rows, total))
    }
}

#[async_trait]
impl IdentityStore for SqlMetadataStore {
    // --- Projects ---------------------------------------------------------------------

    async fn create_project(&self, p: &NewProject) -> Result<Project, MetaError> {
        let now = now_millis();
        let mut tx = self.write.begin().await?;
        let owner_name = match p.owner_id {
            Some(owner) => Some(
                touch_entity(&mut tx, MemberEntity::User(owner))
                    .await?
                    .ok_or_else(|| MetaError::NotFound(format!("user {owner} does not exist")))?,
            ),
            None => None,
        };
        let row = sqlx::query(
            "INSERT INTO projects (name, public, owner_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(p.name.as_str())
        .bind(flag(p.public))
        .bind(p.owner_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!(
                "project {} already exists",
                p.name
            )));
        };
        let id: i64 = row.try_get("id")?;
        if let (Some(owner), Some(role), Some(_)) = (p.owner_id, p.owner_role, owner_name) {
            sqlx::query(
                "INSERT INTO project_members (project_id, entity_type, entity_id, role, created_at, updated_at) \
                 VALUES ($1, 'u', $2, $3, $4, $4)",
            )
            .bind(id)
            .bind(owner)
            .bind(role)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Project {
            id,
            name: p.name.clone(),
            public: p.public,
            owner_id: p.owner_id,
            created_at: now,
            updated_at: now,
        })
    }

    async fn get_project(&self, name: &str) -> Result<Option<Project>, MetaError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE name = $1");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(name))
            .await?;
        row.as_ref().map(project_row).transpose()
    }

    async fn get_project_by_id(&self, id: i64) -> Result<Option<Project>, MetaError> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1");
        let row = self.read.fetch_optional(sqlx::query(&sql).bind(id)).await?;
        row.as_ref().map(project_row).transpose()
    }

    async fn list_projects(
        &self,
        q: &ProjectQuery,
        page: u64,
        page_size: u64,
    ) -> Result<Page<Project>, MetaError> {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(name) = &q.name_contains {
            args.push(Arg::Text(contains_pattern(name)));
            conditions.push(format!("lower(name) LIKE ${} ESCAPE '\\'", args.len()));
        }
        if let Some(public) = q.public {
            args.push(Arg::Int(flag(public)));
            conditions.push(format!("public = ${}", args.len()));
        }
        if let Some(user) = q.visible_to {
            args.push(Arg::Int(user));
            conditions.push(format!(
                "(public = 1 OR id IN (SELECT project_id FROM project_members WHERE {}))",
                memberships_of_user(args.len())
            ));
        }
        let (rows, total) = self
            .page_of(
                PROJECT_COLS,
                "projects",
                &conditions,
                args,
                "name",
                (page, page_size),
            )
            .await?;
        Ok(Page {
            items: rows.iter().map(project_row).collect::<Result<_, _>>()?,
            total,
        })
    }

    async fn set_project_public(&self, id: i64, public: bool) -> Result<bool, MetaError> {
        let done = sqlx::query("UPDATE projects SET public = $1, updated_at = $2 WHERE id = $3")
            .bind(flag(public))
            .bind(now_millis())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn project_has_repositories(&self, name: &str) -> Result<bool, MetaError> {
        let (lo, hi) = project_repository_bounds(name);
        let sql = format!("SELECT 1 FROM repositories WHERE {PROJECT_REPOSITORIES} LIMIT 1");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(name).bind(lo).bind(hi))
            .await?;
        Ok(row.is_some())
    }

    async fn delete_project(
        &self,
        id: i64,
        cascade: bool,
    ) -> Result<Option<Vec<String>>, MetaError> {
        let _changed = self.manifests_changed();
        let mut tx = self.write.begin().await?;
        let Some(name) = touch_project(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let (lo, hi) = project_repository_bounds(&name);
        let sql = format!("SELECT name FROM repositories WHERE {PROJECT_REPOSITORIES}");
        let mut repositories: Vec<String> = sqlx::query(&sql)
            .bind(name.as_str())
            .bind(lo.as_str())
            .bind(hi.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?;
        repositories.sort_unstable();
        if !repositories.is_empty() {
            if !cascade {
                tx.rollback().await?;
                return Err(MetaError::ProjectNotEmpty {
                    project: name,
                    repositories: repositories.len() as u64,
                });
            }
            let held = format!(
                "repository IN (SELECT name FROM repositories WHERE {PROJECT_REPOSITORIES})"
            );
            for table in [
                "tags",
                "manifest_references",
                "manifests",
                "repository_blobs",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE {held}"))
                    .bind(name.as_str())
                    .bind(lo.as_str())
                    .bind(hi.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&format!(
                "DELETE FROM repositories WHERE {PROJECT_REPOSITORIES}"
            ))
            .bind(name.as_str())
            .bind(lo.as_str())
            .bind(hi.as_str())
            .execute(&mut *tx)
            .await?;
        }
        // Upload sessions need no repository row; equality on a prefix holds under any
        // collation. Their data in the blob store is purged as orphaned.
        sqlx::query(
            "DELETE FROM uploads WHERE repository = $1 OR substr(repository, 1, length($2)) = $2",
        )
        .bind(name.as_str())
        .bind(lo.as_str())
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM project_members WHERE project_id = $1",
            "DELETE FROM robot_permissions WHERE robot_id IN (SELECT id FROM robots WHERE project_id = $1)",
            "DELETE FROM robots WHERE project_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        // System robots' permissions on it: a project created later under the same name
        // must not inherit them.
        sqlx::query("DELETE FROM robot_permissions WHERE namespace = $1")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(repositories))
    }

    // --- Users ------------------------------------------------------------------------

    async fn create_user(&self, u: &NewUser) -> Result<User, MetaError> {
        let now = now_millis();
        let mut c = self.write.acquire().await?;
        match self.insert_user(&mut c, u, now).await? {
            Some(id) => Ok(new_user_record(id, u, now)),
            None => Err(user_conflict(&mut c, u).await?),
        }
    }

    async fn create_user_unless_exists(&self, u: &NewUser) -> Result<(User, bool), MetaError> {
        let now = now_millis();
        let mut c = self.write.acquire().await?;
        if let Some(id) = self.insert_user(&mut c, u, now).await? {
            return Ok((new_user_record(id, u, now), true));
        }
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = $1");
        match sqlx::query(&sql)
            .bind(u.username.as_str())
            .fetch_optional(&mut *c)
            .await?
        {
            Some(row) => Ok((user_row(&row)?, false)),
            None => Err(user_conflict(&mut c, u).await?),
        }
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, MetaError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = $1");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(username))
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn get_user_by_id(&self, id: i64) -> Result<Option<User>, MetaError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
        let row = self.read.fetch_optional(sqlx::query(&sql).bind(id)).await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn get_user_by_oidc(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, MetaError> {
        let sql =
            format!("SELECT {USER_COLS} FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(issuer).bind(subject))
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> Result<Option<User>, MetaError> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE email = $1");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(email))
            .await?;
        row.as_ref().map(user_row).transpose()
    }

    async fn set_user_oidc(
        &self,
        id: i64,
        identity: Option<(&str, &str)>,
    ) -> Result<bool, MetaError> {
        let (issuer, subject) = identity.unzip();
        let done = sqlx::query(
            "UPDATE users SET oidc_issuer = $1, oidc_subject = $2, updated_at = $3 WHERE id = $4 \
             AND NOT EXISTS (SELECT 1 FROM users o WHERE o.oidc_issuer = $1 \
             AND o.oidc_subject = $2 AND o.id <> $4)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(now_millis())
        .bind(id)
        .execute(&self.write)
        .await;
        let done = match done {
            Ok(d) => d,
            Err(e) if is_unique_violation(&e) => return Err(taken(identity)),
            Err(e) => return Err(e.into()),
        };
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        // Nothing changed: no such user, or another user has the identity.
        if self.get_user_by_id(id).await?.is_none() {
            return Ok(false);
        }
        Err(taken(identity))
    }

    async fn list_users(
        &self,
        username_contains: Option<&str>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<User>, MetaError> {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(name) = username_contains {
            args.push(Arg::Text(contains_pattern(name)));
            conditions.push("lower(username) LIKE $1 ESCAPE '\\'".to_string());
        }
        let (rows, total) = self
            .page_of(
                USER_COLS,
                "users",
                &conditions,
                args,
                "username",
                (page, page_size),
            )
            .await?;
        Ok(Page {
            items: rows.iter().map(user_row).collect::<Result<_, _>>()?,
            total,
        })
    }

    async fn count_users(&self) -> Result<u64, MetaError> {
        count_col(
            &self
                .read
                .fetch_one(sqlx::query("SELECT COUNT(*) AS n FROM users"))
                .await?,
        )
    }

    async fn set_password_hash(&self, id: i64, hash: Option<&str>) -> Result<bool, MetaError> {
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now_millis())
                .bind(id)
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_sysadmin(&self, id: i64, sysadmin: bool) -> Result<bool, MetaError> {
        let done = sqlx::query("UPDATE users SET sysadmin = $1, updated_at = $2 WHERE id = $3")
            .bind(flag(sysadmin))
            .bind(now_millis())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, id: i64) -> Result<bool, MetaError> {
        let mut tx = self.write.begin().await?;
        // Projects first, then the user: the order `add_member` locks them in.
        sqlx::query("UPDATE projects SET owner_id = NULL WHERE owner_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if touch_entity(&mut tx, MemberEntity::User(id))
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM project_members WHERE entity_type = 'u' AND entity_id = $1",
            "DELETE FROM user_group_members WHERE user_id = $1",
            "DELETE FROM user_secrets WHERE user_id = $1",
            "DELETE FROM web_sessions WHERE user_id = $1",
            "DELETE FROM oidc_sessions WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    // --- Groups -----------------------------------------------------------------------

    async fn ensure_group(&self, name: &str, group_type: i64) -> Result<Group, MetaError> {
        let mut c = self.write.acquire().await?;
        ensure_group_on(&mut c, name, group_type).await
    }

    async fn get_group(&self, id: i64) -> Result<Option<Group>, MetaError> {
        let row = self
            .read
            .fetch_optional(
                sqlx::query("SELECT id, name, group_type FROM user_groups WHERE id = $1").bind(id),
            )
            .await?;
        row.as_ref().map(group_row).transpose()
    }

    async fn set_user_groups(
        &self,
        user_id: i64,
        group_type: i64,
        names: &[String],
    ) -> Result<Vec<Group>, MetaError> {
        let names: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut tx = self.write.begin().await?;
        if touch_entity(&mut tx, MemberEntity::User(user_id))
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Err(MetaError::NotFound(format!(
                "user {user_id} does not exist"
            )));
        }
        sqlx::query(
            "DELETE FROM user_group_members WHERE user_id = $1 AND group_id IN \
             (SELECT id FROM user_groups WHERE group_type = $2)",
        )
        .bind(user_id)
        .bind(group_type)
        .execute(&mut *tx)
        .await?;
        let mut groups = Vec::with_capacity(names.len());
        for name in names {
            let g = ensure_group_on(&mut tx, name, group_type).await?;
            sqlx::query("INSERT INTO user_group_members (user_id, group_id) VALUES ($1, $2)")
                .bind(user_id)
                .bind(g.id)
                .execute(&mut *tx)
                .await?;
            groups.push(g);
        }
        tx.commit().await?;
        Ok(groups)
    }

    async fn user_groups(&self, user_id: i64) -> Result<Vec<Group>, MetaError> {
        let rows = self
            .read
            .fetch_all(
                sqlx::query(
                    "SELECT g.id, g.name, g.group_type FROM user_group_members m \
                     JOIN user_groups g ON g.id = m.group_id WHERE m.user_id = $1 \
                     ORDER BY g.name, g.group_type",
                )
                .bind(user_id),
            )
            .await?;
        rows.iter().map(group_row).collect()
    }

    // --- Project members --------------------------------------------------------------

    async fn add_member(
        &self,
        project_id: i64,
        entity: MemberEntity,
        role: i64,
    ) -> Result<Member, MetaError> {
        let now = now_millis();
        let mut tx = self.write.begin().await?;
        let Some(project) = touch_project(&mut tx, project_id).await? else {
            tx.rollback().await?;
            return Err(MetaError::NotFound(format!(
                "project {project_id} does not exist"
            )));
        };
        let Some(entity_name) = touch_entity(&mut tx, entity).await? else {
            tx.rollback().await?;
            return Err(MetaError::NotFound(format!(
                "{} {} does not exist",
                entity_label(entity),
                entity.id()
            )));
        };
        let row = sqlx::query(
            "INSERT INTO project_members (project_id, entity_type, entity_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(project_id)
        .bind(entity.type_code())
        .bind(entity.id())
        .bind(role)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!(
                "{} {entity_name} is already a member of project {project}",
                entity_label(entity)
            )));
        };
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok(Member {
            id,
            project_id,
            entity,
            entity_name,
            role,
            created_at: now,
            updated_at: now,
        })
    }

    async fn get_member(
        &self,
        project_id: i64,
        member_id: i64,
    ) -> Result<Option<Member>, MetaError> {
        let sql = format!(
            "SELECT {MEMBER_COLS} FROM project_members pm {MEMBER_JOINS} \
             WHERE pm.project_id = $1 AND pm.id = $2"
        );
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(project_id).bind(member_id))
            .await?;
        row.as_ref().map(member_row).transpose()
    }

    async fn set_member_role(
        &self,
        project_id: i64,
        member_id: i64,
        role: i64,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "UPDATE project_members SET role = $1, updated_at = $2 WHERE project_id = $3 AND id = $4",
        )
        .bind(role)
        .bind(now_millis())
        .bind(project_id)
        .bind(member_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_member(&self, project_id: i64, member_id: i64) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND id = $2")
            .bind(project_id)
            .bind(member_id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_members(
        &self,
        project_id: i64,
        name_contains: Option<&str>,
    ) -> Result<Vec<Member>, MetaError> {
        let mut sql = format!(
            "SELECT {MEMBER_COLS} FROM project_members pm {MEMBER_JOINS} WHERE pm.project_id = $1"
        );
        let mut args = vec![Arg::Int(project_id)];
        if let Some(name) = name_contains {
            args.push(Arg::Text(contains_pattern(name)));
            sql.push_str(" AND lower(COALESCE(u.username, g.name)) LIKE $2 ESCAPE '\\'");
        }
        let rows = self
            .read
            .fetch_all(bind_all(sqlx::query(&sql), &args))
            .await?;
        let mut members = rows.iter().map(member_row).collect::<Result<Vec<_>, _>>()?;
        sort_members(&mut members);
        Ok(members)
    }

    async fn user_project_roles(
        &self,
        user_id: i64,
        project_id: i64,
    ) -> Result<Vec<i64>, MetaError> {
        let sql = format!(
            "SELECT DISTINCT role FROM project_members WHERE project_id = $1 AND {} ORDER BY role",
            memberships_of_user(2)
        );
        let rows = self
            .read
            .fetch_all(sqlx::query(&sql).bind(project_id).bind(user_id))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("role").map_err(MetaError::from))
            .collect()
    }

    async fn user_projects(&self, user_id: i64) -> Result<Vec<ProjectRoles>, MetaError> {
        let sql = format!(
            "SELECT p.id, p.name, p.public, p.owner_id, p.created_at, p.updated_at, m.role \
             FROM projects p JOIN (SELECT DISTINCT project_id, role FROM project_members WHERE {}) m \
             ON m.project_id = p.id ORDER BY p.name, m.role",
            memberships_of_user(1)
        );
        let rows = self.read.fetch_all(sqlx::query(&sql).bind(user_id)).await?;
        let mut out: Vec<ProjectRoles> = Vec::new();
        for r in &rows {
            let project = project_row(r)?;
            let role: i64 = r.try_get("role")?;
            match out.last_mut() {
                Some(last) if last.project.id == project.id => last.roles.push(role),
                _ => out.push(ProjectRoles {
                    project,
                    roles: vec![role],
                }),
            }
        }
        Ok(out)
    }

    // --- Robot accounts ---------------------------------------------------------------

    async fn create_robot(&self, r: &NewRobot) -> Result<Robot, MetaError> {
        let now = now_millis();
        let mut tx = self.write.begin().await?;
        if let Some(project_id) = r.project_id {
            if touch_project(&mut tx, project_id).await?.is_none() {
                tx.rollback().await?;
                return Err(MetaError::NotFound(format!(
                    "project {project_id} does not exist"
                )));
            }
        }
        let row = sqlx::query(
            "INSERT INTO robots (name, description, level, project_id, secret_hash, duration_days, \
             expires_at, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(r.name.as_str())
        .bind(r.description.as_str())
        .bind(r.level.as_str())
        .bind(r.project_id)
        .bind(r.secret_hash.as_str())
        .bind(r.duration_days)
        .bind(r.expires_at)
        .bind(flag(r.disabled))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!(
                "robot account {} already exists",
                r.name
            )));
        };
        let id: i64 = row.try_get("id")?;
        let permissions: BTreeSet<&RobotPermission> = r.permissions.iter().collect();
        insert_permissions(&mut tx, id, &permissions).await?;
        tx.commit().await?;
        Ok(Robot {
            id,
            name: r.name.clone(),
            description: r.description.clone(),
            level: r.level,
            project_id: r.project_id,
            secret_hash: r.secret_hash.clone(),
            duration_days: r.duration_days,
            expires_at: r.expires_at,
            disabled: r.disabled,
            permissions: permissions.into_iter().cloned().collect(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn get_robot(&self, name: &str) -> Result<Option<Robot>, MetaError> {
        self.robot_where("name", Arg::Text(name.to_string())).await
    }

    async fn get_robot_by_id(&self, id: i64) -> Result<Option<Robot>, MetaError> {
        self.robot_where("id", Arg::Int(id)).await
    }

    async fn list_robots(
        &self,
        project_id: Option<i64>,
        page: u64,
        page_size: u64,
    ) -> Result<Page<Robot>, MetaError> {
        let mut conditions = Vec::new();
        let mut args = Vec::new();
        if let Some(p) = project_id {
            args.push(Arg::Int(p));
            conditions.push("project_id = $1".to_string());
        }
        let (rows, total) = self
            .page_of(
                ROBOT_COLS,
                "robots",
                &conditions,
                args,
                "name",
                (page, page_size),
            )
            .await?;
        let robots = rows.iter().map(robot_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items: self.with_permissions(robots).await?,
            total,
        })
    }

    async fn update_robot(&self, id: i64, u: &RobotUpdate) -> Result<bool, MetaError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE robots SET description = $1, disabled = $2, duration_days = $3, \
             expires_at = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(u.description.as_str())
        .bind(flag(u.disabled))
        .bind(u.duration_days)
        .bind(u.expires_at)
        .bind(now_millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM robot_permissions WHERE robot_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_permissions(&mut tx, id, &u.permissions.iter().collect()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_robot_secret(&self, id: i64, secret_hash: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("UPDATE robots SET secret_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(secret_hash)
            .bind(now_millis())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_robot(&self, id: i64) -> Result<bool, MetaError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM robot_permissions WHERE robot_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM robots WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // --- Signing keys -----------------------------------------------------------------

    async fn signing_key_in_force(&self) -> Result<Option<SigningKey>, MetaError> {
        let sql = format!("SELECT {KEY_COLS} FROM signing_keys WHERE retired_at IS NULL");
        let row = self.read.fetch_optional(sqlx::query(&sql)).await?;
        row.as_ref().map(key_row).transpose()
    }

    async fn insert_signing_key_if_none(&self, key: &SigningKey) -> Result<SigningKey, MetaError> {
        let mut c = self.write.acquire().await?;
        // The unique index on the keys in force makes this a no-op when one is in force,
        // including one another process is inserting right now (PostgreSQL waits for it).
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(key.kid.as_str())
        .bind(key.algorithm.as_str())
        .bind(key.private_key.as_str())
        .bind(key.created_at)
        .execute(&mut *c)
        .await?;
        let sql = format!("SELECT {KEY_COLS} FROM signing_keys WHERE retired_at IS NULL");
        match sqlx::query(&sql).fetch_optional(&mut *c).await? {
            Some(row) => key_row(&row),
            None => Err(MetaError::Conflict(format!(
                "signing key {} exists already, retired; and no key is in force",
                key.kid
            ))),
        }
    }

    async fn rotate_signing_key(&self, key: &SigningKey) -> Result<(), MetaError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, created_at, retired_at) \
             VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING RETURNING kid",
        )
        .bind(key.kid.as_str())
        .bind(key.algorithm.as_str())
        .bind(key.private_key.as_str())
        .bind(key.created_at)
        .fetch_optional(&mut *tx)
        .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!(
                "signing key {} was not put in force: its kid is taken, or another key was \
                 put in force at the same time",
                key.kid
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn retire_signing_key(&self, kid: &str) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL",
        )
        .bind(now_millis())
        .bind(kid)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn retired_signing_keys(&self) -> Result<Vec<SigningKey>, MetaError> {
        let sql = format!("SELECT {KEY_COLS} FROM signing_keys WHERE retired_at IS NOT NULL");
        let rows = self.read.fetch_all(sqlx::query(&sql)).await?;
        let mut keys = rows.iter().map(key_row).collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| {
            (b.retired_at, b.created_at, &b.kid).cmp(&(a.retired_at, a.created_at, &a.kid))
        });
        Ok(keys)
    }

    async fn drop_signing_key(&self, kid: &str) -> Result<bool, MetaError> {
        let done =
            sqlx::query("DELETE FROM signing_keys WHERE kid = $1 AND retired_at IS NOT NULL")
                .bind(kid)
                .execute(&self.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn new_user_record(id: i64, u: &NewUser, now: i64) -> User {
    User {
        id,
        username: u.username.clone(),
        email: email_of(u).map(str::to_owned),
        realname: u.realname.clone(),
        comment: u.comment.clone(),
        password_hash: u.password_hash.clone(),
        sysadmin: u.sysadmin,
        oidc_issuer: u.oidc_issuer.clone(),
        oidc_subject: u.oidc_subject.clone(),
        created_at: now,
        updated_at: now,
    }
}
