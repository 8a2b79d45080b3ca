//! Bearer tokens for the HTTP API: each token (kept as its sha256) has a name, scopes
//! (`submit`, `read`, `cancel`, `admin`) and the S3 prefixes its jobs may read and write.
//! With no tokens configured the API is open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::job::{Allowance, JobSpec};
use crate::settings::{ApiSettings, ApiToken};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Submit,
    Read,
    Cancel,
    Admin,
}

impl Scope {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "submit" => Some(Scope::Submit),
            "read" => Some(Scope::Read),
            "cancel" => Some(Scope::Cancel),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Cancel => "cancel",
            Scope::Admin => "admin",
        }
    }
}

/// Who made a request, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    scopes: Vec<Scope>,
    /// The S3 locations its jobs may use.
    pub allowance: Allowance,
}

impl Caller {
    /// Everyone, when the API is open.
    fn anyone() -> Self {
        Self {
            name: "anonymous".into(),
            scopes: vec![Scope::Admin],
            allowance: Allowance::any("anyone (the API is open)"),
        }
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            return Ok(());
        }
        Err(ApiError::Forbidden {
            message: format!(
                "token \"{}\" lacks the `{}` scope (it has: {})",
                self.name,
                scope.as_str(),
                self.scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            field: None,
        })
    }
}

impl Caller {
    /// Whether every job is visible to this caller: admin tokens (and the open API).
    pub fn sees_all(&self) -> bool {
        self.scopes.contains(&Scope::Admin) || self.allowance.is_any()
    }

    /// Tenancy: a token reads, lists and cancels only the jobs inside its allowance (the
    /// jobs it could have submitted); admin excepted. Any other job answers 404, exactly as
    /// a job that does not exist, so ids of other teams' jobs reveal nothing.
    pub fn may_see(&self, id: &str, spec: &JobSpec) -> Result<(), ApiError> {
        if self.sees_all() || self.allowance.covers(spec) {
            Ok(())
        } else {
            Err(ApiError::NotFound(id.to_string()))
        }
    }
}

/// A token setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("api token {name:?}: {problem}")]
pub struct TokenConfigError {
    pub name: String,
    pub problem: String,
}

/// The tokens the API accepts, by their sha256.
pub struct Tokens {
    by_hash: HashMap<String, Caller>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<ApiToken>,
}

impl Tokens {
    pub fn load(settings: &ApiSettings) -> Result<Self, TokenConfigError> {
        let mut all = settings.tokens.clone();
        if !settings.tokens_file.is_empty() {
            let problem = |problem: String| TokenConfigError {
                name: settings.tokens_file.clone(),
                problem,
            };
            let text = std::fs::read_to_string(&settings.tokens_file)
                .map_err(|e| problem(format!("cannot read api.tokens_file: {e}")))?;
            let file: TokensFile =
                toml::from_str(&text).map_err(|e| problem(format!("api.tokens_file: {e}")))?;
            all.extend(file.tokens);
        }
        let mut by_hash = HashMap::new();
        for token in all {
            let problem = |problem: String| TokenConfigError {
                name: token.name.clone(),
                problem,
            };
            let hash = token.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(problem(
                    "sha256 must be 64 hex digits (`sluice token new` prints it)".into(),
                ));
            }
            let scopes = token
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        problem(format!("unknown scope `{s}` (submit, read, cancel, admin)"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let allowance = Allowance::parse(format!("token \"{}\"", token.name), &token.allow)
                .map_err(&problem)?;
            by_hash.insert(
                hash,
                Caller {
                    name: token.name.clone(),
                    scopes,
                    allowance,
                },
            );
        }
        Ok(Self { by_hash })
    }

    /// No tokens: every caller is let in (the API's state without `api.tokens`).
    pub fn open() -> Self {
        Self {
            by_hash: HashMap::new(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn caller(&self, token: &str) -> Option<Caller> {
        self.by_hash.get(&hash_token(token)).cloned()
    }
}

/// Hex sha256 of a token: what settings keep instead of the token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (URL-safe, 43 characters).
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    format!("slc_{}", hex::encode(bytes))
}

/// Middleware: finds the caller from `Authorization: Bearer …`, or refuses with 401.
pub async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    if tokens.is_open() {
        request.extensions_mut().insert(Caller::anyone());
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let caller = match presented {
        None => {
            return ApiError::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>` (the CLI sends api.client_token)".into(),
            )
            .into_response();
        }
        Some(token) => match tokens.caller(token) {
            Some(caller) => caller,
            None => {
                return ApiError::Unauthorized(
                    "unknown or revoked token: check the token, or ask for a new one".into(),
                )
                .into_response();
            }
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_matched_by_hash_with_their_scopes_and_allowance() {
        let token = new_token();
        let settings = ApiSettings {
            tokens: vec![ApiToken {
                name: "etl".into(),
                sha256: hash_token(&token),
                scopes: vec!["submit".into(), "read".into()],
                allow: vec!["s3://data/team-a/".into()],
            }],
            ..Default::default()
        };
        let tokens = Tokens::load(&settings).unwrap();
        assert!(!tokens.is_open());
        assert!(tokens.caller("wrong").is_none());
        let caller = tokens.caller(&token).unwrap();
        assert!(caller.require(Scope::Submit).is_ok());
        let err = caller.require(Scope::Cancel).unwrap_err().to_string();
        assert!(
            err.contains("cancel") && err.contains("submit, read"),
            "{err}"
        );
        let bad = ApiSettings {
            tokens: vec![ApiToken {
                scopes: vec!["root".into()],
                ..settings.tokens[0].clone()
            }],
            ..Default::default()
        };
        let err = Tokens::load(&bad)
            .err()
            .expect("an unknown scope is refused");
        assert!(err.to_string().contains("unknown scope"), "{err}");
    }
}
