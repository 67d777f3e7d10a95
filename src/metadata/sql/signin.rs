//! The sign-in domain on SQL: web sessions, pending OpenID Connect sign-ins, users'
//! provider tokens and their CLI secrets and personal access tokens.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::SqlMetadataStore;
use crate::metadata::signin::{
    NewUserSecret, OidcSession, PendingLogin, SecretKind, SignInStore, UserSecret, WebSession,
};
use crate::metadata::{MetaError, now_millis};

const SECRET_COLS: &str =
    "id, user_id, kind, name, projects, pull_only, created_at, last_used_at, expires_at";
const OIDC_COLS: &str = "user_id, refresh_token, expires_at, refreshed_at, failure";

fn never_as_none(at: i64) -> Option<i64> {
    (at >= 0).then_some(at)
}

fn secret_row(r: &AnyRow) -> Result<UserSecret, MetaError> {
    let kind: String = r.try_get("kind")?;
    let projects: Option<String> = r.try_get("projects")?;
    Ok(UserSecret {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        kind: SecretKind::parse(&kind)
            .ok_or_else(|| MetaError::Corrupt(format!("secret kind {kind:?}")))?,
        name: r.try_get("name")?,
        projects: projects
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| MetaError::Corrupt(format!("secret projects: {e}")))?,
        pull_only: r.try_get::<i64, _>("pull_only")? != 0,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: never_as_none(r.try_get("expires_at")?),
    })
}

fn oidc_row(r: &AnyRow) -> Result<OidcSession, MetaError> {
    Ok(OidcSession {
        user_id: r.try_get("user_id")?,
        refresh_token: r.try_get("refresh_token")?,
        expires_at: r.try_get("expires_at")?,
        refreshed_at: r.try_get("refreshed_at")?,
        failure: r.try_get("failure")?,
    })
}

