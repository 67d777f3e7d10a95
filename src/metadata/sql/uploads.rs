//! The uploads domain on SQL: upload sessions, claims and their leases.

use async_trait::async_trait;
use sqlx::Row;

use super::SqlMetadataStore;
use crate::metadata::{MetaError, UploadSession, UploadStore, now_millis};
use crate::oci::RepoName;

#[async_trait]
impl UploadStore for SqlMetadataStore {
    async fn create_upload(&self, s: &UploadSession) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO uploads (id, repository, committed, hash_state, store_state, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(s.repository.as_str())
        .bind(s.committed as i64)
        .bind(s.hash_state.as_slice())
        .bind(s.store_state.as_slice())
        .bind(s.started_at)
        .bind(s.started_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn get_upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<Option<UploadSession>, MetaError> {
        let row = self.read.fetch_optional(sqlx::query(
            "SELECT id, repository, committed, hash_state, store_state, started_at FROM uploads WHERE id = $1 AND repository = $2",
        )
        .bind(id)
        .bind(repo.as_str()))
        .await?;
        row.map(|r| upload_row(&r)).transpose()
    }

    async fn stale_uploads(&self, before: i64, n: i64) -> Result<Vec<UploadSession>, MetaError> {
        let rows = self.read.fetch_all(sqlx::query(
            "SELECT id, repository, committed, hash_state, store_state, started_at FROM uploads \
             WHERE updated_at < $1 AND (writer IS NULL OR lease_until < $1) ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(n))
        .await?;
        rows.iter().map(upload_row).collect()
    }

    async fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        let rows = self
            .read
            .fetch_all(sqlx::query("SELECT id FROM uploads"))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(MetaError::from))
            .collect()
    }

    async fn count_uploads(&self) -> Result<u64, MetaError> {
        let row = self
            .read
            .fetch_one(sqlx::query("SELECT COUNT(*) AS n FROM uploads"))
            .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
    }

    async fn claim_upload(
        &self,
        id: &str,
        from: u64,
        writer: &str,
        now: i64,
        lease_until: i64,
    ) -> Result<(), MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET writer = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND committed = $5 AND (writer IS NULL OR lease_until < $3)",
        )
        .bind(writer)
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(from as i64)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(MetaError::UploadConflict)
        }
    }

    async fn renew_upload_claim(
        &self,
        id: &str,
        writer: &str,
        lease_until: i64,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET lease_until = $1, updated_at = $2 WHERE id = $3 AND writer = $4",
        )
        .bind(lease_until)
        .bind(now_millis())
        .bind(id)
        .bind(writer)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_upload_claim(&self, id: &str, writer: &str) -> Result<(), MetaError> {
        sqlx::query(
            "UPDATE uploads SET writer = NULL, lease_until = NULL WHERE id = $1 AND writer = $2",
        )
        .bind(id)
        .bind(writer)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn advance_upload(
        &self,
        id: &str,
        writer: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        store_state: &[u8],
    ) -> Result<(), MetaError> {
        let done = sqlx::query(
            "UPDATE uploads SET committed = $1, hash_state = $2, updated_at = $3, writer = NULL, lease_until = NULL, store_state = $7 \
             WHERE id = $4 AND committed = $5 AND writer = $6",
        )
        .bind(to as i64)
        .bind(hash_state)
        .bind(now_millis())
        .bind(id)
        .bind(from as i64)
        .bind(writer)
        .bind(store_state)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(MetaError::UploadConflict)
        }
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn upload_row(r: &sqlx::any::AnyRow) -> Result<UploadSession, MetaError> {
    let repository: String = r.try_get("repository")?;
    Ok(UploadSession {
        id: r.try_get("id")?,
        repository: RepoName::parse(&repository).map_err(|_| {
            MetaError::Corrupt(format!("upload for bad repository name {repository:?}"))
        })?,
        committed: r.try_get::<i64, _>("committed")? as u64,
        hash_state: r.try_get("hash_state")?,
        store_state: r.try_get("store_state")?,
        started_at: r.try_get("started_at")?,
    })
}
