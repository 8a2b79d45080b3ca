//! S3 adapter (aws-sdk-s3): heads, listings, ranged streaming reads, puts and multipart
//! writes, with errors that say which object and whether a retry can help.

mod deadlines;
pub mod decode;
mod multipart;
mod observe;
pub mod parquet;
pub mod records;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::AsyncBufRead;

pub use multipart::PartWriter;

use crate::health::Health;
use crate::settings::S3Settings;
use crate::uri::S3Uri;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{uri}: object not found (check the path, or that it was uploaded)")]
    NotFound { uri: String },
    #[error("{uri}: bucket `{bucket}` does not exist; create it or fix the URI")]
    NoSuchBucket { uri: String, bucket: String },
    #[error("{uri}: object changed since the job was planned (ETag differs); resubmit the job")]
    Changed { uri: String },
    #[error(
        "{uri}: {op} refused ({message}); check the bucket exists and the credentials may {op}"
    )]
    Refused {
        uri: String,
        op: &'static str,
        message: String,
    },
    #[error("{uri}: {op} failed ({message}); will retry")]
    Transient {
        uri: String,
        op: &'static str,
        message: String,
    },
}

impl StorageError {
    /// Whether trying again later can succeed (network trouble, 5xx, throttling).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }
}

fn classify<E>(err: SdkError<E, HttpResponse>, op: &'static str, uri: &S3Uri) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let bucket = uri.bucket.clone();
    let uri = uri.to_string();
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err
        .as_service_error()
        .and_then(|e| e.code())
        .unwrap_or_default()
        .to_string();
    let message = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message")
            )
        }
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    };
    // The error code says more than the status: some 4xx codes are transient.
    match code.as_str() {
        "NoSuchBucket" => return StorageError::NoSuchBucket { uri, bucket },
        "RequestTimeout"
        | "ExpiredToken"
        | "OperationAborted"
        | "SlowDown"
        | "InternalError"
        | "ServiceUnavailable"
        | "RequestTimeTooSkewed" => {
            return StorageError::Transient { uri, op, message };
        }
        _ => {}
    }
    match status {
        Some(404) => StorageError::NotFound { uri },
        Some(412) => StorageError::Changed { uri },
        Some(408 | 429) | None => StorageError::Transient { uri, op, message },
        Some(s) if s >= 500 => StorageError::Transient { uri, op, message },
        Some(_) => StorageError::Refused { uri, op, message },
    }
}

/// Characters escaped in a `CopySource` key: everything but unreserved ones and '/'.
const COPY_SOURCE_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Size and version of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub uri: S3Uri,
    pub size: u64,
    pub etag: String,
}

/// A cheap-to-clone S3 client.
#[derive(Clone)]
pub struct Storage {
    client: Client,
    part_size: usize,
    health: Health,
}

impl Storage {
    /// A client reporting into a readiness registry of its own (tools and tests).
    pub async fn connect(settings: &S3Settings) -> Self {
        Self::connect_with_health(settings, Health::new()).await
    }

