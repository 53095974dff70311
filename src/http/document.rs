//! The OpenAPI document as served at `/api/openapi.json`.
//!
//! The operations come from the handlers' `#[utoipa::path]` annotations (with the request
//! body schemas of the types they deserialize). What every route shares is added here, once,
//! because the layers that cause it are shared too: the bearer guard's 401 and 403
//! (`auth.rs`), the JSON extractors' 400, 413 and 415 (`error.rs`), the in-flight limit's
//! 503 (`serve::limit_in_flight`, which spares the probes and `/metrics`), and the error
//! body every 4xx and 5xx carries (`error::json_errors`). Path parameters get the formats
//! the handlers check, so a client generated from the document sends only what is served.

use actors::domain::limits;
use actors::domain::verikey::{MAX_FIELD_LEN, MAX_VEX_DIGESTS};
use serde_json::{Map, Value, json};
use utoipa::PartialSchema as _;

use super::error::ErrorBody;

/// Paths the in-flight limit never refuses (`serve::EXEMPT`).
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// `sha256:` and 64 lowercase hex digits: a VeriKey, a proof root, a policy hash.
pub const SHA256_DIGEST: &str = "^sha256:[0-9a-f]{64}$";

/// The format of each path parameter, by name, as its handler checks it.
fn path_parameter_schema(path: &str, name: &str) -> Option<Value> {
    Some(match name {
        // `actors::domain::submission::is_submission_id`.
        "id" if path.starts_with("/api/v1/rekor/submissions/") => {
            json!({"type": "string", "pattern": "^sub-[0-9a-f]{64}$"})
        }
        "id" => json!({"type": "integer", "format": "int64", "minimum": 1}),
        // A Rekor UUID (64 hex digits) or a v1 entry ID (80).
        "uuid" => json!({"type": "string", "pattern": "^([0-9a-fA-F]{64}|[0-9a-fA-F]{80})$"}),
        "veri_key" | "proof_root" => json!({"type": "string", "pattern": SHA256_DIGEST}),
        // `actors::domain::policy::check_name`.
        "name" => json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}),
        "index" => json!({"type": "integer", "format": "int64", "minimum": 0}),
        _ => return None,
    })
}

/// The format of each query or header parameter, by name, as its handler checks it.
fn other_parameter_schema(name: &str) -> Option<Value> {
    Some(match name {
        "limit" | "pageSize" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        "since" | "page" => json!({"type": "integer", "format": "int64", "minimum": 0}),
        "size" => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        "density" => json!({"type": "string", "enum": ["lite", "standard", "strict"]}),
        // `idempotent_id` in `http/mod.rs`.
        "idempotency-key" => json!({"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"}),
        _ => return None,
    })
}

/// The JSON objects the handlers build for their success answers, where described here.
fn response_schema(method: &str, path: &str, status: &str) -> Option<Value> {
    let object = |required: &[&str]| json!({"type": "object", "required": required});
    Some(match (method, path, status) {
        ("get", "/healthz", _) => object(&["status"]),
        ("get", "/readyz", _) => object(&["status", "node_id", "services", "actors"]),
        ("post", "/api/v1/provcache/verikey", _) => json!({
            "type": "object", "required": ["veri_key"],
            "properties": {"veri_key": {"type": "string", "pattern": SHA256_DIGEST}}
        }),
        ("post", "/api/v1/provcache/invalidate", _) => object(&["status", "revocation_id"]),
        ("get", "/api/v1/provcache/revocations", _) => json!({
            "type": "object", "required": ["revocations", "next_since", "has_more"],
            "properties": {"revocations": {"type": "array"}, "next_since": {"type": "integer"}, "has_more": {"type": "boolean"}}
        }),
        ("get", "/api/v1/rejected", _) => json!({
            "type": "object", "required": ["rejected"], "properties": {"rejected": {"type": "array"}}
        }),
        ("get", "/api/v1/rekor/checkpoints", _) => json!({
            "type": "object", "required": ["checkpoints"], "properties": {"checkpoints": {"type": "array"}}
        }),
        ("get", "/api/v1/rekor/divergences", _) => json!({
            "type": "object", "required": ["divergences"], "properties": {"divergences": {"type": "array"}}
        }),
        ("post", "/api/v1/provcache/entries", _) => object(&["status", "veri_key"]),
        ("put", "/api/v1/provcache/entries/{veri_key}/receipt", _) => {
            object(&["veri_key", "rekor_uuid"])
        }
        ("post", "/api/v1/rekor/submissions", _) => json!({
            "type": "object", "required": ["id", "status"],
            "properties": {"id": {"type": "string", "pattern": "^sub-[0-9a-f]{64}$"}, "status": {"type": "string"}}
        }),
        ("get", "/api/v1/rekor/submissions/{id}", _) => {
            object(&["id", "backend", "status", "attempts"])
        }
        ("get", "/api/v1/rekor/entries/{uuid}", _) => {
            object(&["uuid", "backend", "log_index", "transparency_log_entry"])
        }
        ("get", "/api/v1/policies", _) => json!({
            "type": "object", "required": ["policies"], "properties": {"policies": {"type": "array"}}
        }),
        _ => return None,
    })
}

