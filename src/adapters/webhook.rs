//! The divergence webhook: one JSON POST per alert, success on any 2xx.
//!
//! Retries and backoff are the alert outbox's (`actors::divergence::AlertOutbox`): a failed
//! POST stays in the outbox and is tried again later, so this client tries once.

use std::time::Duration;

use actors::ports::{AlertSink, PortError};
use async_trait::async_trait;

/// POSTs alerts to one URL.
pub struct Webhook {
    url: reqwest::Url,
    http: reqwest::Client,
}

impl Webhook {
    /// A webhook client for `url` with a per-attempt `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad webhook URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("provd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the webhook client: {e}"))?;
        Ok(Webhook { url, http })
    }
}

fn unavailable(message: String) -> PortError {
    PortError::Unavailable {
        service: "webhook",
        message,
    }
}

#[async_trait]
impl AlertSink for Webhook {
    async fn send(&self, alert: &serde_json::Value) -> Result<(), PortError> {
        let response = self
            .http
            .post(self.url.clone())
            .json(alert)
            .send()
            .await
            // The URL may carry a secret: keep it out of the message.
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(unavailable(format!(
                "the webhook answered HTTP {}",
                status.as_u16()
            )))
        }
    }
}
