//! S3 blob store: any S3-compatible object store, through `aws-sdk-s3`.
//!
//! Keys under the configured prefix:
//! - `blobs/<alg>/<hex[0..2]>/<hex>`: committed blobs, content-addressed;
//! - `uploads/<id>/tail-<n>`: the bytes of a session not yet in a multipart part (less than
//!   one part), one object per append so a failed append never touches acknowledged data;
//! - `uploads/<id>/data`: the multipart upload a session's full parts go to.
//!
//! A session's store state (kept by the metadata store with the session, so any replica
//! can continue it) is the multipart upload id, the parts written so far with their
//! ETags, and the current tail object. An append reads the tail back (at most one part),
//! streams the body through the hasher, uploads every full part as it fills (one part in
//! flight while the next fills, so memory stays at two parts per session) and writes what
//! is left as a new tail. A commit turns the tail into the last part, completes the
//! multipart upload, and copies the result to the blob's content address: the blob is
//! visible only once it is whole and its digest verified.

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

use super::{BlobReader, BlobStore, ByteStream, StorageError, Verify, check_range};
use crate::oci::{Digest, Hasher};

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest single-request copy; bigger objects are copied part by part.
const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Read buffer when streaming objects.
const READ_BUF: usize = 256 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Region; empty means the AWS environment/profile chain's, or `us-east-1`.
    pub region: String,
    /// Endpoint URL of an S3-compatible store; empty means AWS.
    pub endpoint: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores want.
    pub force_path_style: bool,
    /// Key prefix for everything Berth stores, e.g. `registry/`.
    pub prefix: String,
    /// Static credentials; empty means the standard AWS environment/profile chain.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Server-side encryption: empty, `AES256` or `aws:kms`.
    pub server_side_encryption: String,
    /// KMS key for `aws:kms`; empty means the bucket's default key.
    pub kms_key_id: String,
    /// PEM file of extra CA certificates to trust (a private object store's CA).
    pub ca_bundle: String,
    /// Multipart part size in bytes (at least 5 MiB). Each uploading session buffers at
    /// most two parts.
    pub part_size: usize,
    /// Answer blob GETs with a 307 to a presigned URL instead of streaming through Berth.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_expiry_seconds: u64,
    /// Attempts per request, retries included, for failures S3 says are retryable
    /// (throttling, 5xx, timeouts).
    pub max_attempts: u32,
    /// Per-attempt timeout for one request, in seconds (0: none).
    pub attempt_timeout_seconds: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            region: String::new(),
            endpoint: String::new(),
            force_path_style: false,
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            server_side_encryption: String::new(),
            kms_key_id: String::new(),
            ca_bundle: String::new(),
            part_size: 8 * 1024 * 1024,
            redirect: false,
            redirect_expiry_seconds: 300,
            max_attempts: 4,
            attempt_timeout_seconds: 120,
        }
    }
}

impl S3Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.bucket.is_empty() {
            anyhow::bail!("storage.s3.bucket must be set when storage.backend = \"s3\"");
        }
        if self.part_size < MIN_PART_SIZE {
            anyhow::bail!(
                "storage.s3.part_size is {} but S3 needs parts of at least {MIN_PART_SIZE} bytes",
                self.part_size
            );
        }
        if !matches!(
            self.server_side_encryption.as_str(),
            "" | "AES256" | "aws:kms"
        ) {
            anyhow::bail!(
                "storage.s3.server_side_encryption must be empty, \"AES256\" or \"aws:kms\", not {:?}",
                self.server_side_encryption
            );
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            anyhow::bail!(
                "storage.s3.access_key_id and storage.s3.secret_access_key go together: set both or neither"
            );
        }
        Ok(())
    }
}

pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    part_size: usize,
    redirect: Option<Duration>,
}

/// A session's state in the store (serialized into the metadata store's `store_state`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Session {
    /// The multipart upload, once the first full part was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<Part>,
    /// The bytes after the parts: an object under the session's prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<Tail>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Part {
    n: i32,
    etag: String,
    size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tail {
    key: String,
    size: u64,
}

