//! Policies as stored, versioned documents (`docs/policies.md`).
//!
//! * `PUT /api/v1/policies/{name}` (scope `admin`), body: the policy document. The document
//!   is checked ([`Policy::from_json`]) and stored under its canonical hash as the name's
//!   next version: 201 for a new name, 200 with `previous_policy_hash` when it replaces
//!   another document, 200 `unchanged` for the current document again.
//! * `GET /api/v1/policies/{name}` (scope `read`): the current version with its document.
//! * `GET /api/v1/policies` (scope `read`): the current version of every policy.
//!
//! Replacing a policy invalidates every verdict decided under the old one: the handler
//! publishes `prov.events.policy.updated` (old hash → new hash) before it stores the new
//! version, and the policy invalidator turns it into a ledger row like any other trigger.
//! The event id is derived from what is replaced, so a retried PUT is one revocation.

use std::sync::Arc;

use actors::domain::policy::{self, Policy};
use actors::ports::{EventBus, PolicyPut, PolicyStore, StoredPolicy};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use events::data::PolicyUpdated;
use events::{CloudEvent, EventKind, Subjects};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::auth::scoped_api;
use super::error::ApiError;
use super::trace;
use crate::config::{Scope, Token};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the routes need.
#[derive(Clone)]
pub struct PoliciesState {
    /// Where the versions are kept.
    pub store: Arc<dyn PolicyStore>,
    /// Where `policy.updated` is published.
    pub bus: Arc<dyn EventBus>,
    /// Subject names.
    pub subjects: Subjects,
    /// This node (the events' `source`).
    pub node_id: String,
    /// One PUT at a time on this node: the read of the current version, the event about
    /// it and the store then describe the same replacement. PUTs are rare operator actions.
    put_lock: Arc<Mutex<()>>,
}

impl PoliciesState {
    /// The state of the routes.
    pub fn new(
        store: Arc<dyn PolicyStore>,
        bus: Arc<dyn EventBus>,
        subjects: Subjects,
        node_id: String,
    ) -> Self {
        PoliciesState {
            store,
            bus,
            subjects,
            node_id,
            put_lock: Arc::new(Mutex::new(())),
        }
    }
}

/// The routes, each behind its scope, with their state applied, to be merged into
/// [`super::api`]'s before the document is split off.
pub fn router<S>(state: PoliciesState, tokens: &Arc<Vec<Token>>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let read = scoped_api(
        OpenApiRouter::new()
            .routes(routes!(list_policies))
            .routes(routes!(get_policy)),
        tokens,
        Scope::Read,
    );
    let admin = scoped_api(
        OpenApiRouter::new().routes(routes!(put_policy)),
        tokens,
        Scope::Admin,
    );
    read.merge(admin).with_state(state)
}

/// The id of the `policy.updated` event that replaces version `previous_version` (hash
/// `old_hash`) of `name` with `new_hash`: a UUID (version 8) of SHA-256 over the four,
/// each length-prefixed. A retried PUT publishes the same id, which the bus drops and the
/// ledger (one row per revocation id) would too; the replaced version keeps A→B, back to
/// A, then B again two revocations.
pub fn policy_updated_id(
    name: &str,
    previous_version: i64,
    old_hash: &str,
    new_hash: &str,
) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"provd policy.updated v1\n");
    for part in [name, &previous_version.to_string(), old_hash, new_hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The `policy.updated` event for replacing `previous` of `name` with `new_hash`, stored as
/// `new_version`.
pub fn policy_updated_event(
    node_id: &str,
    name: &str,
    previous: &StoredPolicy,
    new_hash: &str,
    new_version: i64,
) -> CloudEvent<PolicyUpdated> {
    let mut event = CloudEvent::new(
        format!("urn:provd:{node_id}:api"),
        PolicyUpdated {
            old_policy_hash: previous.policy_hash.clone(),
            new_policy_hash: Some(new_hash.to_owned()),
            reason: Some(format!("policy {name} replaced by version {new_version}")),
        },
    );
    event.id =
        policy_updated_id(name, previous.version, &previous.policy_hash, new_hash).to_string();
    event.subject = Some(name.to_owned());
    event
}

/// The caller's correlation id, or the request id, as the invalidation API takes it.
fn correlation_id(headers: &HeaderMap) -> Option<String> {
    [trace::CORRELATION_ID, trace::REQUEST_ID]
        .iter()
        .filter_map(|h| headers.get(*h))
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
}

fn summary(p: &StoredPolicy) -> Value {
    json!({
        "name": p.name,
        "version": p.version,
        "policy_hash": p.policy_hash,
        "created_at": p.created_at,
    })
}

async fn publish(
    s: &PoliciesState,
    event: CloudEvent<PolicyUpdated>,
    correlation_id: Option<String>,
) -> Result<(), ApiError> {
    let event = event.with_correlation_id(correlation_id);
    let subject = s.subjects.subject(EventKind::PolicyUpdated);
    let id = event.id.clone();
    actors::trace::publish(s.bus.as_ref(), &subject, &id, event)
        .await
        .map_err(ApiError::from)
}

/// Stores a policy document as the name's next version.
#[utoipa::path(put, path = "/api/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "`[A-Za-z0-9][A-Za-z0-9._-]{0,127}`"),
           ("x-correlation-id" = Option<String>, Header, description = "carried into the event and the ledger")),
    request_body(content_type = "application/json", description = "the policy document (`docs/policies.md`)"),
    responses((status = 201, description = "a new name: `name`, `version` (1), `policy_hash`, `created_at`"),
              (status = 200, description = "a replacement (with `previous_policy_hash`, `previous_version`; the old policy's verdicts are invalidated) or the current document again (`unchanged: true`)"),
              (status = 400, description = "a bad name or document; the message names the field"),
              (status = 503, description = "the store or the event bus is unavailable; `Retry-After`")),
    security(("bearer" = ["admin"])))]
