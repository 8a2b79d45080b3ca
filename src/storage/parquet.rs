//! Parquet objects in S3 for the `parquet` crate's async reader: footers and column chunks
//! fetched as byte ranges, pinned to the ETag planning saw.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{Storage, StorageError};
use crate::uri::S3Uri;

/// Bytes fetched with the footer, so a small footer costs one request (the default in
/// arrow-rs's object-store reader is similar).
const FOOTER_PREFETCH: usize = 64 * 1024;

/// One Parquet object, read by byte ranges.
pub struct S3ParquetReader {
    storage: Storage,
    uri: S3Uri,
    size: u64,
    etag: Option<String>,
    failure: StorageFailure,
}

/// The last storage error of a reader, kept typed so the caller can tell a retryable outage
/// from a bad file (the parquet crate's error type flattens it to text). Shared, because the
/// reader itself moves into the parquet stream.
#[derive(Clone, Default)]
pub struct StorageFailure(Arc<std::sync::Mutex<Option<StorageError>>>);

impl StorageFailure {
    pub fn take(&self) -> Option<StorageError> {
        self.0.lock().expect("failure slot").take()
    }

    fn set(&self, e: StorageError) {
        *self.0.lock().expect("failure slot") = Some(e);
    }
}

impl S3ParquetReader {
    pub fn new(storage: Storage, uri: S3Uri, size: u64, etag: Option<String>) -> Self {
        Self {
            storage,
            uri,
            size,
            etag,
            failure: StorageFailure::default(),
        }
    }

    /// Where a failed read leaves its storage error.
    pub fn failure(&self) -> StorageFailure {
        self.failure.clone()
    }

    /// The file's metadata (schema, row groups and their row counts), from its footer.
    pub async fn metadata(&mut self) -> Result<Arc<ParquetMetaData>, ParquetError> {
        self.get_metadata(None).await
    }
}

impl AsyncFileReader for S3ParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            match self
                .storage
                .get_range(&self.uri, range.start, range.end, self.etag.as_deref())
                .await
            {
                Ok(bytes) => Ok(bytes),
                Err(e) => {
                    let message = e.to_string();
                    self.failure.set(e);
                    Err(ParquetError::External(message.into()))
                }
            }
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
