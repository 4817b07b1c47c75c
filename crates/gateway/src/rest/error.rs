//! PostgREST's error responses: `{"code", "message", "details", "hint"}` with the HTTP status it maps
//! each SQLSTATE (or its own `PGRSTxxx` code) to. A load test counts errors by these statuses, so the
//! mapping follows PostgREST's `Error.hs` class by class.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq)]
pub struct RestError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
}

impl RestError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> RestError {
        RestError {
            status,
            code: code.into(),
            message: message.into(),
            details: None,
            hint: None,
        }
    }

    pub fn details(mut self, details: impl Into<String>) -> RestError {
        self.details = Some(details.into());
        self
    }

    /// PGRST100: the query string does not parse.
    pub fn parse(message: impl Into<String>, details: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, "PGRST100", message).details(details)
    }

    /// PGRST102: the body is not what the request needs.
    pub fn body(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, "PGRST102", message)
    }

    /// A feature PostgREST has and this stand-in does not: said plainly instead of half-done, with
    /// PostgREST's own code for an unimplemented feature.
    pub fn unsupported(what: &str) -> RestError {
        RestError::new(
            StatusCode::BAD_REQUEST,
            "PGRST127",
            format!("{what} is not supported by the fleetbench local stack"),
        )
    }

    pub fn internal(message: impl std::fmt::Display) -> RestError {
        tracing::error!("rest: {message}");
        RestError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "PGRST000",
            message.to_string(),
        )
    }

    /// A database error, as PostgREST reports it for a request that ran as `role`.
    pub fn from_db(e: &tokio_postgres::Error, role: &str) -> RestError {
        let Some(db) = e.as_db_error() else {
            return RestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST001",
                format!("Database client error. Retrying the connection. ({e})"),
            );
        };
        let code = db.code().code();
        RestError {
            status: sqlstate_status(code, role),
            code: code.to_string(),
            message: db.message().to_string(),
            details: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }

    pub fn from_pool(e: &deadpool_postgres::PoolError) -> RestError {
        match e {
            deadpool_postgres::PoolError::Timeout(_) => RestError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "PGRST003",
                "Timed out acquiring connection from connection pool.",
            ),
            other => RestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PGRST001",
                format!("Database client error. Retrying the connection. ({other})"),
            ),
        }
    }
}

/// PostgREST's status for a SQLSTATE. `42501` (insufficient privilege, including a row-level
/// security violation) is 401 for the anonymous role and 403 for everyone else.
pub fn sqlstate_status(code: &str, role: &str) -> StatusCode {
    let class = code.get(..2).unwrap_or("");
    match code {
        "42501" if role == "anon" => StatusCode::UNAUTHORIZED,
        "42501" => StatusCode::FORBIDDEN,
        "23503" | "23505" => StatusCode::CONFLICT,
        "25006" => StatusCode::METHOD_NOT_ALLOWED,
        "42883" | "42P01" => StatusCode::NOT_FOUND,
        "53400" => StatusCode::INTERNAL_SERVER_ERROR,
        "P0001" => StatusCode::BAD_REQUEST,
        _ if class == "PT" => code
            .get(2..)
            .and_then(|n| n.parse::<u16>().ok())
            .and_then(|n| StatusCode::from_u16(n).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        _ => match class {
            "08" | "53" => StatusCode::SERVICE_UNAVAILABLE,
            "0L" | "0P" | "28" => StatusCode::FORBIDDEN,
            "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
            | "HV" | "P0" | "XX" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        },
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code, "details": self.details, "hint": self.hint, "message": self.message,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_postgrest() {
        let cases = [
            ("42501", "anon", 401),
            ("42501", "authenticated", 403),
            ("23514", "authenticated", 400),
            ("23505", "authenticated", 409),
            ("57014", "authenticated", 500),
            ("42P01", "anon", 404),
            ("25006", "anon", 405),
            ("53300", "anon", 503),
            ("53400", "anon", 500),
            ("08006", "anon", 503),
            ("PT402", "anon", 402),
            ("22P02", "anon", 400),
        ];
        for (code, role, status) in cases {
            assert_eq!(
                sqlstate_status(code, role).as_u16(),
                status,
                "{code} as {role}"
            );
        }
    }
}
