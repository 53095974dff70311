//! `POST /api/v1/verify` (scope `read`): complete verification of a Sigstore bundle, the same
//! verdict and report as `provd sigstore verify-bundle --json`.
//!
//! The body names the bundle, the artifact's digest, and either an identity policy or a
//! managed key. Verification runs offline against the trusted root the service was
//! configured with (`[trust]`: a file, the TUF cache of `provd trust update`, or the root
//! embedded in provd); this route never fetches anything. A verdict, valid or not, is a
//! 200 with the report; a request provd cannot verify as written (a malformed bundle, a bad
//! digest, a policy with neither identity nor key) is a 400 that says what is wrong.

use std::sync::Arc;

use actors::domain::verification::{
    self, Artifact, ArtifactDigest, Check, IdentityPolicy, Matcher, Report, Request, SignerPolicy,
    Thresholds, TrustMaterial, VerificationError, WorkflowClaims,
};
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::scoped_api;
use super::error::{ApiError, ApiJson};
use crate::config::{Scope, Token};

/// Largest request body: a bundle with a large DSSE payload (an SBOM, say) fits.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The trusted root a verification uses right now.
#[derive(Clone)]
pub struct CurrentRoot {
    /// The prepared root.
    pub material: Arc<TrustMaterial>,
    /// The root's `trusted_root.json`, for explanations an auditor replays offline.
    pub json: Arc<Vec<u8>>,
    /// Where it came from, for the report.
    pub source: String,
    /// A freshness warning (the root is older than `trust.max_age`).
    pub warning: Option<String>,
}

/// Where the routes get the trusted root: loaded offline, kept while its source is
/// unchanged.
pub trait TrustedRoots: Send + Sync {
    /// The root to verify with, or why there is none (e.g. it is stale and
    /// `trust.refuse_stale` is set).
    fn current(&self) -> Result<CurrentRoot, String>;
}

/// What the route needs.
#[derive(Clone)]
pub struct VerifyState {
    /// The trusted root.
    pub roots: Arc<dyn TrustedRoots>,
}

/// The route, behind the `read` scope, with its state applied.
pub fn router<S>(state: VerifyState, tokens: &Arc<Vec<Token>>) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    scoped_api(
        OpenApiRouter::new()
            .routes(routes!(verify))
            .layer(DefaultBodyLimit::max(MAX_BODY)),
        tokens,
        Scope::Read,
    )
    .with_state(state)
}

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    /// The Sigstore bundle: its JSON object, or its JSON text as a string.
    #[schema(value_type = Object)]
    bundle: Value,
    /// The artifact's digest, `sha256:<hex>` (`sha512:<hex>` for an in-toto subject).
    #[schema(pattern = "^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")]
    artifact_digest: String,
    /// Who must have signed, for a bundle signed with a Fulcio certificate.
    #[serde(default)]
    policy: Option<PolicyBody>,
    /// The PEM public key, for a bundle signed with a managed key.
    #[serde(default)]
    key: Option<String>,
    /// How many log entries and timestamps must verify (default 1 each).
    #[serde(default)]
    thresholds: Option<ThresholdsBody>,
}

/// Who must have signed.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    identity: Option<String>,
    identity_regexp: Option<String>,
    issuer: Option<String>,
    issuer_regexp: Option<String>,
    #[serde(default)]
    github: GithubBody,
}

/// GitHub workflow identity claims.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GithubBody {
    repository: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    workflow: Option<String>,
    trigger: Option<String>,
    runner_environment: Option<String>,
}

/// How many log entries and timestamps must verify.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ThresholdsBody {
    tlog_entries: Option<usize>,
    timestamps: Option<usize>,
}

/// Verifies a Sigstore bundle completely and offline; the report of every check.
#[utoipa::path(post, path = "/api/v1/verify", tag = "verification",
    request_body(content = VerifyRequest, content_type = "application/json",
        description = "`bundle` (object or JSON text), `artifact_digest` (`sha256:<hex>` or `sha512:<hex>`), and `policy` (`identity` or `identity_regexp`, `issuer` or `issuer_regexp`, optional `github`: `repository`, `ref`, `workflow`, `trigger`, `runner_environment`) or `key` (PEM); optional `thresholds` (`tlog_entries`, `timestamps`)"),
    responses(
        (status = 200, description = "the verdict: `valid`, `error` and `failed_check` when invalid, every check, the signer, the signing time and the log entries"),
        (status = 400, description = "the request or the bundle is malformed; `error.message` says what"),
        (status = 401, description = "no or malformed token"),
        (status = 403, description = "the token lacks the `read` scope"),
        (status = 413, description = "the body is larger than 16 MiB")),
    security(("bearer" = ["read"])))]