async fn put_policy(
    State(s): State<PoliciesState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match put(&s, &name, correlation_id(&headers), &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn put(
    s: &PoliciesState,
    name: &str,
    correlation_id: Option<String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    policy::check_name(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let checked = Policy::from_json(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let document: Value = serde_json::from_slice(&checked.canonical)
        .map_err(|e| ApiError::Internal(format!("canonical policy JSON does not parse: {e}")))?;
    let _one_at_a_time = s.put_lock.lock().await;
    let current = s.store.policy(name).await.map_err(ApiError::from)?;
    let mut announced = None;
    if let Some(c) = current.as_ref().filter(|c| c.policy_hash != checked.hash) {
        // Publish first, then store: a crash in between can only invalidate the verdicts of
        // a policy that is about to be replaced (the client's retry stores it), never leave
        // verdicts of a replaced policy alive.
        let event = policy_updated_event(&s.node_id, name, c, &checked.hash, c.version + 1);
        publish(s, event, correlation_id.clone()).await?;
        announced = Some(c.version);
    }
    let put = s
        .store
        .put_policy(name, &checked.hash, &document)
        .await
        .map_err(ApiError::from)?;
    Ok(match put {
        PolicyPut::Created(c) => {
            tracing::info!(name, version = c.version, hash = %c.policy_hash, "policy created");
            (StatusCode::CREATED, Json(summary(&c))).into_response()
        }
        PolicyPut::Replaced { current, previous } => {
            if announced != Some(previous.version) {
                // Another node stored a version between our read and our write: that one's
                // verdicts go too, now that it is replaced (published after the fact, the
                // only way left; a failure is a 503 and is logged).
                let event = policy_updated_event(
                    &s.node_id,
                    name,
                    &previous,
                    &current.policy_hash,
                    current.version,
                );
                publish(s, event, correlation_id).await.inspect_err(|_| {
                    tracing::error!(
                        name,
                        version = previous.version,
                        hash = %previous.policy_hash,
                        "a replaced policy's invalidation could not be published"
                    );
                })?;
            }
            tracing::info!(
                name,
                version = current.version,
                hash = %current.policy_hash,
                previous = %previous.policy_hash,
                "policy replaced"
            );
            let mut body = summary(&current);
            body["previous_policy_hash"] = json!(previous.policy_hash);
            body["previous_version"] = json!(previous.version);
            (StatusCode::OK, Json(body)).into_response()
        }
        PolicyPut::Unchanged(c) => {
            let mut body = summary(&c);
            body["unchanged"] = json!(true);
            (StatusCode::OK, Json(body)).into_response()
        }
    })
}

/// The current version of a policy, with its document.
#[utoipa::path(get, path = "/api/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "the policy's name")),
    responses((status = 200, description = "`name`, `version`, `policy_hash`, `document`, `created_at`"),
              (status = 400, description = "not a policy name"),
              (status = 404, description = "no such policy"),
              (status = 503, description = "the store is unavailable; `Retry-After`")),
    security(("bearer" = ["read"])))]
async fn get_policy(State(s): State<PoliciesState>, Path(name): Path<String>) -> Response {
    let found = async {
        policy::check_name(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let p = s
            .store
            .policy(&name)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("no policy {name}")))?;
        let mut body = summary(&p);
        body["document"] = p.document;
        Ok::<_, ApiError>(Json(body).into_response())
    };
    found.await.unwrap_or_else(IntoResponse::into_response)
}

/// The current version of every policy, by name (without the documents).
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, description = "`policies`: `name`, `version`, `policy_hash`, `created_at` of each"),
              (status = 503, description = "the store is unavailable; `Retry-After`")),
    security(("bearer" = ["read"])))]
