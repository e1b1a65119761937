//! The I/O side of `shop top`: one [`RawSample`] from the supervisor's control API and every
//! instance's `/metrics`, the last lines of an instance's log, and the actions the keys trigger.

use crate::orchestrator::protocol::InstanceState;
use std::time::Duration;

use super::snapshot::{InstanceMetrics, RawSample};
use crate::orchestrator::control::Control;
use crate::orchestrator::state_dir::StateDir;

/// A scrape slower than this is skipped for the refresh: a paused instance must not freeze
/// the dashboard.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(700);

/// The longest wait for the supervisor's rows: the keys wait while a sample is taken, so one
/// that does not answer (stopped, overloaded) must not leave `q` unheard for long.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads the supervisor's rows, then scrapes the running instances' `/metrics` in parallel.
pub async fn sample(control: &Control, http: &reqwest::Client) -> anyhow::Result<RawSample> {
    let status = tokio::time::timeout(STATUS_TIMEOUT, control.status())
        .await
        .map_err(|_| anyhow::anyhow!("the supervisor did not answer within {STATUS_TIMEOUT:?}"))??;
    let at_ms = crate::plumbing::time::now_ms();
    let mut scrapes = tokio::task::JoinSet::new();
    for row in &status.rows {
        let Some(address) = row.address.clone() else { continue };
        if row.pid.is_none() || row.state == InstanceState::Paused {
            continue;
        }
        let http = http.clone();
        let instance = row.instance.clone();
        scrapes.spawn(async move {
            let resp = http.get(format!("http://{address}/metrics")).timeout(SCRAPE_TIMEOUT).send().await.ok()?;
            let text = resp.text().await.ok()?;
            Some((instance, InstanceMetrics::parse(&text)))
        });
    }
    let mut metrics = std::collections::BTreeMap::new();
    while let Some(done) = scrapes.join_next().await {
        if let Ok(Some((instance, m))) = done {
            metrics.insert(instance, m);
        }
    }
    Ok(RawSample { at_ms, rows: status.rows, events: status.events, metrics })
}

/// The last `n` lines of an instance's log, rendered as `shop logs` shows them.
pub fn last_log_lines(dir: &StateDir, instance: &str, n: usize) -> Vec<String> {
    let bytes = std::fs::read(dir.log(instance)).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].iter().map(|l| crate::plumbing::log_query::readable(l, false)).collect()
}

/// What a key asks the supervisor to do to the selected row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `k`: chaos kill of the instance.
    Kill {
        instance: String,
    },
    /// `p`: SIGSTOP, or SIGCONT when it is paused.
    Pause {
        instance: String,
    },
    Resume {
        instance: String,
    },
    /// `r`: restart the instance's service.
    Restart {
        service: String,
    },
    /// `s`: stop the service, or start it when it is stopped.
    Stop {
        service: String,
    },
    Start {
        service: String,
    },
    /// `c`: clear the instance's faults.
    Clear {
        instance: String,
    },
}

impl Action {
    /// What the status line says while it runs.
    pub fn describe(&self) -> String {
        match self {
            Action::Kill { instance } => format!("killing {instance}"),
            Action::Pause { instance } => format!("pausing {instance}"),
            Action::Resume { instance } => format!("resuming {instance}"),
            Action::Restart { service } => format!("restarting {service}"),
            Action::Stop { service } => format!("stopping {service}"),
            Action::Start { service } => format!("starting {service}"),
            Action::Clear { instance } => format!("clearing faults of {instance}"),
        }
    }

    /// Sends it to the supervisor; restarts and starts wait for health, so this can take a while.
    pub async fn run(&self, control: &Control) -> anyhow::Result<()> {
        let long = Duration::from_secs(90);
        let chaos = |action: &str, target: &str| serde_json::json!({"action": action, "target": target});
        match self {
            Action::Kill { instance } => control.post("/v1/chaos", chaos("kill", instance), long).await?,
            Action::Pause { instance } => control.post("/v1/chaos", chaos("pause", instance), long).await?,
            Action::Resume { instance } => control.post("/v1/chaos", chaos("resume", instance), long).await?,
            Action::Clear { instance } => {
                control.post("/v1/chaos/clear", serde_json::json!({"target": instance}), long).await?
            }
            Action::Restart { service } => control.post("/v1/restart", services(service), long).await?,
            Action::Stop { service } => control.post("/v1/stop", services(service), long).await?,
            Action::Start { service } => control.post("/v1/start", services(service), long).await?,
        };
        Ok(())
    }
}

fn services(service: &str) -> serde_json::Value {
    serde_json::json!({"services": [service], "timeout_ms": 10_000})
}
