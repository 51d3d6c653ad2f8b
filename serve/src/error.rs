//! Errors: [`ServeError`] for starting the server, [`ApiError`] for one request, answered in
//! the shapes FastAPI (and so A1111) uses — 422 `{"detail": [{"loc", "msg", "type"}…]}` for a
//! body that does not validate, `{"detail": "…"}` for 401/404/413/503, and A1111's
//! `{"error", "detail", "body", "errors"}` for a failure inside the engine.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_engine::error::ErrorKind;
use serde_json::json;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting that cannot work (said in words the user can act on).
    #[error("{0}")]
    Config(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The async runtime could not start or the server stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Runtime(#[from] std::io::Error),
}

/// One thing wrong with a request body, as pydantic reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldIssue {
    /// Where: `["body", "steps"]`, or `["body", 12]` (a byte offset) for malformed JSON.
    pub loc: Vec<serde_json::Value>,
    /// What is wrong, for a person.
    pub msg: String,
    /// pydantic's error type (`int_parsing`, `greater_than_equal`, `json_invalid`, …).
    pub kind: &'static str,
}

impl FieldIssue {
    /// An issue with body field `field`.
    pub fn field(field: &str, msg: impl Into<String>, kind: &'static str) -> Self {
        FieldIssue {
            loc: vec![json!("body"), json!(field)],
            msg: msg.into(),
            kind,
        }
    }
}

/// A request that failed; its HTTP answer is [`IntoResponse`].
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The body does not validate (422), every issue listed.
    Invalid(Vec<FieldIssue>),
    /// A name (model, sampler, scheduler, VAE) that is not there (404), with the known ones.
    NotFound {
        /// What was looked for ("Sampler", "Model").
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The names there are.
        known: Vec<String>,
    },
    /// No or wrong credentials (401).
    Unauthorized,
    /// The body is over the limit (413).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The engine failed the job (500; 422 when the request itself was at fault, 404 when a
    /// file it names is missing).
    Engine {
        /// The engine's kind of failure.
        kind: Option<ErrorKind>,
        /// Its message.
        message: String,
    },
    /// The server is shutting down or its engine is gone (503).
    Unavailable(String),
}

impl ApiError {
    /// A 422 about one field.
    pub fn field(field: &str, msg: impl Into<String>, kind: &'static str) -> Self {
        ApiError::Invalid(vec![FieldIssue::field(field, msg, kind)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Engine { kind, .. } => match kind {
                Some(ErrorKind::InvalidRequest) => StatusCode::UNPROCESSABLE_ENTITY,
                Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self {
            ApiError::Invalid(issues) => json!({
                "detail": issues
                    .iter()
                    .map(|i| json!({"loc": i.loc, "msg": i.msg, "type": i.kind}))
                    .collect::<Vec<_>>()
            }),
            ApiError::NotFound { what, name, known } => json!({
                "detail": format!("{what} not found: '{name}'; known: {}", known.join(", ")),
                "known": known,
            }),
            ApiError::Unauthorized => json!({"detail": "Incorrect username or password"}),
            ApiError::TooLarge { limit } => {
                json!({"detail": format!("the request body is over {limit} bytes")})
            }
            ApiError::Engine { kind, message } => json!({
                "error": kind.map(|k| format!("{k:?}")).unwrap_or_else(|| "EngineError".into()),
                "detail": "",
                "body": "",
                "errors": message,
            }),
            ApiError::Unavailable(why) => json!({"detail": why}),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.body())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_body(&self.body());
        *response.status_mut() = self.status();
        if self == ApiError::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kiln\""),
            );
        }
        response
    }
}

/// A JSON response body (`Content-Type: application/json`, status 200).
pub fn json_body(value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
