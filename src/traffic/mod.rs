//! Order traffic against the gateway: the one gateway client every command uses, and the load
//! engine `shop load` and drills drive with a typed [`LoadPlan`].
//!
//! This layer sits below the drill runner and the cli (traffic ← drill ← cli) and never
//! imports from them: callers resolve the gateway and the users' tokens, and show progress
//! through the [`indicatif::ProgressBar`] they put in the plan.

pub mod engine;
pub mod gateway;
pub mod threshold;
pub mod workload;

pub use engine::{
    Live, Load, LoadError, LoadPlan, Mode, PlanError, Report, Sample, Summary, TimelineSecond, Weights,
    MAX_CONCURRENCY, OPEN_LOOP_CONCURRENCY, RATES,
};
pub use gateway::{Gateway, Gateways, Outcome};
pub use threshold::{Measures, Threshold, ThresholdError, ThresholdResult};