/// A body schema.
type BodySchema = fn() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;

/// The request bodies whose handlers read a type of `actors` or `events` (or raw bytes).
fn foreign_body(method: &str, path: &str) -> Option<BodySchema> {
    Some(match (method, path) {
        ("post", "/api/v1/provcache/verikey") => verikey_inputs,
        ("post", "/api/v1/provcache/invalidate") => invalidate_request,
        ("put", "/api/v1/policies/{name}") => policy_document,
        ("post", "/api/v1/provcache/import") => airgap_bundle,
        ("post", "/api/v1/proofs") => evidence_bytes,
        _ => return None,
    })
}

/// Evidence as uploaded: any non-empty bytes.
pub fn evidence_bytes() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({"type": "string", "format": "binary", "minLength": 1}))
}

/// The standard answers a route can give because of the layers it sits behind.
fn shared_response(status: &str) -> &'static str {
    match status {
        "400" => "a malformed parameter or body; `error.message` names it",
        "401" => "no or malformed bearer token (`WWW-Authenticate: Bearer`)",
        "403" => "the token lacks the scope named in the security requirement",
        "404" => "nothing there",
        "413" => "the body is larger than the route takes",
        "415" => "the body is not `application/json`",
        "503" => {
            "a dependency is unavailable or too many requests are in flight; retry after `Retry-After` seconds"
        }
        _ => "error",
    }
}

