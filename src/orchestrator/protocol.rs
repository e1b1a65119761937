//! The control API's messages: what the supervisor answers and what `shop` sends it. Both
//! sides import these types, so a field renamed here is renamed for both.
//!
//! Routes (all need the `x-shop-secret` header):
//! - `GET /v1/status` → [`Status`], with the supervisor's recent [`StackEvent`]s
//! - `POST /v1/up` [`Names`] → 202; `POST /v1/start|stop|restart` [`Names`] → [`Status`]
//! - `POST /v1/down` [`Names`] (only `timeout_ms`) → 204
//! - `GET /v1/chaos` → [`FaultRow`]s; `POST /v1/chaos` [`ChaosRequest`] → [`FaultRow`]s;
//!   `POST /v1/chaos/clear` [`ClearRequest`] → [`FaultRow`]s

use std::fmt;

use serde::{Deserialize, Serialize};

/// What an instance is doing, as `shop ps` shows it (serialized as the lower-case name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Not started yet (a later layer of a start-up in progress, or never asked for).
    #[default]
    Pending,
    /// Forked; waiting for its address or its first healthy probe.
    Starting,
    Healthy,
    /// Was healthy, then failed several probes in a row; still running.
    Unhealthy,
    /// Exited on its own; a restart may be due (see `detail`).
    Crashed,
    /// Stopped by `shop stop` or `down`.
    Stopped,
    /// Killed by `shop chaos kill` (or a second Ctrl-C).
    Killed,
    /// SIGSTOPped by `shop chaos pause`.
    Paused,
    /// Did not become healthy, or crashed more than `max_restarts` times.
    Failed,
    /// Not started because a dependency was not healthy.
    Skipped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Healthy => "healthy",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Crashed => "crashed",
            InstanceState::Stopped => "stopped",
            InstanceState::Killed => "killed",
            InstanceState::Paused => "paused",
            InstanceState::Failed => "failed",
            InstanceState::Skipped => "skipped",
        }
    }

    /// Whether a process of this instance exists (it has a pid and an uptime).
    pub fn running(self) -> bool {
        matches!(
            self,
            InstanceState::Starting | InstanceState::Healthy | InstanceState::Unhealthy | InstanceState::Paused
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `shop ps` (SPEC section 3), plus why an instance failed or was skipped.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PsRow {
    pub service: String,
    pub instance: String,
    pub pid: Option<u32>,
    pub address: Option<String>,
    pub state: InstanceState,
    pub restarts: u32,
    pub uptime_s: u64,
    pub faults: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the control API reports: the rows, whether a start-up is still running, and what
/// happened lately.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub starting: bool,
    pub stopping: bool,
    pub rows: Vec<PsRow>,
    /// The supervisor's recent events, oldest first ([`MAX_EVENTS`] at most).
    #[serde(default)]
    pub events: Vec<StackEvent>,
}

/// Events a supervisor keeps for `shop top`'s events pane.
pub const MAX_EVENTS: usize = 50;

/// Something that happened to an instance: a restart, a change of state, a fault applied or
/// cleared (from the supervisor's rows), or a breaker's transition (`shop top`'s own, from the
/// instances' metrics).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StackEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub instance: String,
    pub kind: EventKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Restart,
    State,
    FaultApplied,
    FaultCleared,
    Breaker,
}

/// The body of `up`, `start`, `stop`, `restart` and `down`: which services, and how.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Names {
    /// Service names; empty means all.
    #[serde(default)]
    pub services: Vec<String>,
    /// `up`: start only these, not their dependencies.
    #[serde(default)]
    pub no_deps: bool,
    /// Grace between SIGTERM and SIGKILL when stopping [default: 10 s].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `shop start | stop | restart`: which control API route a per-service command calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
}

impl ServiceAction {
    /// The route, `/v1/start` and so on.
    pub fn path(self) -> &'static str {
        match self {
            ServiceAction::Start => "/v1/start",
            ServiceAction::Stop => "/v1/stop",
            ServiceAction::Restart => "/v1/restart",
        }
    }
}

/// What `shop chaos` asks the supervisor to do (serialized as the lower-case name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChaosAction {
    #[default]
    Kill,
    Pause,
    Resume,
    Latency,
    Errors,
    Partition,
    /// A wire fault: a proxy with a toxic in front of the target (SPEC section 13).
    Net,
}

impl ChaosAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ChaosAction::Kill => "kill",
            ChaosAction::Pause => "pause",
            ChaosAction::Resume => "resume",
            ChaosAction::Latency => "latency",
            ChaosAction::Errors => "errors",
            ChaosAction::Partition => "partition",
            ChaosAction::Net => "net",
        }
    }

    /// Whether the supervisor does it to the process itself (the registry takes only these).
    pub fn on_process(self) -> bool {
        matches!(self, ChaosAction::Kill | ChaosAction::Pause | ChaosAction::Resume)
    }
}