async fn verify(
    State(state): State<VerifyState>,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<Value>, ApiError> {
    let bundle = match body.bundle {
        Value::String(text) => text.into_bytes(),
        Value::Object(_) => serde_json::to_vec(&body.bundle)
            .map_err(|e| ApiError::Internal(format!("re-encoding a bundle: {e}")))?,
        _ => {
            return Err(ApiError::BadRequest(
                "`bundle` must be the bundle's JSON object (or its JSON text)".into(),
            ));
        }
    };
    let digest: ArtifactDigest = body
        .artifact_digest
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("`artifact_digest`: {e}")))?;
    let signer = signer(body.policy, body.key)?;
    let thresholds = body.thresholds.map_or_else(Thresholds::default, |t| {
        let d = Thresholds::default();
        Thresholds {
            tlog_entries: t.tlog_entries.unwrap_or(d.tlog_entries),
            timestamps: t.timestamps.unwrap_or(d.timestamps),
        }
    });
    let root = state.roots.clone();
    // Certificate chains, signatures and proofs take milliseconds of CPU: off the runtime.
    let report = tokio::task::spawn_blocking(move || {
        let root = match root.current() {
            Ok(root) => root,
            Err(why) => {
                return (
                    Report::refused(VerificationError::TrustedRoot(why)),
                    None,
                    None,
                );
            }
        };
        let report = verification::verify(
            &root.material,
            &Request {
                bundle: &bundle,
                artifact: Artifact::Digest(&digest),
                signer: &signer,
                thresholds,
            },
        );
        (report, Some(root.source), root.warning)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("verification task: {e}")))?;
    let (report, source, warning) = report;
    if report.failed_check == Some(Check::Bundle) {
        return Err(ApiError::BadRequest(
            report.error.unwrap_or_else(|| "malformed bundle".into()),
        ));
    }
    let mut json = serde_json::to_value(&report)
        .map_err(|e| ApiError::Internal(format!("encoding a report: {e}")))?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert(
            "trusted_root".into(),
            source.map_or(Value::Null, Value::String),
        );
        obj.insert(
            "warnings".into(),
            Value::Array(warning.into_iter().map(Value::String).collect()),
        );
    }
    Ok(Json(json))
}

/// The signer policy of a request: an identity policy or a key, never both.
fn signer(policy: Option<PolicyBody>, key: Option<String>) -> Result<SignerPolicy, ApiError> {
    match (policy, key) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give either `policy` (a certificate identity) or `key`, not both".into(),
        )),
        (None, None) => Err(ApiError::BadRequest(
            "give `policy` (`identity` and `issuer`) for a certificate-signed bundle, or `key` \
             (PEM) for one signed with a managed key"
                .into(),
        )),
        (None, Some(pem)) => verification::key_from_pem(&pem)
            .map(SignerPolicy::Key)
            .map_err(|e| ApiError::BadRequest(format!("`key`: {e}"))),
        (Some(p), None) => {
            let matcher = |exact: Option<String>, re: Option<String>, name: &str| match (exact, re)
            {
                (Some(v), None) => Ok(Matcher::Exact(v)),
                (None, Some(re)) => Matcher::regex(&re)
                    .map_err(|e| ApiError::BadRequest(format!("`policy.{name}_regexp`: {e}"))),
                (Some(_), Some(_)) => Err(ApiError::BadRequest(format!(
                    "give `policy.{name}` or `policy.{name}_regexp`, not both"
                ))),
                (None, None) => Err(ApiError::BadRequest(format!(
                    "`policy.{name}` (or `policy.{name}_regexp`) is required"
                ))),
            };
            Ok(SignerPolicy::Identity(IdentityPolicy {
                san: matcher(p.identity, p.identity_regexp, "identity")?,
                issuer: matcher(p.issuer, p.issuer_regexp, "issuer")?,
                workflow: WorkflowClaims {
                    repository: p.github.repository,
                    git_ref: p.github.git_ref,
                    workflow: p.github.workflow,
                    trigger: p.github.trigger,
                    runner_environment: p.github.runner_environment,
                },
            }))
        }
    }
}
