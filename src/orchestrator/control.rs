//! The client side of the supervisor's control API, used by every command that acts on a
//! running stack.

use std::time::Duration;

use anyhow::Context;

use super::protocol::{ChaosRequest, ClearRequest, FaultRow, Names, ServiceAction, Status};
use super::state_dir::{StateDir, SupervisorRecord};
use crate::error::Failure;

pub struct Control {
    http: reqwest::Client,
    base: String,
    secret: String,
    pub record: SupervisorRecord,
}

impl Control {
    /// The running stack's supervisor, or `None` when no stack runs from this state dir.
    pub fn connect(dir: &StateDir) -> Option<Control> {
        let record = dir.live_supervisor()?;
        let secret = dir.existing_secret()?;
        Some(Control {
            http: crate::plumbing::client::http_client(),
            base: format!("http://{}", record.control),
            secret,
            record,
        })
    }

    /// Like [`connect`](Self::connect), but "not running" is an error that says what to do.
    pub fn require(dir: &StateDir) -> anyhow::Result<Control> {
        Control::connect(dir).ok_or_else(|| {
            Failure::runtime(format!("no stack is running from `{}`; start one with `shop up -d`", dir.root.display()))
        })
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        let resp = self.send(reqwest::Method::GET, "/v1/status", None, Duration::from_secs(5)).await?;
        resp.json().await.context("unreadable answer from the supervisor")
    }

    /// Starts `names.services` (with their dependencies unless `no_deps`) in the background.
    pub async fn up(&self, names: &Names) -> anyhow::Result<()> {
        self.post("/v1/up", names, Duration::from_secs(10)).await.map(drop)
    }

    /// Starts, stops or restarts services and waits for the outcome.
    pub async fn service(&self, action: ServiceAction, names: &Names, timeout: Duration) -> anyhow::Result<Status> {
        let resp = self.post(action.path(), names, timeout).await?;
        resp.json().await.context("unreadable answer from the supervisor")
    }

    /// Asks the supervisor to stop the stack and exit.
    pub async fn down(&self, grace: Duration, timeout: Duration) -> anyhow::Result<()> {
        let names = Names { timeout_ms: Some(grace.as_millis() as u64), ..Names::default() };
        self.post("/v1/down", &names, timeout).await.map(drop)
    }

    /// The active faults.
    pub async fn chaos_list(&self) -> anyhow::Result<Vec<FaultRow>> {
        self.get_json("/v1/chaos").await
    }

    /// Applies a fault; answers the faults active afterwards.
    pub async fn chaos(&self, request: &ChaosRequest) -> anyhow::Result<Vec<FaultRow>> {
        let resp = self.post("/v1/chaos", request, Duration::from_secs(30)).await?;
        resp.json().await.context("unreadable answer from the supervisor")
    }

    /// Ends the faults on `target` (or all); answers the faults left.
    pub async fn chaos_clear(&self, target: Option<String>) -> anyhow::Result<Vec<FaultRow>> {
        let resp = self.post("/v1/chaos/clear", &ClearRequest { target, owner: None }, Duration::from_secs(30)).await?;
        resp.json().await.context("unreadable answer from the supervisor")
    }

    /// GETs a JSON document from the control API.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(reqwest::Method::GET, path, None, Duration::from_secs(5)).await?;
        resp.json().await.context("unreadable answer from the supervisor")
    }

    /// POSTs to the control API; a 400 (an unknown service name) is a usage error.
    pub async fn post(
        &self,
        path: &str,
        body: impl serde::Serialize,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::to_value(body).context("cannot encode a request to the supervisor")?;
        self.send(reqwest::Method::POST, path, Some(body), timeout).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(crate::plumbing::admin::SECRET_HEADER, &self.secret)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!("the supervisor (pid {}) does not answer at {}", self.record.pid, self.record.control)
        })?;
        if resp.status() == reqwest::StatusCode::BAD_REQUEST {
            let v: serde_json::Value = resp.json().await.unwrap_or_default();
            return Err(Failure::usage(v["error"]["message"].as_str().unwrap_or("bad request").to_string()));
        }
        if !resp.status().is_success() {
            anyhow::bail!("the supervisor answered {} to {path}", resp.status());
        }
        Ok(resp)
    }
}
