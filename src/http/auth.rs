//! Bearer-token authentication by scope.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::config::{Scope, Token};

/// The tokens and the scope a route group needs.
#[derive(Clone)]
pub struct Guard {
    /// Every configured token.
    pub tokens: Arc<Vec<Token>>,
    /// The scope required.
    pub scope: Scope,
}

/// `router` with every route behind a bearer token that grants `scope` (routes documented
/// in the OpenAPI document).
pub fn scoped_api<S>(
    router: utoipa_axum::router::OpenApiRouter<S>,
    tokens: &Arc<Vec<Token>>,
    scope: Scope,
) -> utoipa_axum::router::OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(middleware::from_fn_with_state(
        Guard {
            tokens: tokens.clone(),
            scope,
        },
        require_scope,
    ))
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 without a valid bearer token, 403 without the scope.
pub async fn require_scope(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::Unauthorized("missing bearer token".into()).into_response();
    };
    let Some(secret) = presented
        .strip_prefix("Bearer ")
        .or_else(|| presented.strip_prefix("bearer "))
    else {
        return ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into())
            .into_response();
    };
    let secret = secret.trim().as_bytes();
    // Check every token so the time taken does not reveal which one nearly matched.
    let mut found: Option<&Token> = None;
    for t in guard.tokens.iter() {
        if same_secret(t.token.as_bytes(), secret) {
            found = Some(t);
        }
    }
    match found {
        None => ApiError::Unauthorized("invalid token".into()).into_response(),
        Some(t) if !t.allows(guard.scope) => ApiError::Forbidden(format!(
            "token {:?} lacks the `{}` scope",
            t.name,
            guard.scope.as_str()
        ))
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