impl fmt::Display for ChaosAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChaosAction {
    type Err = String;

    fn from_str(s: &str) -> Result<ChaosAction, String> {
        [
            ChaosAction::Kill,
            ChaosAction::Pause,
            ChaosAction::Resume,
            ChaosAction::Latency,
            ChaosAction::Errors,
            ChaosAction::Partition,
            ChaosAction::Net,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("unknown chaos action `{s}`"))
    }
}

/// The body of `POST /v1/chaos`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosRequest {
    pub action: ChaosAction,
    /// A service (all its instances) or one instance.
    pub target: String,
    /// For partition: the other side.
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub status: Option<u16>,
    /// The fault ends by itself after this long.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// kill: let the restart policy bring it back, as after a crash.
    #[serde(default)]
    pub restart: bool,
    /// kill: `KILL` (default) or `TERM`.
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// net: the toxic, its direction and toxicity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::orchestrator::proxy::ToxicSpec>,
    /// net: only calls from this service go through the proxy (default: every caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// partition: refuse calls at once in the callers' client instead of cutting the wire.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refuse: bool,
    /// Who applied it (a drill's run, a monkey): its rollback clears its own faults only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl ChaosRequest {
    /// The checks of the request's own values, which need no running stack: `shop chaos`
    /// makes them before it looks for one, and the supervisor again on what it is sent.
    pub fn check(&self) -> Result<(), String> {
        // NaN is not in any range: it is refused here rather than sent as JSON `null`.
        if let Some(p) = self.percent.filter(|p| !(0.0..=100.0).contains(p)) {
            return Err(format!("--percent must be 0 to 100, got {p}"));
        }
        match self.action {
            ChaosAction::Kill => match self.signal.as_deref().unwrap_or("KILL").trim_start_matches("SIG") {
                "KILL" | "TERM" => {}
                other => return Err(format!("--signal must be KILL or TERM, got `{other}`")),
            },
            ChaosAction::Latency => {
                let delay_ms = self.delay_ms.ok_or("latency needs a delay, e.g. 200ms")?;
                if delay_ms.max(self.jitter_ms.unwrap_or(0)) > crate::plumbing::faults::MAX_DELAY_MS {
                    return Err("the delay and --jitter must be at most 10m each".into());
                }
            }
            ChaosAction::Errors => {
                if let Some(status) = self.status.filter(|s| !(400..=599).contains(s)) {
                    return Err(format!("--status must be 400 to 599, got {status}"));
                }
            }
            ChaosAction::Net => {
                let spec = self.net.as_ref().ok_or("net needs a toxic, e.g. `shop chaos net payment reset`")?;
                spec.toxic.validate()?;
                if !(0.0..=100.0).contains(&spec.toxicity) {
                    return Err(format!("--toxicity must be 0 to 100, got {}", spec.toxicity));
                }
            }
            ChaosAction::Pause | ChaosAction::Resume | ChaosAction::Partition => {}
        }
        Ok(())
    }
}

/// The body of `POST /v1/chaos/clear`: one service's or instance's faults, or all.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClearRequest {
    #[serde(default)]
    pub target: Option<String>,
    /// Only the faults this owner applied (see [`ChaosRequest::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One row of `shop chaos list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaultRow {
    pub service: String,
    pub fault: String,
    pub params: serde_json::Value,
    pub expires_in_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_the_strings_ps_has_always_shown() {
        for (state, text) in [
            (InstanceState::Pending, "pending"),
            (InstanceState::Starting, "starting"),
            (InstanceState::Healthy, "healthy"),
            (InstanceState::Unhealthy, "unhealthy"),
            (InstanceState::Crashed, "crashed"),
            (InstanceState::Stopped, "stopped"),
            (InstanceState::Killed, "killed"),
            (InstanceState::Paused, "paused"),
            (InstanceState::Failed, "failed"),
            (InstanceState::Skipped, "skipped"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(text));
            assert_eq!(state.to_string(), text);
            assert_eq!(serde_json::from_value::<InstanceState>(serde_json::json!(text)).unwrap(), state);
        }
    }

    #[test]
    fn chaos_actions_serialize_as_their_names_and_parse_back() {
        for action in ["kill", "pause", "resume", "latency", "errors", "partition", "net"] {
            let parsed: ChaosAction = action.parse().unwrap();
            assert_eq!(serde_json::to_value(parsed).unwrap(), serde_json::json!(action));
            assert_eq!(parsed.to_string(), action);
        }
        assert!("explode".parse::<ChaosAction>().is_err());
        let body = r#"{"action":"explode","target":"order"}"#;
        assert!(serde_json::from_str::<ChaosRequest>(body).is_err());
    }
}
