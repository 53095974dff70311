//! `/api/openapi.json` covers exactly the served routes.
//!
//! The router and the document come from the same registrations (`utoipa_axum`'s
//! `OpenApiRouter::routes(routes!(handler))` in `src/http`), so a route registered that way is
//! in both. This test checks the two ways that could still drift: every operation in the
//! document is answered by a route (never by the fallback), and no route in `src/http` is
//! registered around the document (a plain `.route(` or `Router::new()`), with as many
//! operations in the document as handlers registered.

mod common;

use std::collections::BTreeSet;

use common::{ADMIN_TOKEN, TestApp};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `src/http`'s sources: every handler named in `routes!(...)`, and any route registered
/// around the document.
fn registrations() -> (Vec<String>, Vec<String>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut handlers = Vec::new();
    let mut bypasses = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/http") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if line.contains(".route(")
                || line.contains("Router::new()") && !line.contains("OpenApiRouter::new()")
            {
                bypasses.push(format!("{name}:{}: {}", i + 1, line.trim()));
            }
        }
        for part in text.split("routes!(").skip(1) {
            let inner = part.split(')').next().unwrap_or_default();
            handlers.extend(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{name}: {h}")),
            );
        }
    }
    (handlers, bypasses)
}

#[test]
fn no_route_is_registered_around_the_document() {
    let (handlers, bypasses) = registrations();
    assert!(
        bypasses.is_empty(),
        "routes registered without an OpenAPI operation (use OpenApiRouter::routes(routes!(..))): {bypasses:#?}"
    );
    assert!(handlers.len() > 20, "{handlers:?}");
}

#[tokio::test]
async fn the_openapi_document_covers_exactly_the_served_routes() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    let resp = t
        .http
        .get(t.url("/api/openapi.json"))
        .send()
        .await
        .expect("openapi");
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("json");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "OpenAPI 3: {}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "provd");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let ops = operations(&doc);

    // As many operations as registered handlers (each handler has one method and path).
    let (handlers, _) = registrations();
    assert_eq!(
        ops.len(),
        handlers.len(),
        "operations {ops:#?} vs handlers {handlers:#?}"
    );
    for (route, scope) in [
        (("GET", "/api/v1/status"), None),
        (("GET", "/dashboard"), None),
        (("GET", "/metrics"), None),
        (("GET", "/api/openapi.json"), None),
        (("POST", "/api/v1/rekor/submissions"), Some("submit")),
        (("GET", "/api/v1/proofs/{proof_root}"), Some("read")),
    ] {
        let key = (route.0.to_owned(), route.1.to_owned());
        assert!(ops.contains(&key), "{route:?} is documented");
        let op = &doc["paths"][route.1][route.0.to_lowercase()];
        match scope {
            Some(s) => assert_eq!(op["security"][0]["bearer"][0], s, "{route:?} scope"),
            None => assert!(op.get("security").is_none(), "{route:?} is open"),
        }
    }

    // Every documented operation is served by its route, not by the fallback.
    for (method, path) in &ops {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = t
            .http
            .request(m, t.url(&concrete))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("request");
        let status = resp.status();
        assert_ne!(status, 405, "{method} {path}: method not served");
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("no such route"),
            "{method} {path}: answered by the fallback ({status} {body})"
        );
    }
    // And the fallback really answers what is not routed.
    let body = t
        .http
        .get(t.url("/api/v1/nothing-here"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(body.contains("no such route"), "{body}");
    t.finish().await;
}
