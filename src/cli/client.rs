//! A small typed client of sluice's HTTP API, used by the CLI.

use serde::de::DeserializeOwned;

use crate::api::{Created, ErrorBody, JobList, JobView};
use crate::job::JobSpec;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the sluice API at {url}: {source} (is `sluice api` or `sluice serve` running? set api.url / SLUICE__API__URL)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{message}")]
    Api {
        status: u16,
        message: String,
        field: Option<String>,
    },
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (none when empty).
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = (!token.is_empty()).then(|| token.to_string());
        self
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        url: &str,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                url: url.to_string(),
                message: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api {
                status: status.as_u16(),
                message: body.error.message,
                field: body.error.field,
            }),
            Err(_) => Err(ClientError::Api {
                status: status.as_u16(),
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                field: None,
            }),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        self.decode(url, response).await
    }

    pub async fn submit(
        &self,
        spec: &JobSpec,
        idempotency_key: Option<&str>,
    ) -> Result<Created, ClientError> {
        let url = format!("{}/v1/jobs", self.base);
        let mut request = self.http.post(&url).json(spec);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.send(request, &url).await
    }

    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/v1/jobs/{id}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    pub async fn jobs(&self, status: Option<&str>, limit: usize) -> Result<JobList, ClientError> {
        let mut url = format!("{}/v1/jobs?limit={limit}", self.base);
        if let Some(status) = status {
            url.push_str(&format!("&status={status}"));
        }
        self.send(self.http.get(&url), &url).await
    }

    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/v1/jobs/{id}/cancel", self.base);
        self.send(self.http.post(&url), &url).await
    }
}