async fn list_policies(State(s): State<PoliciesState>) -> Response {
    match s.store.policies().await {
        Ok(all) => Json(json!({
            "policies": all.iter().map(summary).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex as StdMutex;

    use actors::ports::PortError;
    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::{Request, header};
    use tower::ServiceExt;

    use super::*;
    use actors::ports::{ConsumerSpec, Subscription};

    /// A store that can be down, and can let "another node" store a version between a PUT's
    /// read and its write.
    #[derive(Default)]
    struct FakeStore {
        versions: StdMutex<Vec<StoredPolicy>>,
        down: StdMutex<bool>,
        sneak_in: StdMutex<Option<String>>,
    }

    impl FakeStore {
        fn insert(&self, name: &str, hash: &str) -> (Option<StoredPolicy>, StoredPolicy) {
            let mut all = self.versions.lock().unwrap();
            let previous = all.iter().rev().find(|p| p.name == name).cloned();
            let stored = StoredPolicy {
                name: name.to_owned(),
                version: previous.as_ref().map_or(1, |p| p.version + 1),
                policy_hash: hash.to_owned(),
                document: json!({}),
                created_at: chrono::Utc::now(),
            };
            all.push(stored.clone());
            (previous, stored)
        }

        fn check(&self) -> Result<(), PortError> {
            if *self.down.lock().unwrap() {
                return Err(PortError::Unavailable {
                    service: "fake",
                    message: "down".into(),
                });
            }
            Ok(())
        }
    }

    #[async_trait]
    impl PolicyStore for FakeStore {
        async fn put_policy(
            &self,
            name: &str,
            policy_hash: &str,
            _document: &Value,
        ) -> Result<PolicyPut, PortError> {
            self.check()?;
            if let Some(other) = self.sneak_in.lock().unwrap().take() {
                self.insert(name, &other);
            }
            let current = self.policy(name).await?;
            if let Some(c) = current.filter(|c| c.policy_hash == policy_hash) {
                return Ok(PolicyPut::Unchanged(c));
            }
            Ok(match self.insert(name, policy_hash) {
                (None, current) => PolicyPut::Created(current),
                (Some(previous), current) => PolicyPut::Replaced { current, previous },
            })
        }
        async fn policy(&self, name: &str) -> Result<Option<StoredPolicy>, PortError> {
            self.check()?;
            let all = self.versions.lock().unwrap();
            Ok(all.iter().rev().find(|p| p.name == name).cloned())
        }
        async fn policies(&self) -> Result<Vec<StoredPolicy>, PortError> {
            self.check()?;
            Ok(Vec::new())
        }
        async fn policy_by_hash(&self, _hash: &str) -> Result<Option<StoredPolicy>, PortError> {
            self.check()?;
            Ok(None)
        }
    }

    /// A bus that can be down and records what it accepted.
    #[derive(Default)]
    struct FakeBus {
        published: StdMutex<Vec<CloudEvent<PolicyUpdated>>>,
        down: StdMutex<bool>,
    }

    #[async_trait]
    impl EventBus for FakeBus {
        async fn publish(&self, _s: &str, id: &str, payload: Vec<u8>) -> Result<(), PortError> {
            if *self.down.lock().unwrap() {
                return Err(PortError::Unavailable {
                    service: "fake",
                    message: "down".into(),
                });
            }
            let event: CloudEvent<PolicyUpdated> = serde_json::from_slice(&payload).unwrap();
            assert_eq!(event.id, id, "the message id is the event id");
            self.published.lock().unwrap().push(event);
            Ok(())
        }
        async fn subscribe(&self, _: &ConsumerSpec) -> Result<Box<dyn Subscription>, PortError> {
            Err(PortError::Rejected("not in these tests".into()))
        }
    }

    const TOKEN: &str = "admin-token-0123456789";

    fn app(store: &Arc<FakeStore>, bus: &Arc<FakeBus>) -> axum::Router {
        let tokens = Arc::new(vec![Token {
            name: "admin".into(),
            token: TOKEN.into(),
            scopes: BTreeSet::from([Scope::Admin]),
        }]);
        let state =
            PoliciesState::new(store.clone(), bus.clone(), Subjects::default(), "n1".into());
        let (router, _) = router::<()>(state, &tokens).split_for_parts();
        router
    }

    fn doc(san: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"identities": [{"issuer": "https://i", "san": san}]})).unwrap()
    }

    fn hash(san: &str) -> String {
        Policy::from_json(&doc(san)).unwrap().hash
    }

    async fn send(app: &axum::Router, method: &str, body: Vec<u8>) -> Response {
        let req = Request::builder()
            .method(method)
            .uri("/api/v1/policies/p")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        app.clone().oneshot(req).await.unwrap()
    }

    fn olds(bus: &FakeBus) -> Vec<String> {
        let published = bus.published.lock().unwrap();
        published
            .iter()
            .map(|e| e.data.old_policy_hash.clone())
            .collect()
    }

    #[tokio::test]
    async fn an_unavailable_bus_or_store_is_a_503_with_retry_after_and_replaces_nothing() {
        let (store, bus) = (Arc::new(FakeStore::default()), Arc::new(FakeBus::default()));
        let app = app(&store, &bus);
        assert_eq!(
            send(&app, "PUT", doc("a")).await.status(),
            StatusCode::CREATED
        );
        assert!(olds(&bus).is_empty(), "a new name invalidates nothing");

        *bus.down.lock().unwrap() = true;
        let resp = send(&app, "PUT", doc("b")).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
        let current = store.policy("p").await.unwrap().unwrap();
        assert_eq!((current.version, current.policy_hash), (1, hash("a")));
        *bus.down.lock().unwrap() = false;

        *store.down.lock().unwrap() = true;
        for method in ["PUT", "GET"] {
            let resp = send(&app, method, doc("b")).await;
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{method}");
            assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
        }
        *store.down.lock().unwrap() = false;
        // A refusal is not worth a retry: no Retry-After.
        let resp = send(&app, "PUT", b"{}".to_vec()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn a_version_stored_by_another_node_meanwhile_is_invalidated_too() {
        let (store, bus) = (Arc::new(FakeStore::default()), Arc::new(FakeBus::default()));
        let app = app(&store, &bus);
        assert_eq!(
            send(&app, "PUT", doc("a")).await.status(),
            StatusCode::CREATED
        );
        // Between this PUT's read (A current) and its write, another node stores X.
        *store.sneak_in.lock().unwrap() = Some(hash("x"));
        let resp = send(&app, "PUT", doc("b")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            olds(&bus),
            vec![hash("a"), hash("x")],
            "A before the store, X after"
        );
        let events = bus.published.lock().unwrap().clone();
        assert_eq!(
            events[0].data.reason.as_deref(),
            Some("policy p replaced by version 2")
        );
        assert_eq!(
            events[1].data.reason.as_deref(),
            Some("policy p replaced by version 3")
        );
        assert_eq!(
            events[1].id,
            policy_updated_id("p", 2, &hash("x"), &hash("b")).to_string()
        );
        assert_eq!(store.policy("p").await.unwrap().unwrap().version, 3);
    }

    #[test]
    fn the_event_id_names_exactly_one_replacement() {
        let a = "sha256:aa";
        let b = "sha256:bb";
        let id = policy_updated_id("p", 1, a, b);
        assert_eq!(
            id,
            policy_updated_id("p", 1, a, b),
            "a retry has the same id"
        );
        assert_eq!(id.get_version_num(), 8);
        // A→B again after going back to A is another revocation; so is another name.
        assert_ne!(id, policy_updated_id("p", 3, a, b));
        assert_ne!(id, policy_updated_id("q", 1, a, b));
        assert_ne!(id, policy_updated_id("p", 1, b, a));
        // The fields cannot run into each other.
        assert_ne!(
            policy_updated_id("p1", 1, a, b),
            policy_updated_id("p", 11, a, b)
        );
    }
}
