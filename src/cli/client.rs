//! A small typed client of sluice's HTTP API, used by the CLI.

use serde::de::DeserializeOwned;

use crate::api::{Created, ErrorBody, JobList, JobView, ResultsIndex};
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
    #[error(
        "api.ca_cert {path}: {message} (give a PEM file holding the CA that signed the API's certificate)"
    )]
    CaCert { path: String, message: String },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `base` (`http://` or `https://`; HTTPS trusts the system's
    /// root certificates).
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The CLI's client: `api.url`, `api.client_token`, and `api.ca_cert` (a PEM file of
    /// CA certificates trusted besides the system's, for an API behind a private CA).
    pub fn from_settings(api: &crate::settings::ApiSettings) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder();
        if !api.ca_cert.is_empty() {
            let problem = |message: String| ClientError::CaCert {
                path: api.ca_cert.clone(),
                message,
            };
            let pem = std::fs::read(&api.ca_cert).map_err(|e| problem(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| problem(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(problem("holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ClientError::CaCert {
            path: api.ca_cert.clone(),
            message: e.to_string(),
        })?;
        Ok(Self {
            http,
            base: api.url.trim_end_matches('/').to_string(),
            token: None,
        }
        .with_token(&api.client_token))
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

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let response =
            self.authorised(request)
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

    /// The parts a finished job's manifest lists (`partial`: a failed job's too).
    pub async fn results(&self, id: &str, partial: bool) -> Result<ResultsIndex, ClientError> {
        let url = format!("{}/v1/jobs/{id}/results?partial={partial}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// Starts streaming one part (`name` from `results`); the body is read by the caller.
    pub async fn part(
        &self,
        id: &str,
        name: &str,
        partial: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!(
            "{}/v1/jobs/{id}/results/{name}?partial={partial}",
            self.base
        );
        let request = self.authorised(self.http.get(&url));
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        // An error answer is small JSON: decode it into the usual error.
        Err(self
            .decode::<serde_json::Value>(&url, response)
            .await
            .err()
            .unwrap_or_else(|| ClientError::Protocol {
                url,
                message: "an error status with a success body".into(),
            }))
    }

    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        let url = format!("{}/v1/jobs/{id}/cancel", self.base);
        self.send(self.http.post(&url), &url).await
    }
}
