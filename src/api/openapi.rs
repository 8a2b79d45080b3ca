//! The OpenAPI 3.1 description of the HTTP API, generated (aide) from the routes and the
//! types' JSON Schemas; served at `/openapi.json`, committed as `docs/openapi.json`.

use std::sync::{Arc, OnceLock};

use aide::generate::GenContext;
use aide::openapi::{
    Info, OpenApi, Operation, ReferenceOr, Response, SecurityScheme, StatusCode as DocStatus,
};
use aide::transform::{TransformOpenApi, TransformOperation};
use aide::{OperationInput, OperationOutput};
use axum::Json;
use axum::extract::{FromRequest, Request};
use indexmap::IndexMap;

use super::error::{ApiError, ErrorBody};
use crate::job::JobSpec;

/// Where the description is committed, and the command that writes it.
pub const COMMITTED_PATH: &str = "docs/openapi.json";
pub const REGENERATE: &str = "sluice schema openapi > docs/openapi.json";

/// The whole description (every route, whatever `api.serve_metrics` says), built once.
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut api = OpenApi::default();
        let _ = super::routes(Arc::new(super::auth::Tokens::open()), true)
            .finish_api_with(&mut api, describe);
        let mut value = serde_json::to_value(&api).expect("the description serialises");
        axum_wildcards_as_parameters(&mut value);
        value
    })
}

/// The description pretty-printed with a final newline, as committed.
pub fn render() -> String {
    let mut text = serde_json::to_string_pretty(document()).expect("JSON serialises");
    text.push('\n');
    text
}

fn describe(api: TransformOpenApi<'_>) -> TransformOpenApi<'_> {
    api.info(Info {
        title: "sluice".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        summary: Some("Batch inference and training jobs: submit, follow, cancel, download".into()),
        description: Some(
            "Every error answer is `ErrorBody`: `{\"error\": {\"code\", \"message\", \"field\"?}}`. \
             Routes under /v1 need `Authorization: Bearer <token>` when the API has tokens \
             (`api.tokens`); /healthz, /readyz, /metrics and /openapi.json never do. \
             Regenerate the committed copy with `sluice schema openapi > docs/openapi.json`."
                .into(),
        ),
        ..Info::default()
    })
    .security_scheme(
        "bearer",
        SecurityScheme::Http {
            scheme: "bearer".into(),
            bearer_format: Some("slc_<64 hex digits> (`sluice token new`)".into()),
            description: None,
            extensions: IndexMap::default(),
        },
    )
}

/// axum captures the rest of a path with `{*name}`; OpenAPI writes it `{name}`.
fn axum_wildcards_as_parameters(doc: &mut serde_json::Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let renamed: serde_json::Map<String, serde_json::Value> = std::mem::take(paths)
            .into_iter()
            .map(|(path, item)| (path.replace("{*", "{"), item))
            .collect();
        *paths = renamed;
    }
}

/// Describing an operation's error answers, all `ErrorBody`.
pub trait Errors {
    /// Adds the answer with status `N` and what it means here.
    fn error<const N: u16>(self, meaning: &str) -> Self;
    /// The answers every `/v1` route can give: 401, 403, 503, and 500 for a panic or an
    /// unreadable record.
    fn v1_errors(self) -> Self;
}

impl Errors for TransformOperation<'_> {
    fn error<const N: u16>(self, meaning: &str) -> Self {
        self.response_with::<N, ApiError, _>(|r| r.description(meaning))
    }

    fn v1_errors(self) -> Self {
        self.security_requirement("bearer")
            .error::<401>("`unauthorized`: no bearer token, or one the API does not know")
            .error::<403>("`forbidden`: the token lacks the scope, or the job is outside its allowed prefixes (`field` names the location)")
            .error::<500>("`internal` (a handler failed; nothing was changed) or `unreadable_record` (the job's record cannot be read)")
            .error::<503>("`unavailable`: Redis, the broker or S3 does not answer; retry later")
    }
}

impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn operation_response(ctx: &mut GenContext, operation: &mut Operation) -> Option<Response> {
        Json::<ErrorBody>::operation_response(ctx, operation)
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<DocStatus>, Response)> {
        Self::operation_response(ctx, operation)
            .map(|r| vec![(None, r)])
            .unwrap_or_default()
    }
}

/// A job spec body, kept as bytes so the API parses it itself (with its own limits and
/// messages), described as a JSON `JobSpec`.
pub struct SpecBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for SpecBody {
    type Rejection = <axum::body::Bytes as FromRequest<S>>::Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(SpecBody)
    }
}

impl OperationInput for SpecBody {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        Json::<JobSpec>::operation_input(ctx, operation);
    }
}

/// A streamed object: `application/octet-stream` with its `Content-Length`.
pub struct ObjectStream(pub axum::response::Response);

impl axum::response::IntoResponse for ObjectStream {
    fn into_response(self) -> axum::response::Response {
        self.0
    }
}

impl OperationOutput for ObjectStream {
    type Inner = ();

    fn operation_response(_ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        let schema = aide::openapi::SchemaObject {
            json_schema: schemars::json_schema!({"type": "string", "contentMediaType": "application/octet-stream"}),
            example: None,
            external_docs: None,
        };
        Some(Response {
            description: "the object's bytes as stored, streamed".into(),
            content: IndexMap::from_iter([(
                "application/octet-stream".into(),
                aide::openapi::MediaType {
                    schema: Some(schema),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        })
    }
}

/// A plain-text answer (`/healthz`, `/metrics`).
pub fn text_response(description: &str) -> Response {
    Response {
        description: description.into(),
        content: IndexMap::from_iter([("text/plain".into(), aide::openapi::MediaType::default())]),
        ..Default::default()
    }
}

/// Sets the answer with status `code` on an operation, replacing any.
pub fn set_response(op: &mut Operation, code: u16, response: Response) {
    let responses = op.responses.get_or_insert_with(Default::default);
    responses
        .responses
        .insert(DocStatus::Code(code), ReferenceOr::Item(response));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_description_matches_the_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(root.join(COMMITTED_PATH))
            .unwrap_or_else(|e| panic!("{COMMITTED_PATH}: {e}; generate it with `{REGENERATE}`"));
        assert!(
            committed == render(),
            "{COMMITTED_PATH} drifted from the routes and types; regenerate it with `{REGENERATE}` and commit it"
        );
    }

    #[test]
    fn every_route_is_described_with_its_answers() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let mut described: Vec<String> = Vec::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                described.push(format!("{} {path}", method.to_uppercase()));
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|c| c.starts_with('2')),
                    "{method} {path} has no success answer"
                );
                if path.starts_with("/v1") {
                    for code in ["401", "403", "503"] {
                        let error = &responses[code]["content"]["application/json"]["schema"];
                        assert_eq!(
                            error["$ref"], "#/components/schemas/ErrorBody",
                            "{method} {path} {code}"
                        );
                    }
                }
            }
        }
        described.sort();
        assert_eq!(
            described,
            [
                "GET /healthz",
                "GET /metrics",
                "GET /openapi.json",
                "GET /readyz",
                "GET /v1/jobs",
                "GET /v1/jobs/{id}",
                "GET /v1/jobs/{id}/results",
                "GET /v1/jobs/{id}/results/{name}",
                "POST /v1/jobs",
                "POST /v1/jobs/{id}/cancel",
            ]
        );
        let submit = &paths["/v1/jobs"]["post"];
        assert_eq!(
            submit["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/JobSpec"
        );
        for schema in [
            "JobSpec",
            "JobView",
            "JobList",
            "Created",
            "ErrorBody",
            "ResultsIndex",
        ] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "{schema} missing"
            );
        }
    }
}