    /// A client whose calls have the deadlines and retries of `s3.*`, and report S3's state
    /// into `health` (check `s3`).
    pub async fn connect_with_health(settings: &S3Settings, health: Health) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()));
        if !settings.access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                settings.access_key_id.clone(),
                settings.secret_access_key.clone(),
                None,
                None,
                "sluice-settings",
            ));
        }
        if !settings.endpoint.is_empty() {
            loader = loader.endpoint_url(settings.endpoint.clone());
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            .timeout_config(deadlines::timeouts(settings))
            .retry_config(deadlines::retries(settings))
            .stalled_stream_protection(deadlines::stall_protection(settings))
            .interceptor(observe::S3Metrics {
                health: health.clone(),
            })
            .build();
        Self {
            client: Client::from_conf(config),
            part_size: settings.part_size_bytes,
            health,
        }
    }

    /// The readiness registry this client reports into.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Readiness: can we reach the server at all.
    pub async fn ping(&self) -> Result<(), StorageError> {
        let root = S3Uri::new("-", "");
        self.client
            .list_buckets()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(e, "list buckets", &root))
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        let uri = S3Uri::new(bucket, "");
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
                if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
                    Ok(())
                } else {
                    Err(classify(e, "create bucket", &uri))
                }
            }
        }
    }

    pub async fn head(&self, uri: &S3Uri) -> Result<ObjectInfo, StorageError> {
        let out = self
            .client
            .head_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| classify(e, "head", uri))?;
        Ok(ObjectInfo {
            uri: uri.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    /// Every object under `prefix`, in key order.
    pub async fn list(&self, prefix: &S3Uri) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&prefix.bucket)
            .prefix(&prefix.key)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(e, "list", prefix))?;
            for object in page.contents() {
                objects.push(ObjectInfo {
                    uri: S3Uri::new(&prefix.bucket, object.key().unwrap_or_default()),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().unwrap_or_default().to_string(),
                });
            }
        }
        objects.sort_by(|a, b| a.uri.key.cmp(&b.uri.key));
        Ok(objects)
    }

    /// One GET of bytes `[start, end)` (the whole object when `end <= start`, the rest of it
    /// from `start` when `end` is `u64::MAX`); with `etag`, fails with `Changed` if the object
    /// is no longer that version.
    async fn get(
        &self,
        uri: &S3Uri,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StorageError> {
        let mut request = self.client.get_object().bucket(&uri.bucket).key(&uri.key);
        if end == u64::MAX {
            request = request.range(format!("bytes={start}-"));
        } else if end > start {
            request = request.range(format!("bytes={}-{}", start, end - 1));
        }
        if let Some(etag) = etag.filter(|e| !e.is_empty()) {
            request = request.if_match(etag);
        }
        request.send().await.map_err(|e| classify(e, "read", uri))
    }

    /// Streams bytes `[start, end)` of an object (see `get` for the bounds and `etag`).
    pub async fn read_range(
        &self,
        uri: &S3Uri,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> Result<impl AsyncBufRead + Unpin + Send + use<>, StorageError> {
        Ok(self
            .get(uri, start, end, etag)
            .await?
            .body
            .into_async_read())
    }

    /// Streams bytes `[start, end)` (see `get`) with the object's `Content-Encoding`, for
    /// readers that decode compressed objects.
    pub async fn open_range(
        &self,
        uri: &S3Uri,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> Result<(impl AsyncBufRead + Unpin + Send + use<>, Option<String>), StorageError> {
        let out = self.get(uri, start, end, etag).await?;
        let encoding = out.content_encoding().map(str::to_string);
        Ok((out.body.into_async_read(), encoding))
    }

    /// Bytes `[start, end)` of an object, in memory (Parquet footers and column chunks).
    pub async fn get_range(
        &self,
        uri: &S3Uri,
        start: u64,
        end: u64,
        etag: Option<&str>,
    ) -> Result<bytes::Bytes, StorageError> {
        if end <= start {
            return Ok(bytes::Bytes::new());
        }
        let out = self.get(uri, start, end, etag).await?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Transient {
                uri: uri.to_string(),
                op: "read",
                message: e.to_string(),
            })?;
        Ok(data.into_bytes())
    }

    /// Streams a whole object.
    pub async fn read(
        &self,
        uri: &S3Uri,
    ) -> Result<impl AsyncBufRead + Unpin + Send + use<>, StorageError> {
        self.read_range(uri, 0, 0, None).await
    }

    pub async fn get_bytes(&self, uri: &S3Uri) -> Result<Vec<u8>, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| classify(e, "read", uri))?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Transient {
                uri: uri.to_string(),
                op: "read",
                message: e.to_string(),
            })?;
        Ok(data.into_bytes().to_vec())
    }

    pub async fn put(
        &self,
        uri: &S3Uri,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(e, "write", uri))?;
        Ok(())
    }

    pub async fn put_file(&self, uri: &S3Uri, path: &std::path::Path) -> Result<(), StorageError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::Refused {
                uri: uri.to_string(),
                op: "upload",
                message: format!("{}: {e}", path.display()),
            })?;
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .body(body)
            .send()
            .await
            .map_err(|e| classify(e, "write", uri))?;
        Ok(())
    }

    pub async fn delete(&self, uri: &S3Uri) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .send()
            .await
            .map_err(|e| classify(e, "delete", uri))?;
        Ok(())
    }

    /// Server-side copy of `from` to `to`; with `if_match`, only while `from` is still that
    /// version (else `Changed`). One request, so objects up to S3's 5 GiB copy limit.
    pub async fn copy(
        &self,
        from: &S3Uri,
        to: &S3Uri,
        if_match: Option<&str>,
    ) -> Result<(), StorageError> {
        let source = format!(
            "{}/{}",
            from.bucket,
            percent_encoding::utf8_percent_encode(&from.key, COPY_SOURCE_ESCAPES)
        );
        let mut request = self
            .client
            .copy_object()
            .copy_source(source)
            .bucket(&to.bucket)
            .key(&to.key);
        if let Some(etag) = if_match.filter(|e| !e.is_empty()) {
            request = request.copy_source_if_match(etag);
        }
        request
            .send()
            .await
            .map_err(|e| classify(e, "copy", from))?;
        Ok(())
    }

    /// Deletes `uri` only while it is still version `etag` (servers without conditional
    /// deletes delete unconditionally).
    pub async fn delete_if_match(&self, uri: &S3Uri, etag: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .if_match(etag)
            .send()
            .await
            .map_err(|e| classify(e, "delete", uri))?;
        Ok(())
    }

    /// A writer that uploads `uri` in parts as it fills; nothing is visible at `uri` until
    /// `finish`, and `abort` leaves nothing behind.
    pub fn part_writer(&self, uri: S3Uri, content_type: &'static str) -> PartWriter {
        PartWriter::new(self.client.clone(), uri, content_type, self.part_size)
    }
}
