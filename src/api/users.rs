//! `/api/v2.0/users`: local users, as Harbor's API manages them — system admins list,
//! create, delete and promote users and set passwords; a user changes their own password
//! with the old one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::{Api, ApiError, ApiResult, Paging, json_body, signed_in, timestamp};
use crate::auth::builtin::Resolved;
use crate::auth::secrets;
use crate::http::{Query, header_value};
use crate::metadata::identity::{NewUser, User};

/// Harbor's `UserResp`: a user as the API shows it (never a password or its hash).
#[derive(Serialize, ToSchema)]
pub struct UserResp {
    user_id: i64,
    username: String,
    email: String,
    realname: String,
    comment: String,
    sysadmin_flag: bool,
    admin_role_in_auth: bool,
    /// RFC 3339, UTC.
    creation_time: String,
    update_time: String,
    /// The identity provider's account this user signs in with (absent for local users).
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc_user_meta: Option<OidcUserInfo>,
}

/// Harbor's `OIDCUserInfo`. `secret` is always empty: Berth keeps only a digest of a CLI
/// secret, which is shown once when it is made (`PUT /users/{id}/cli_secret` or the
/// profile page).
#[derive(Serialize, ToSchema)]
pub struct OidcUserInfo {
    id: i64,
    user_id: i64,
    /// The subject followed by the issuer, as Harbor joins them.
    subiss: String,
    secret: String,
    creation_time: String,
    update_time: String,
}

impl From<&User> for UserResp {
    fn from(u: &User) -> UserResp {
        UserResp {
            user_id: u.id,
            username: u.username.clone(),
            email: u.email.clone().unwrap_or_default(),
            realname: u.realname.clone(),
            comment: u.comment.clone(),
            sysadmin_flag: u.sysadmin,
            admin_role_in_auth: false,
            creation_time: timestamp(u.created_at),
            update_time: timestamp(u.updated_at),
            oidc_user_meta: match (&u.oidc_issuer, &u.oidc_subject) {
                (Some(issuer), Some(subject)) => Some(OidcUserInfo {
                    id: u.id,
                    user_id: u.id,
                    subiss: format!("{subject}{issuer}"),
                    secret: String::new(),
                    creation_time: timestamp(u.created_at),
                    update_time: timestamp(u.updated_at),
                }),
                _ => None,
            },
        }
    }
}

/// Harbor's password rule: 8 to 128 characters with an upper-case and a lower-case letter
/// and a digit.
fn check_password(p: &str) -> ApiResult<()> {
    let ok = (8..=128).contains(&p.chars().count())
        && p.chars().any(|c| c.is_ascii_uppercase())
        && p.chars().any(|c| c.is_ascii_lowercase())
        && p.chars().any(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a password needs 8 to 128 characters with an upper-case letter, a lower-case letter and a digit",
        ))
    }
}

fn require_admin(who: &Resolved) -> ApiResult<()> {
    if who.is_sysadmin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only system administrators may do this",
        ))
    }
}

async fn hash(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                e.to_string(),
            )
        })
}

async fn user_by_id(api: &Api, id: &str) -> ApiResult<User> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("user id {id:?} is not a number")))?;
    api.state
        .content
        .metadata()
        .get_user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {id} not found")))
}

