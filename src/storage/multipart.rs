//! Buffered multipart upload: small outputs become one PUT, large ones stream in parts.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::{StorageError, classify};
use crate::uri::S3Uri;

pub struct PartWriter {
    client: Client,
    uri: S3Uri,
    content_type: &'static str,
    part_size: usize,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    bytes_written: u64,
}

impl PartWriter {
    pub(super) fn new(
        client: Client,
        uri: S3Uri,
        content_type: &'static str,
        part_size: usize,
    ) -> Self {
        Self {
            client,
            uri,
            content_type,
            part_size,
            buffer: Vec::with_capacity(part_size.min(1 << 20)),
            upload_id: None,
            parts: Vec::new(),
            bytes_written: 0,
        }
    }

    pub fn uri(&self) -> &S3Uri {
        &self.uri
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Appends bytes, uploading a part whenever a full one is buffered.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(data);
        self.bytes_written += data.len() as u64;
        if self.buffer.len() >= self.part_size {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn flush_part(&mut self) -> Result<(), StorageError> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let out = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.uri.bucket)
                    .key(&self.uri.key)
                    .content_type(self.content_type)
                    .send()
                    .await
                    .map_err(|e| classify(e, "start upload", &self.uri))?;
                let id = out.upload_id().unwrap_or_default().to_string();
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as i32 + 1;
        let body = std::mem::take(&mut self.buffer);
        let out = self
            .client
            .upload_part()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(e, "upload part", &self.uri))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    /// Makes the object visible at its key, replacing any earlier version whole.
    pub async fn finish(mut self) -> Result<u64, StorageError> {
        let Some(upload_id) = self.upload_id.clone() else {
            let body = std::mem::take(&mut self.buffer);
            self.client
                .put_object()
                .bucket(&self.uri.bucket)
                .key(&self.uri.key)
                .content_type(self.content_type)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| classify(e, "write", &self.uri))?;
            return Ok(self.bytes_written);
        };
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(self.bytes_written),
            Err(e) => {
                let err = classify(e, "complete upload", &self.uri);
                self.abort().await;
                Err(err)
            }
        }
    }

    /// Drops what was uploaded so far; the key is left as it was.
    pub async fn abort(self) {
        if let Some(upload_id) = &self.upload_id {
            let result = self
                .client
                .abort_multipart_upload()
                .bucket(&self.uri.bucket)
                .key(&self.uri.key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(uri = %self.uri, error = %aws_sdk_s3::error::DisplayErrorContext(&e),
                    "could not abort multipart upload; a bucket lifecycle rule will clean it up");
            }
        }
    }
}