/// `api`'s document as served: title, version, the bearer scheme, the error schema and
/// the answers every route shares.
pub fn finish(api: utoipa::openapi::OpenApi) -> Value {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
    let mut doc = api;
    doc.info = utoipa::openapi::InfoBuilder::new()
        .title("provd")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Rekor transparency-log anchoring and a provenance cache of policy verdicts. \
             Every route but health, metrics, status, the dashboard and this document needs \
             a bearer token with the scope named in its security requirement. Every error \
             answer is JSON `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
        ))
        .build();
    let components = doc
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components
        .schemas
        .insert("Error".to_owned(), ErrorBody::schema());
    let mut doc = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    // `entries::entry_of`: exactly one of `veri_key` and `inputs`; without `inputs` the
    // hashes it would give are required.
    if let Some(put_entry) = doc.pointer_mut("/components/schemas/PutEntry") {
        put_entry["oneOf"] = json!([
            {"required": ["veri_key", "policy_hash", "signer_set_hash"],
             "properties": {"veri_key": {"type": "string"}, "inputs": {"type": "null"},
                            "policy_hash": {"type": "string"}, "signer_set_hash": {"type": "string"}}},
            {"required": ["inputs"],
             "properties": {"veri_key": {"type": "null"}, "inputs": {"type": "object"},
                            "policy_hash": {"type": "null"}, "signer_set_hash": {"type": "null"},
                            "feed_epoch": {"type": "null"}}}
        ]);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                if let Some(op) = op.as_object_mut() {
                    complete_operation(path, method, op);
                }
            }
        }
    }
    doc
}

fn complete_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_path_params = params.iter().any(|p| p["in"] == "path");
    let json_body = op
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|c| c.contains_key("application/json"));
    let has_body = op.get("requestBody").is_some();

    let mut shared = Vec::new();
    if !params.is_empty() || has_body {
        shared.push("400");
    }
    if secured {
        shared.extend(["401", "403"]);
    }
    if has_path_params {
        shared.push("404");
    }
    if has_body {
        shared.push("413");
    }
    if json_body {
        shared.push("415");
    }
    if !NEVER_SHED.contains(&path) {
        shared.push("503");
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(responses) = responses {
        for status in shared {
            responses
                .entry(status)
                .or_insert_with(|| json!({"description": shared_response(status)}));
        }
        for (status, resp) in responses.iter_mut() {
            let is_error = status.starts_with('4') || status.starts_with('5');
            let Some(resp) = resp.as_object_mut() else {
                continue;
            };
            if resp.contains_key("content") {
                continue;
            }
            // Every answer without a media type of its own is JSON: an error's body, or
            // the object the handler builds (`response_schema` where it is described).
            let schema = if is_error {
                json!({"$ref": "#/components/schemas/Error"})
            } else {
                response_schema(method, path, status).unwrap_or_else(|| json!({"type": "object"}))
            };
            resp.insert(
                "content".into(),
                json!({"application/json": {"schema": schema}}),
            );
        }
    }
    if let Some(body) = foreign_body(method, path)
        && let Some(content) = op
            .get_mut("requestBody")
            .and_then(|b| b.get_mut("content"))
            .and_then(Value::as_object_mut)
    {
        for media in content.values_mut() {
            media["schema"] = serde_json::to_value(body()).unwrap_or_default();
        }
        // These handlers refuse a request without a body.
        op["requestBody"]["required"] = Value::Bool(true);
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut() {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let schema = if p["in"] == "path" {
                path_parameter_schema(path, &name)
            } else {
                other_parameter_schema(&name)
            };
            if let Some(schema) = schema {
                p["schema"] = schema;
            }
        }
    }
}

/// A schema written as JSON: for the bodies whose types live in `actors` or `events`, which
/// carry no OpenAPI derive (they stay free of HTTP concerns).
fn schema(value: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(value).unwrap_or_else(|_| {
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
            utoipa::openapi::schema::Object::new(),
        ))
    })
}

/// Text a store can hold (`actors::domain::limits`): not blank, no NUL, at most `max`
/// bytes. JSON Schema counts characters, so a text of at most `max` characters may still
/// be refused for its UTF-8 length.
fn text(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": "^[^\\x00]*[^\\x00\\s][^\\x00]*$"})
}

/// A VeriKey input (`verikey::check`): 1 to `MAX_FIELD_LEN` bytes, anything else goes.
fn verikey_field() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_FIELD_LEN})
}

/// A DSSE envelope (`actors::domain::dsse::Envelope`).
pub fn dsse_envelope() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({
        "type": "object",
        "description": "a DSSE envelope",
        "required": ["payloadType", "payload", "signatures"],
        "properties": {
            "payloadType": {"type": "string"},
            "payload": {"type": "string", "description": "base64"},
            "signatures": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["sig"],
                "properties": {"keyid": {"type": "string"}, "sig": {"type": "string", "description": "base64"}}
            }}
        }
    }))
}

/// `actors::domain::verikey::VeriKeyInputs` (docs/verikey.md): every text 1 to
/// [`MAX_FIELD_LEN`] bytes, at most [`MAX_VEX_DIGESTS`] VEX digests.
pub fn verikey_inputs() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(verikey_inputs_json())
}

fn verikey_inputs_json() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["source_artifact_digest", "sbom_digest", "policy_hash", "signer_set_hash", "feed_epoch"],
        "properties": {
            "source_artifact_digest": verikey_field(),
            "sbom_digest": verikey_field(),
            "vex_digests": {"type": "array", "maxItems": MAX_VEX_DIGESTS, "items": verikey_field()},
            "policy_hash": verikey_field(),
            "signer_set_hash": verikey_field(),
            "feed_epoch": verikey_field(),
            "time_window": {
                "type": ["object", "null"],
                "description": "Unix seconds; `end` after `start`",
                "additionalProperties": false,
                "required": ["start", "end"],
                "properties": {"start": {"type": "integer", "format": "int64"}, "end": {"type": "integer", "format": "int64"}}
            }
        }
    })
}

/// [`verikey_inputs`] or `null` (absent), as an optional field takes it.
pub fn optional_verikey_inputs() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({"oneOf": [{"type": "null"}, verikey_inputs_json()]}))
}

/// `events::data::InvalidateRequested`: exactly one criterion, and a reason.
pub fn invalidate_request() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let criterion = |name: &str, value: Value| {
        json!({
            "type": "object",
            "required": [name, "reason"],
            "properties": {name: value, "reason": text(limits::REASON_LEN)}
        })
    };
    schema(json!({
        "description": "exactly one of `veri_key`, `signer_set_hash`, `policy_hash`, `feed_epoch_before`, plus `reason`",
        "oneOf": [
            criterion("veri_key", json!({"type": "string", "pattern": SHA256_DIGEST})),
            criterion("signer_set_hash", text(limits::HASH_LEN)),
            criterion("policy_hash", text(limits::HASH_LEN)),
            criterion("feed_epoch_before", json!({"type": "string", "description": "a semantic version or an RFC 3339 instant", "pattern": "^(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})\\.(0|[1-9][0-9]{0,8})$"})),
        ]
    }))
}

/// A cache entry's lifetime: seconds, or a duration such as `"12h"`; at most 366 days.
pub fn ttl() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({"oneOf": [
        {"type": "null", "description": "absent: `provcache.default_ttl`"},
        {"type": "integer", "minimum": 1, "maximum": 31_622_400},
        {"type": "string", "pattern": "^[1-9][0-9]{0,2}(s|m|h)$"}
    ]}))
}

/// A policy document (`docs/policies.md`), checked by `actors::domain::policy::Policy`.
pub fn policy_document() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({"type": "object", "description": "the policy document (docs/policies.md)"}))
}

/// An air-gap proof bundle (`docs/bundle-format.md`), checked by
/// `actors::domain::bundle::verify_bundle`.
pub fn airgap_bundle() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(json!({"type": "object", "description": "a proof bundle (docs/bundle-format.md)"}))
}
