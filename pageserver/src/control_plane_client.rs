//! The pageserver's client of the control plane's generations API (see
//! [`pageserver_api::upcall`]): re-attach at start-up, validate before deletions and before
//! `remote_consistent_lsn` is advertised.
//!
//! Without `control_plane_api` there is no client, and the pageserver trusts the
//! generations it was given through `location_config` (a single-pageserver setup).

use std::collections::HashMap;
use std::time::Duration;

use pageserver_api::Generation;
use pageserver_api::upcall::{
    ReAttachRequest, ReAttachResponse, ValidateRequest, ValidateResponse, ValidateTenant,
};
use tokio_util::sync::CancellationToken;
use utils::backoff::{self, RetryPolicy};
use utils::{NodeId, TenantId};

/// Why an upcall failed.
#[derive(Debug, thiserror::Error)]
pub enum UpcallError {
    /// The request did not get an answer.
    #[error("control plane {url}: {source}")]
    Request {
        /// The endpoint.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The control plane answered with an error.
    #[error("control plane {url}: HTTP {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// Its status.
        status: u16,
        /// Its body (its error message).
        body: String,
    },
    /// Shut down while waiting.
    #[error("cancelled")]
    Cancelled,
}

impl UpcallError {
    /// Worth retrying: no answer, or a 5xx / 429. A 4xx says the request is wrong.
    fn is_transient(&self) -> bool {
        match self {
            UpcallError::Request { .. } => true,
            UpcallError::Status { status, .. } => *status >= 500 || *status == 429,
            UpcallError::Cancelled => false,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ControlPlaneClient {
    base: String,
    token: Option<String>,
    node_id: Option<NodeId>,
    http: reqwest::Client,
}

impl ControlPlaneClient {
    /// A client of the API at `base` (for example `http://127.0.0.1:1234/upcall/v1/`),
    /// sending `token` as a bearer JWT (scope `generations_api`) when given.
    pub fn new(base: &str, token: Option<String>) -> Result<ControlPlaneClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(ControlPlaneClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            node_id: None,
            http,
        })
    }

    /// Validations name this node: a generation then counts only where it was placed.
    pub fn for_node(mut self, node_id: NodeId) -> ControlPlaneClient {
        self.node_id = Some(node_id);
        self
    }

    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, UpcallError> {
        let url = format!("{}/{path}", self.base);
        let request_err = |source| UpcallError::Request {
            url: url.clone(),
            source,
        };
        let mut req = self.http.post(&url).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(request_err)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(UpcallError::Status {
                url,
                status: status.as_u16(),
                body,
            });
        }
        resp.json().await.map_err(request_err)
    }

    /// Which tenants this node holds, each in its new generation. Retries until the
    /// control plane answers (a pageserver cannot know its generations otherwise), with a
    /// warning from the third failure; a 4xx is final.
    pub async fn re_attach(
        &self,
        node_id: NodeId,
        cancel: &CancellationToken,
    ) -> Result<HashMap<TenantId, Generation>, UpcallError> {
        let body = ReAttachRequest { node_id };
        let resp: ReAttachResponse = self
            .retried("re-attach", cancel, || self.post("re-attach", &body))
            .await?;
        Ok(resp
            .tenants
            .into_iter()
            .map(|t| (t.id, t.generation))
            .collect())
    }

    /// Whether each `(tenant, generation)` is still current. One attempt: the deletion
    /// queue asks again on its next round.
    pub async fn validate(
        &self,
        tenants: &[(TenantId, Generation)],
    ) -> Result<HashMap<(TenantId, Generation), bool>, UpcallError> {
        let body = ValidateRequest {
            node_id: self.node_id,
            tenants: tenants
                .iter()
                .map(|&(id, generation)| ValidateTenant { id, generation })
                .collect(),
        };
        let resp: ValidateResponse = self.post("validate", &body).await?;
        Ok(resp
            .tenants
            .into_iter()
            .map(|t| ((t.id, t.generation), t.valid))
            .collect())
    }

    async fn retried<T, F, Fut>(
        &self,
        what: &str,
        cancel: &CancellationToken,
        op: F,
    ) -> Result<T, UpcallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, UpcallError>>,
    {
        let policy = RetryPolicy {
            max_attempts: None,
            ..RetryPolicy::default()
        };
        backoff::retry(
            what,
            policy,
            cancel,
            |e: &UpcallError| !e.is_transient(),
            op,
        )
        .await
        .map_err(|e| e.into_inner().unwrap_or(UpcallError::Cancelled))
    }
}
