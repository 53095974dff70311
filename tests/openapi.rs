//! `/api/openapi.json` covers exactly the served routes.
//!
//! The router and the document come from the same registrations (`utoipa_axum`'s
//! `OpenApiRouter::routes(routes!(handler))` in `src/http`), so a route registered that way is
//! in both. This test checks the two ways that could still drift: every operation in the
//! document is answered by a route (never by the fallback), and no route in `src/http` is
//! registered around the document (a plain `.route(` or `Router::new()`), with as many
//! operations in the document as handlers registered. Routes served only when configured
//! (the tile proxy, with `[tiles]`) are in the document exactly when they are served.

mod common;

use std::collections::BTreeSet;

use common::lab_log::LabLog;
use common::{ADMIN_TOKEN, TestApp, both_modes};
use provd::config::rekor::RawRekorBackend;
use provd::config::{RawRekor, TilesConfig};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Files of `src/http` whose routes are served only when configured: the tile proxy, with
/// `[tiles]`.
const CONDITIONAL: [&str; 1] = ["tiles.rs"];

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

/// Checks `t`'s document against the handlers registered in `src/http` (those of
/// [`CONDITIONAL`] files only when `conditional`), the `expected` routes with their scope
/// (`None`: open), and that every documented operation is served by its route.
async fn check_document(t: &TestApp, conditional: bool, expected: &[((&str, &str), Option<&str>)]) {
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
    let handlers: Vec<&String> = handlers
        .iter()
        .filter(|h| conditional || !CONDITIONAL.iter().any(|f| h.starts_with(&format!("{f}:"))))
        .collect();
    assert_eq!(
        ops.len(),
        handlers.len(),
        "operations {ops:#?} vs handlers {handlers:#?}"
    );
    for (route, scope) in expected {
        let key = (route.0.to_owned(), route.1.to_owned());
        assert!(ops.contains(&key), "{route:?} is documented");
        let op = &doc["paths"][route.1][route.0.to_lowercase()];
        match scope {
            Some(s) => assert_eq!(op["security"][0]["bearer"][0], *s, "{route:?} scope"),
            None => assert!(op.get("security").is_none(), "{route:?} is open"),
        }
    }
    // Path templates are OpenAPI's (`{name}`), never axum's wildcard (`{*name}`), and each
    // names a documented path parameter.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(
            !path.contains("{*"),
            "{path}: an axum wildcard in the document"
        );
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_start_matches('{').trim_end_matches('}');
            for m in METHODS {
                let Some(op) = item.get(m) else { continue };
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{m} {path}: path parameter {name} is documented"
                );
            }
        }
    }

    // Every operation says what it takes and gives: a schema for each request body, a
    // media type for each answer, the error schema for each error answer, 401 and 403
    // where a token is needed, 503 where the in-flight limit applies.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let at = format!("{m} {path}");
            if let Some(content) = op["requestBody"]["content"].as_object() {
                for (media, body) in content {
                    assert!(
                        body["schema"].is_object(),
                        "{at}: {media} body has a schema"
                    );
                }
            }
            let responses = op["responses"].as_object().expect("responses");
            for (status, resp) in responses {
                let content = resp["content"].as_object();
                assert!(
                    content.is_some_and(|c| !c.is_empty()),
                    "{at} {status}: a media type"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{at} {status}: the error schema"
                    );
                }
            }
            if op.get("security").is_some() {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{at}: documents {status}");
                }
            }
            if !["/healthz", "/readyz", "/metrics"].contains(&path.as_str()) {
                assert!(responses.contains_key("503"), "{at}: documents 503");
            }
        }
    }
    assert!(doc["components"]["schemas"]["Error"].is_object());

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
}

/// Routes served (and documented) in every configuration, with their scope.
const ALWAYS: [((&str, &str), Option<&str>); 13] = [
    (("GET", "/api/v1/status"), None),
    (("GET", "/dashboard"), None),
    (("GET", "/metrics"), None),
    (("GET", "/api/openapi.json"), None),
    (("POST", "/api/v1/rekor/submissions"), Some("submit")),
    (
        ("GET", "/api/v1/rekor/submissions/{id}/bundle"),
        Some("read"),
    ),
    (("GET", "/api/v1/proofs/{proof_root}"), Some("read")),
    (
        ("GET", "/api/v1/provcache/entries/{veri_key}/bundle"),
        Some("read"),
    ),
    (("GET", "/api/v1/proofs/{proof_root}/status"), Some("read")),
    (("POST", "/api/v1/provcache/import"), Some("write")),
    (
        ("PUT", "/api/v1/provcache/entries/{veri_key}/receipt"),
        Some("write"),
    ),
    (("GET", "/api/v1/rekor/checkpoints"), Some("read")),
    (
        ("POST", "/api/v1/rekor/divergences/{id}/ack"),
        Some("admin"),
    ),
];

both_modes! {
async fn the_openapi_document_covers_exactly_the_served_routes() {
    let Some(t) = TestApp::start().await else {
        return;
    };
    check_document(&t, false, &ALWAYS).await;
    // Without `[tiles]` the proxy is neither served nor documented.
    let resp = t
        .http
        .get(t.url("/tiles/x/checkpoint"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.expect("body").contains("no such route"));
    t.finish().await;
}
}

both_modes! {
/// With a Rekor backend (a local dev log) and `[tiles]` configured, the log monitoring and
/// tile proxy routes are served and documented, the tile route under a plain template.
async fn the_document_covers_the_configured_rekor_and_tile_routes() {
    let log = LabLog::start().await;
    let rekor = RawRekor {
        default_backend: Some("lab".into()),
        backends: [(
            "lab".to_owned(),
            RawRekorBackend {
                kind: Some("private".into()),
                api: Some("v2".into()),
                url: Some(log.base.clone()),
                keys: Some(vec![log.info.v2_vkey.clone()]),
                origin: Some(log.info.origin.clone()),
                max_attempts: Some(1),
                read_timeout: Some("10s".into()),
                ..RawRekorBackend::default()
            },
        )]
        .into(),
        queue: None,
    }
    .validate()
    .expect("valid rekor config");
    let tiles = TilesConfig {
        cache_dir: log.scratch_dir("tiles"),
        max_bytes: 64 << 20,
        backends: vec!["lab".into()],
        prefetch: false,
        require_token: true,
    };
    let Some(t) = TestApp::start_with(move |c| {
        c.rekor = rekor;
        c.tiles = Some(tiles);
    })
    .await
    else {
        return;
    };
    let mut expected = ALWAYS.to_vec();
    expected.extend([
        (("GET", "/api/v1/rekor/divergences"), Some("read")),
        (("GET", "/tiles/{log}/checkpoint"), Some("read")),
        (("GET", "/tiles/{log}/tile/{path}"), Some("read")),
    ]);
    check_document(&t, true, &expected).await;
    // The documented tile route is the served wildcard: a multi-segment tile path reaches
    // the proxy (which refuses a malformed one with its own code, not the fallback's).
    let resp = t
        .http
        .get(t.url("/tiles/lab/tile/0/x/y"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.expect("body").contains("bad_tile_path"));
    // And it keeps its scope.
    let resp = t
        .http
        .get(t.url("/tiles/lab/tile/0/000"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    t.finish().await;
}
}