impl Session {
    fn parse(state: &[u8]) -> Result<Session, StorageError> {
        if state.is_empty() {
            return Ok(Session::default());
        }
        serde_json::from_slice(state)
            .map_err(|e| StorageError::Backend(format!("unreadable upload state: {e}")))
    }

    fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.size)
    }
}

/// Turns an SDK failure into a storage error that says what S3 said.
fn backend<E>(what: &str, e: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(code), Some(msg)) => format!("{msg} ({code})"),
                (Some(code), None) => code.to_string(),
                _ => format!("HTTP {} ({err:?})", se.raw().status().as_u16()),
            }
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        SdkError::DispatchFailure(d) => format!("could not reach the object store: {d:?}"),
        other => format!("{other}"),
    };
    StorageError::Backend(format!("{what}: {detail}"))
}

type HttpResponse = aws_smithy_runtime_api::client::orchestrator::HttpResponse;

fn code_of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Option<&str> {
    match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

fn is_not_found<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(se) => {
            se.raw().status().as_u16() == 404
                || matches!(
                    se.err().code(),
                    Some("NoSuchKey" | "NotFound" | "NoSuchUpload")
                )
        }
        _ => false,
    }
}

impl S3BlobStore {
    /// Connects to the bucket and checks it is there and writable to us.
    pub async fn open(cfg: &S3Config) -> anyhow::Result<S3BlobStore> {
        use anyhow::Context;
        use aws_config::BehaviorVersion;
        use aws_smithy_http_client::tls::{
            self, TlsContext, TrustStore, rustls_provider::CryptoMode,
        };

        cfg.validate()?;
        let mut trust = TrustStore::default();
        if !cfg.ca_bundle.is_empty() {
            let pem = std::fs::read(&cfg.ca_bundle)
                .with_context(|| format!("reading storage.s3.ca_bundle {}", cfg.ca_bundle))?;
            trust = trust.with_pem_certificate(pem);
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(trust)
                    .build()
                    .context("TLS settings for S3")?,
            )
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if !cfg.region.is_empty() {
            loader = loader.region(aws_config::Region::new(cfg.region.clone()));
        }
        if !cfg.access_key_id.is_empty() {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                cfg.access_key_id.clone(),
                cfg.secret_access_key.clone(),
                (!cfg.session_token.is_empty()).then(|| cfg.session_token.clone()),
                None,
                "berth-config",
            ));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(cfg.max_attempts.max(1)),
            );
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if cfg.attempt_timeout_seconds > 0 {
            b = b.timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(cfg.attempt_timeout_seconds))
                    .build(),
            );
        }
        if !cfg.endpoint.is_empty() {
            b = b.endpoint_url(cfg.endpoint.clone());
        }
        let client = Client::from_conf(b.build());
        let store = S3BlobStore {
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            sse: match cfg.server_side_encryption.as_str() {
                "" => None,
                s => Some(ServerSideEncryption::from(s)),
            },
            kms_key_id: (!cfg.kms_key_id.is_empty()).then(|| cfg.kms_key_id.clone()),
            part_size: cfg.part_size,
            redirect: cfg
                .redirect
                .then(|| Duration::from_secs(cfg.redirect_expiry_seconds.max(1))),
        };
        store
            .client
            .head_bucket()
            .bucket(&store.bucket)
            .send()
            .await
            .map_err(|e| {
                let hint = match code_of(&e) {
                    Some("NotFound" | "NoSuchBucket") => " (the bucket does not exist)",
                    Some("Forbidden" | "AccessDenied") => {
                        " (access denied: check the credentials and the bucket policy)"
                    }
                    _ => "",
                };
                anyhow::anyhow!(
                    "{}{hint}",
                    backend(&format!("opening bucket {:?}", store.bucket), e)
                )
            })?;
        Ok(store)
    }

    fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!(
            "{}blobs/{}/{}/{}",
            self.prefix,
            digest.algorithm().name(),
            &hex[..2],
            hex
        )
    }

    fn upload_prefix(&self, id: &str) -> Result<String, StorageError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StorageError::UploadNotFound(id.to_string()));
        }
        Ok(format!("{}uploads/{id}/", self.prefix))
    }

    async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<
        aws_sdk_s3::operation::get_object::GetObjectOutput,
        SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>,
    > {
        let mut rq = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = range {
            rq = rq.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        rq.send().await
    }

    /// Reads a whole small object (a tail: at most one part) into memory.
    async fn read_small(&self, key: &str, into: &mut BytesMut) -> Result<(), StorageError> {
        let out = match self.get_stream(key, None).await {
            Ok(out) => out,
            // A tail the session names is gone: the upload was aborted or purged.
            Err(e) if is_not_found(&e) => return Err(StorageError::UploadNotFound(key.into())),
            Err(e) => return Err(backend(&format!("reading {key}"), e)),
        };
        let mut body = out.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::Backend(format!("reading {key}: {e}")))?;
            into.extend_from_slice(&chunk);
        }
        Ok(())
    }

    /// Streams an object through a hasher of `digest`'s algorithm.
    async fn hash_object(&self, key: &str, digest: &Digest) -> Result<Digest, StorageError> {
        let mut h = Hasher::new(digest.algorithm());
        let out = self
            .get_stream(key, None)
            .await
            .map_err(|e| backend(&format!("reading {key}"), e))?;
        let mut body = out.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StorageError::Backend(format!("reading {key}: {e}")))?;
            h.update(&chunk);
        }
        Ok(h.finish())
    }

    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(S3Body::from(bytes))
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| backend(&format!("writing {key}"), e))?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StorageError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| backend(&format!("starting a multipart upload to {key}"), e))?;
        out.upload_id.ok_or_else(|| {
            StorageError::Backend("CreateMultipartUpload returned no upload id".into())
        })
    }

    async fn upload_part(
        client: Client,
        bucket: String,
        key: String,
        upload_id: String,
        n: i32,
        bytes: Bytes,
    ) -> Result<Part, StorageError> {
        let size = bytes.len() as u64;
        let out = client
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(n)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    StorageError::UploadNotFound(key.clone())
                } else {
                    backend(&format!("uploading part {n} of {key}"), e)
                }
            })?;
        let etag = out
            .e_tag
            .ok_or_else(|| StorageError::Backend(format!("UploadPart {n} returned no ETag")))?;
        Ok(Part { n, etag, size })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend(
                &format!("aborting the multipart upload of {key}"),
                e,
            )),
        }
    }

    /// Every object under `prefix`, with its last-modified time.
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<aws_smithy_types::DateTime>)>, StorageError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| backend(&format!("listing {prefix}"), e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key() {
                    out.push((key.to_string(), obj.last_modified().cloned()));
                }
            }
            match page.next_continuation_token {
                Some(t) if page.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes every object under `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        for (key, _) in self.list(prefix).await? {
            self.delete_key(&key).await?;
        }
        Ok(())
    }

    async fn delete_key(&self, key: &str) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend(&format!("deleting {key}"), e)),
        }
    }

    /// Copies `from` to `to` inside the bucket (server-side), part by part when it is too
    /// big for one CopyObject.
    async fn copy(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        let source = format!("{}/{}", self.bucket, urlencode_key(from));
        if size <= MAX_COPY {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .set_server_side_encryption(self.sse.clone())
                .set_ssekms_key_id(self.kms_key_id.clone())
                .send()
                .await
                .map_err(|e| backend(&format!("copying {from} to {to}"), e))?;
            return Ok(());
        }
        let upload_id = self.create_multipart(to).await?;
        let step = 1024 * 1024 * 1024u64;
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut n = 1;
        while start < size {
            let end = (start + step).min(size) - 1;
            let r = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .part_number(n)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await;
            let out = match r {
                Ok(out) => out,
                Err(e) => {
                    let _ = self.abort_multipart(to, &upload_id).await;
                    return Err(backend(&format!("copying part {n} of {from} to {to}"), e));
                }
            };
            let etag = out
                .copy_part_result
                .and_then(|r| r.e_tag)
                .ok_or_else(|| StorageError::Backend("UploadPartCopy returned no ETag".into()))?;
            parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
            start = end + 1;
            n += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| backend(&format!("completing the copy of {from} to {to}"), e))?;
        Ok(())
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (keeping `/`).
fn urlencode_key(key: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, SET).to_string()
}

#[async_trait]
impl BlobStore for S3BlobStore {
    /// `HeadBucket`: the endpoint answers, and the bucket is there and ours to use.
    async fn reachable(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| backend(&format!("HeadBucket {:?}", self.bucket), e))?;
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let key = self.blob_key(digest);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(&format!("looking up {key}"), e)),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<BlobReader, StorageError> {
        let Some(total) = self.stat(digest).await? else {
            return Err(StorageError::BlobNotFound(digest.clone()));
        };
        if let Some(r) = &range {
            check_range(r, total)?;
        }
        let len = range.as_ref().map_or(total, |r| r.end - r.start);
        if len == 0 {
            return Ok(BlobReader {
                body: futures::stream::empty().boxed(),
                len: 0,
                total,
            });
        }
        let key = self.blob_key(digest);
        let out = match self.get_stream(&key, range).await {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Err(StorageError::BlobNotFound(digest.clone())),
            Err(e) => return Err(backend(&format!("reading {key}"), e)),
        };
        let body = ReaderStream::with_capacity(out.body.into_async_read(), READ_BUF).boxed();
        Ok(BlobReader { body, len, total })
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StorageError> {
        if self.stat(digest).await?.is_none() {
            return Err(StorageError::BlobNotFound(digest.clone()));
        }
        self.delete_key(&self.blob_key(digest)).await
    }

    /// `DeleteObjects`, 1,000 keys per call (S3's limit); keys already gone are not errors.
    async fn delete_many(&self, digests: &[Digest]) -> Vec<(Digest, StorageError)> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut refused = Vec::new();
        for batch in digests.chunks(1000) {
            let keys: Vec<(String, &Digest)> =
                batch.iter().map(|d| (self.blob_key(d), d)).collect();
            let objects: Result<Vec<ObjectIdentifier>, _> = keys
                .iter()
                .map(|(k, _)| ObjectIdentifier::builder().key(k).build())
                .collect();
            let delete =
                objects.and_then(|o| Delete::builder().set_objects(Some(o)).quiet(true).build());
            let delete = match delete {
                Ok(d) => d,
                Err(e) => {
                    let why = format!("building a DeleteObjects request: {e}");
                    refused.extend(
                        batch
                            .iter()
                            .map(|d| (d.clone(), StorageError::Backend(why.clone()))),
                    );
                    continue;
                }
            };
            match self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
            {
                Ok(out) => {
                    for err in out.errors() {
                        let key = err.key().unwrap_or_default();
                        if let Some((_, d)) = keys.iter().find(|(k, _)| k == key) {
                            refused.push((
                                (*d).clone(),
                                StorageError::Backend(format!(
                                    "deleting {key}: {} {}",
                                    err.code().unwrap_or_default(),
                                    err.message().unwrap_or_default()
                                )),
                            ));
                        }
                    }
                }
                Err(e) => {
                    let e = backend("DeleteObjects", e);
                    let why = e.to_string();
                    refused.extend(
                        batch
                            .iter()
                            .map(|d| (d.clone(), StorageError::Backend(why.clone()))),
                    );
                }
            }
        }
        refused
    }

    async fn upload_start(&self, id: &str) -> Result<Vec<u8>, StorageError> {
        // Nothing to create yet: the multipart upload starts with the first full part.
        self.upload_prefix(id)?;
        Ok(Vec::new())
    }

    async fn upload_append(
        &self,
        id: &str,
        state: &mut Vec<u8>,
        offset: u64,
        mut data: ByteStream,
        hasher: &mut Hasher,
    ) -> Result<u64, StorageError> {
        let prefix = self.upload_prefix(id)?;
        let mut session = Session::parse(state)?;
        let held = session.len();
        if held != offset {
            return Err(StorageError::UploadShort {
                id: id.to_string(),
                expected: offset,
                actual: held,
            });
        }
        let data_key = format!("{prefix}data");
        let mut buf = BytesMut::with_capacity(self.part_size);
        if let Some(tail) = &session.tail {
            self.read_small(&tail.key, &mut buf).await?;
            if buf.len() as u64 != tail.size {
                return Err(StorageError::Backend(format!(
                    "upload {id}'s tail object holds {} bytes, not {}",
                    buf.len(),
                    tail.size
                )));
            }
        }
        let created_here = session.multipart.is_none();
        let mut in_flight: Option<tokio::task::JoinHandle<Result<Part, StorageError>>> = None;
        let mut new_parts = Vec::new();
        let mut written = 0u64;
        let mut failure = None;
        'body: while let Some(chunk) = data.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(StorageError::Body(e));
                    break;
                }
            };
            hasher.update(&chunk);
            written += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= self.part_size {
                let part = buf.split_to(self.part_size).freeze();
                if session.multipart.is_none() {
                    match self.create_multipart(&data_key).await {
                        Ok(u) => session.multipart = Some(u),
                        Err(e) => {
                            failure = Some(e);
                            break 'body;
                        }
                    }
                }
                if let Some(prev) = in_flight.take() {
                    match prev.await {
                        Ok(Ok(p)) => new_parts.push(p),
                        Ok(Err(e)) => {
                            failure = Some(e);
                            break 'body;
                        }
                        Err(e) => {
                            failure = Some(StorageError::Io(std::io::Error::other(e)));
                            break 'body;
                        }
                    }
                }
                let n = (session.parts.len() + new_parts.len() + 1) as i32;
                if n > 10_000 {
                    failure = Some(StorageError::Backend(format!(
                        "upload {id} needs more than 10000 parts of {} bytes; raise storage.s3.part_size",
                        self.part_size
                    )));
                    break 'body;
                }
                in_flight = Some(tokio::spawn(Self::upload_part(
                    self.client.clone(),
                    self.bucket.clone(),
                    data_key.clone(),
                    session.multipart.clone().unwrap_or_default(),
                    n,
                    part,
                )));
            }
        }
        if let Some(prev) = in_flight.take() {
            match prev.await {
                Ok(Ok(p)) => new_parts.push(p),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => failure = failure.or(Some(StorageError::Io(std::io::Error::other(e)))),
            }
        }
        let mut tail = None;
        if failure.is_none() && !buf.is_empty() {
            let key = format!("{prefix}tail-{}", uuid::Uuid::new_v4());
            let size = buf.len() as u64;
            match self.put_small(&key, buf.freeze()).await {
                Ok(()) => tail = Some(Tail { key, size }),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            // Nothing is acknowledged. A multipart upload this request began would be
            // unknown to the session: abort it rather than leak it.
            if created_here {
                if let Some(u) = &session.multipart {
                    let _ = self.abort_multipart(&data_key, u).await;
                }
            }
            return Err(e);
        }
        session.parts.extend(new_parts);
        session.tail = tail;
        *state = serde_json::to_vec(&session)
            .map_err(|e| StorageError::Backend(format!("encoding upload state: {e}")))?;
        Ok(written)
    }

    async fn upload_commit(
        &self,
        id: &str,
        state: &[u8],
        size: u64,
        digest: &Digest,
        verify: Verify,
    ) -> Result<(), StorageError> {
        let prefix = self.upload_prefix(id)?;
        let session = Session::parse(state)?;
        let held = session.len();
        if held != size {
            return Err(StorageError::UploadShort {
                id: id.to_string(),
                expected: size,
                actual: held,
            });
        }
        let target = self.blob_key(digest);
        let data_key = format!("{prefix}data");
        // The object the blob's bytes are in once this session's data is whole.
        let assembled = match (&session.multipart, &session.tail) {
            (None, None) => None,
            (None, Some(t)) => {
                // Still there? (Not if the session was committed or aborted already.)
                match self
                    .client
                    .head_object()
                    .bucket(&self.bucket)
                    .key(&t.key)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {
                        return Err(StorageError::UploadNotFound(id.to_string()));
                    }
                    Err(e) => return Err(backend(&format!("looking up {}", t.key), e)),
                }
                Some(t.key.clone())
            }
            (Some(upload_id), tail) => {
                let mut parts = session.parts.clone();
                if let Some(t) = tail {
                    let mut buf = BytesMut::with_capacity(t.size as usize);
                    self.read_small(&t.key, &mut buf).await?;
                    parts.push(
                        Self::upload_part(
                            self.client.clone(),
                            self.bucket.clone(),
                            data_key.clone(),
                            upload_id.clone(),
                            (parts.len() + 1) as i32,
                            buf.freeze(),
                        )
                        .await?,
                    );
                }
                let completed: Vec<CompletedPart> = parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.n)
                            .e_tag(&p.etag)
                            .build()
                    })
                    .collect();
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&data_key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| {
                        if is_not_found(&e) {
                            StorageError::UploadNotFound(id.to_string())
                        } else {
                            backend(&format!("completing the multipart upload of {id}"), e)
                        }
                    })?;
                Some(data_key.clone())
            }
        };
        if verify == Verify::Rehash {
            let actual = match &assembled {
                Some(key) => self.hash_object(key, digest).await?,
                None => Hasher::new(digest.algorithm()).finish(),
            };
            if &actual != digest {
                return Err(StorageError::DigestMismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        if self.stat(digest).await?.is_none() {
            match &assembled {
                Some(key) => self.copy(key, &target, size).await?,
                None => self.put_small(&target, Bytes::new()).await?,
            }
        }
        self.delete_prefix(&prefix).await
    }

    async fn upload_abort(&self, id: &str, state: &[u8]) -> Result<(), StorageError> {
        let prefix = self.upload_prefix(id)?;
        // An unreadable state still has its objects removed by prefix.
        if let Ok(Session {
            multipart: Some(u), ..
        }) = Session::parse(state)
        {
            self.abort_multipart(&format!("{prefix}data"), &u).await?;
        }
        self.delete_prefix(&prefix).await
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>, StorageError> {
        let Some(expiry) = self.redirect else {
            return Ok(None);
        };
        let config = PresigningConfig::expires_in(expiry)
            .map_err(|e| StorageError::Backend(format!("presigning: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.blob_key(digest))
            .presigned(config)
            .await
            .map_err(|e| backend("presigning a blob URL", e))?;
        Ok(Some(req.uri().to_string()))
    }

    async fn purge_orphan_uploads(
        &self,
        before: i64,
        live: &HashSet<String>,
    ) -> Result<u64, StorageError> {
        let uploads = format!("{}uploads/", self.prefix);
        let session_of = |key: &str| -> Option<String> {
            key.strip_prefix(&uploads)
                .and_then(|rest| rest.split('/').next())
                .map(str::to_string)
        };
        let old = |t: Option<&aws_smithy_types::DateTime>| {
            t.map(|t| t.to_millis().unwrap_or(i64::MAX) < before)
                .unwrap_or(false)
        };
        let mut removed = HashSet::new();
        // Multipart uploads first: they hold the most bytes.
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&uploads)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| backend("listing multipart uploads", e))?;
            for u in out.uploads() {
                let (Some(key), Some(upload_id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let Some(session) = session_of(key) else {
                    continue;
                };
                if !live.contains(&session) && old(u.initiated()) {
                    self.abort_multipart(key, upload_id).await?;
                    removed.insert(session);
                }
            }
            if out.is_truncated == Some(true) {
                key_marker = out.next_key_marker;
                id_marker = out.next_upload_id_marker;
            } else {
                break;
            }
        }
        for (key, modified) in self.list(&uploads).await? {
            let Some(session) = session_of(&key) else {
                continue;
            };
            if !live.contains(&session) && old(modified.as_ref()) {
                self.delete_key(&key).await?;
                removed.insert(session);
            }
        }
        Ok(removed.len() as u64)
    }
}