#[async_trait]
impl SignInStore for SqlMetadataStore {
    async fn create_session(&self, id_digest: &str, s: &WebSession) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO web_sessions (id, user_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_digest)
        .bind(s.user_id)
        .bind(s.csrf.as_str())
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_session(
        &self,
        id_digest: &str,
        now: i64,
    ) -> Result<Option<WebSession>, MetaError> {
        let row = self
            .read
            .fetch_optional(
                sqlx::query(
                    "SELECT user_id, csrf, created_at, expires_at FROM web_sessions \
                     WHERE id = $1 AND expires_at > $2",
                )
                .bind(id_digest)
                .bind(now),
            )
            .await?;
        row.map(|r| {
            Ok(WebSession {
                user_id: r.try_get("user_id")?,
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, id_digest: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id = $1")
            .bind(id_digest)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_sign_ins(&self, now: i64, pending_ttl_ms: i64) -> Result<u64, MetaError> {
        let sessions = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.write)
            .await?;
        let pending = sqlx::query("DELETE FROM pending_logins WHERE created_at <= $1")
            .bind(now - pending_ttl_ms)
            .execute(&self.write)
            .await?;
        Ok(sessions.rows_affected() + pending.rows_affected())
    }

    async fn put_pending_login(&self, p: &PendingLogin) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO pending_logins (state, nonce, pkce_verifier, return_to, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.state.as_str())
        .bind(p.nonce.as_str())
        .bind(p.pkce_verifier.as_str())
        .bind(p.return_to.as_str())
        .bind(p.created_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn take_pending_login(&self, state: &str) -> Result<Option<PendingLogin>, MetaError> {
        let row = sqlx::query(
            "DELETE FROM pending_logins WHERE state = $1 \
             RETURNING state, nonce, pkce_verifier, return_to, created_at",
        )
        .bind(state)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| {
            Ok(PendingLogin {
                state: r.try_get("state")?,
                nonce: r.try_get("nonce")?,
                pkce_verifier: r.try_get("pkce_verifier")?,
                return_to: r.try_get("return_to")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn put_oidc_session(&self, s: &OidcSession) -> Result<(), MetaError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM oidc_sessions WHERE user_id = $1")
            .bind(s.user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_sessions (user_id, refresh_token, expires_at, refreshed_at, failure) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(s.user_id)
        .bind(s.refresh_token.as_deref())
        .bind(s.expires_at)
        .bind(s.refreshed_at)
        .bind(s.failure.as_deref())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_oidc_session(&self, user_id: i64) -> Result<Option<OidcSession>, MetaError> {
        let sql = format!("SELECT {OIDC_COLS} FROM oidc_sessions WHERE user_id = $1");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(user_id))
            .await?;
        row.as_ref().map(oidc_row).transpose()
    }

    async fn oidc_sessions_due(
        &self,
        before: i64,
        refreshed_before: i64,
    ) -> Result<Vec<OidcSession>, MetaError> {
        let sql = format!(
            "SELECT {OIDC_COLS} FROM oidc_sessions WHERE (expires_at < $1 OR refreshed_at < $2) \
             AND refresh_token IS NOT NULL AND failure IS NULL ORDER BY expires_at LIMIT 1000"
        );
        let rows = self
            .read
            .fetch_all(sqlx::query(&sql).bind(before).bind(refreshed_before))
            .await?;
        rows.iter().map(oidc_row).collect()
    }

    async fn replace_cli_secret(
        &self,
        user_id: i64,
        digest: &str,
    ) -> Result<UserSecret, MetaError> {
        let now = now_millis();
        let mut tx = self.write.begin().await?;
        // The user row first: a concurrent delete of the user either waits for this
        // transaction or has already happened (then there is nothing to give a secret to).
        let user = sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if user.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(MetaError::NotFound(format!(
                "user {user_id} does not exist"
            )));
        }
        sqlx::query("DELETE FROM user_secrets WHERE user_id = $1 AND kind = 'cli'")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "INSERT INTO user_secrets (user_id, kind, name, digest, projects, pull_only, \
             created_at, last_used_at, expires_at) \
             VALUES ($1, 'cli', 'cli', $2, NULL, 0, $3, NULL, -1) RETURNING id",
        )
        .bind(user_id)
        .bind(digest)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok(UserSecret {
            id,
            user_id,
            kind: SecretKind::Cli,
            name: "cli".into(),
            projects: None,
            pull_only: false,
            created_at: now,
            last_used_at: None,
            expires_at: None,
        })
    }

    async fn create_personal_token(&self, s: &NewUserSecret) -> Result<UserSecret, MetaError> {
        let now = now_millis();
        let projects = s
            .projects
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| MetaError::Corrupt(format!("secret projects: {e}")))?;
        let mut tx = self.write.begin().await?;
        let user = sqlx::query("UPDATE users SET updated_at = updated_at WHERE id = $1")
            .bind(s.user_id)
            .execute(&mut *tx)
            .await?;
        if user.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(MetaError::NotFound(format!(
                "user {} does not exist",
                s.user_id
            )));
        }
        let row = sqlx::query(
            "INSERT INTO user_secrets (user_id, kind, name, digest, projects, pull_only, \
             created_at, last_used_at, expires_at) \
             VALUES ($1, 'personal', $2, $3, $4, $5, $6, NULL, $7) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(s.user_id)
        .bind(s.name.as_str())
        .bind(s.digest.as_str())
        .bind(projects.as_deref())
        .bind(i64::from(s.pull_only))
        .bind(now)
        .bind(s.expires_at.unwrap_or(-1))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(MetaError::Conflict(format!(
                "a token named {:?} already exists",
                s.name
            )));
        };
        let id: i64 = row.try_get("id")?;
        tx.commit().await?;
        Ok(UserSecret {
            id,
            user_id: s.user_id,
            kind: SecretKind::Personal,
            name: s.name.clone(),
            projects: s.projects.clone(),
            pull_only: s.pull_only,
            created_at: now,
            last_used_at: None,
            expires_at: s.expires_at,
        })
    }

    async fn list_user_secrets(&self, user_id: i64) -> Result<Vec<UserSecret>, MetaError> {
        let sql = format!(
            "SELECT {SECRET_COLS} FROM user_secrets WHERE user_id = $1 ORDER BY kind, name"
        );
        let rows = self.read.fetch_all(sqlx::query(&sql).bind(user_id)).await?;
        rows.iter().map(secret_row).collect()
    }

    async fn find_user_secret(
        &self,
        user_id: i64,
        digest: &str,
    ) -> Result<Option<UserSecret>, MetaError> {
        let sql =
            format!("SELECT {SECRET_COLS} FROM user_secrets WHERE digest = $1 AND user_id = $2");
        let row = self
            .read
            .fetch_optional(sqlx::query(&sql).bind(digest).bind(user_id))
            .await?;
        row.as_ref().map(secret_row).transpose()
    }

    async fn delete_user_secret(&self, user_id: i64, id: i64) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM user_secrets WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_user_secret(&self, id: i64, at: i64) -> Result<(), MetaError> {
        sqlx::query("UPDATE user_secrets SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