/// Local users: system admins only.
#[utoipa::path(
    get,
    path = "/users",
    operation_id = "listUsers",
    tag = "user",
    params(
        Paging,
        ("q" = Option<String>, Query, description = "`username=~<part>`: only users whose name contains it"),
    ),
    responses(
        (status = 200, description = "A page of users", body = [UserResp],
            headers(("X-Total-Count" = u64, description = "How many users match"))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
pub async fn list(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    require_admin(&who)?;
    let q = Query(uri.query().unwrap_or(""));
    let (page, size) = super::paging(&q);
    let contains = q.one("q").and_then(|t| {
        t.strip_prefix("username=")
            .map(|v| v.trim_start_matches('~').to_string())
    });
    let result = api
        .state
        .content
        .metadata()
        .list_users(contains.as_deref(), page, size)
        .await?;
    let json: Vec<UserResp> = result.items.iter().map(UserResp::from).collect();
    let mut resp = Json(json).into_response();
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(result.total));
    Ok(resp)
}

/// Harbor's `UserCreationReq`.
#[derive(Deserialize, ToSchema)]
#[schema(as = UserCreationReq)]
pub struct UserReq {
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    realname: String,
    /// 8 to 128 characters with an upper-case letter, a lower-case letter and a digit.
    password: String,
    #[serde(default)]
    comment: String,
}

/// Creates a local user: system admins only.
#[utoipa::path(
    post,
    path = "/users",
    operation_id = "createUser",
    tag = "user",
    request_body = UserReq,
    responses(
        (status = 201, description = "Created",
            headers(("Location" = String, description = "/api/v2.0/users/{user_id}"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
)]
pub async fn create(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let who = signed_in(&api, &headers).await?;
    require_admin(&who)?;
    let req: UserReq = json_body(&body, "a user")?;
    let name = &req.username;
    crate::admin::check_username(name, &api.robot_prefix).map_err(ApiError::bad_request)?;
    check_password(&req.password)?;
    let user = api
        .state
        .content
        .metadata()
        .create_user(&NewUser {
            username: req.username,
            email: req.email.filter(|e| !e.is_empty()),
            realname: req.realname,
            comment: req.comment,
            password_hash: Some(hash(req.password).await?),
            ..Default::default()
        })
        .await?;
    let mut resp = StatusCode::CREATED.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        header_value(format!("/api/v2.0/users/{}", user.id)),
    );
    Ok(resp)
}

/// A user: system admins, or the user themself.
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    operation_id = "getUser",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserResp),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<UserResp>> {
    let who = signed_in(&api, &headers).await?;
    let user = user_by_id(&api, &id).await?;
    if !who.is_sysadmin() && who.user_id != Some(user.id) {
        return Err(ApiError::forbidden(
            "only system administrators see other users",
        ));
    }
    Ok(Json(UserResp::from(&user)))
}

/// Harbor's `PasswordReq`: `old_password` is needed when users change their own.
#[derive(Deserialize, ToSchema)]
pub struct PasswordReq {
    #[serde(default)]
    old_password: String,
    new_password: String,
}

/// Sets a user's password.
///
/// A user their own, with the old one; a system admin anyone else's, without it.
#[utoipa::path(
    put,
    path = "/users/{user_id}/password",
    operation_id = "updateUserPassword",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = PasswordReq,
    responses(
        (status = 200, description = "Changed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn password(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let user = user_by_id(&api, &id).await?;
    let req: PasswordReq = json_body(&body, "a password change")?;
    let own = who.user_id == Some(user.id);
    if own {
        let old_ok = user
            .password_hash
            .as_deref()
            .is_some_and(|h| secrets::password_matches(&req.old_password, h));
        if !old_ok {
            return Err(ApiError::forbidden("the old password is wrong"));
        }
    } else {
        require_admin(&who)?;
    }
    check_password(&req.new_password)?;
    api.state
        .content
        .metadata()
        .set_password_hash(user.id, Some(&hash(req.new_password).await?))
        .await?;
    Ok(StatusCode::OK)
}

/// Harbor's `OIDCCliSecretReq`.
#[derive(Deserialize, ToSchema)]
#[schema(as = OIDCCliSecretReq)]
pub struct CliSecretReq {
    secret: String,
}

/// Sets a user's CLI secret to the one given (Harbor's way of rotating it from scripts):
/// the user themselves or a system admin; the old secret stops working at once. Berth keeps
/// only a digest, so the secret is never shown again.
#[utoipa::path(
    put,
    path = "/users/{user_id}/cli_secret",
    operation_id = "setCliSecret",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = CliSecretReq,
    responses(
        (status = 200, description = "Set"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn cli_secret(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    let user = user_by_id(&api, &id).await?;
    if who.is_narrowed() || (who.user_id != Some(user.id) && !who.is_sysadmin()) {
        return Err(ApiError::forbidden(
            "only the user (signed in with their password or CLI secret) or a system admin sets a CLI secret",
        ));
    }
    let req: CliSecretReq = json_body(&body, "a CLI secret")?;
    check_password(&req.secret)?;
    api.state
        .content
        .metadata()
        .replace_cli_secret(user.id, &secrets::secret_digest(&req.secret))
        .await?;
    Ok(StatusCode::OK)
}

/// The identity a user is known by at the OpenID Connect provider.
#[derive(Deserialize, ToSchema)]
pub struct OidcIdentityReq {
    /// The provider's issuer URL; default: the configured `auth.oidc.issuer`.
    #[serde(default)]
    issuer: Option<String>,
    /// The subject (`sub`) the provider gives the person; null unlinks the account.
    subject: Option<String>,
}

/// Re-links a user to their identity at the OpenID Connect provider (after the provider
/// was redeployed and knows the person under a new subject); memberships and CLI secret
/// stay. System admins only. Berth's own resource (Harbor has none).
#[utoipa::path(
    put,
    path = "/users/{user_id}/oidc_identity",
    operation_id = "setUserOidcIdentity",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = OidcIdentityReq,
    responses(
        (status = 200, description = "Linked (or unlinked)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
)]
pub async fn oidc_identity(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    require_admin(&who)?;
    let user = user_by_id(&api, &id).await?;
    let req: OidcIdentityReq = json_body(&body, "an identity")?;
    let issuer = req
        .issuer
        .or_else(|| api.state.oidc.as_ref().map(|o| o.config.issuer.clone()))
        .unwrap_or_default();
    let identity = match &req.subject {
        Some(s) if s.is_empty() || issuer.is_empty() => {
            return Err(ApiError::bad_request(
                "an identity needs a non-empty subject and an issuer (or auth.oidc.issuer set)",
            ));
        }
        Some(s) => Some((issuer.as_str(), s.as_str())),
        None => None,
    };
    api.state
        .content
        .metadata()
        .set_user_oidc(user.id, identity)
        .await?;
    Ok(StatusCode::OK)
}

/// Harbor's `UserSysAdminFlag`.
#[derive(Deserialize, ToSchema)]
#[schema(as = UserSysAdminFlag)]
pub struct SysadminReq {
    sysadmin_flag: bool,
}

/// Makes a user a system admin or not: system admins only, not on themselves.
#[utoipa::path(
    put,
    path = "/users/{user_id}/sysadmin",
    operation_id = "setUserSysAdmin",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    request_body = SysadminReq,
    responses(
        (status = 200, description = "Changed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn sysadmin(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    require_admin(&who)?;
    let user = user_by_id(&api, &id).await?;
    if who.user_id == Some(user.id) {
        return Err(ApiError::forbidden(
            "an administrator cannot change their own admin flag",
        ));
    }
    let req: SysadminReq = json_body(&body, "a flag")?;
    api.state
        .content
        .metadata()
        .set_sysadmin(user.id, req.sysadmin_flag)
        .await?;
    Ok(StatusCode::OK)
}

/// Deletes a user: system admins only, not themselves.
#[utoipa::path(
    delete,
    path = "/users/{user_id}",
    operation_id = "deleteUser",
    tag = "user",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn delete(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let who = signed_in(&api, &headers).await?;
    require_admin(&who)?;
    let user = user_by_id(&api, &id).await?;
    if who.user_id == Some(user.id) {
        return Err(ApiError::forbidden(
            "an administrator cannot delete themself",
        ));
    }
    api.state.content.metadata().delete_user(user.id).await?;
    Ok(StatusCode::OK)
}
