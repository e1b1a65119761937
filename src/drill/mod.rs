//! Scripted failure drills (`shop chaos drill`, SPEC section 8): a load, a timeline of faults
//! and expectations, judged on the running stack.
//!
//! - [`spec`]: the drill file → a typed [`Drill`](spec::Drill), every problem at `FILE:LINE:COL`;
//! - [`run`]: the runner: the load engine of [`crate::traffic`] with the faults beside it, then
//!   the settling and the invariants;
//! - [`report`]: the report's figures and its human rendering (`--json` serializes it).
//!
//! Thresholds and halt rules are [`crate::traffic::threshold`] expressions: one grammar for
//! drills and `shop load --threshold`.
//!
//! This layer sits between traffic and the cli (traffic ← drill ← cli) and never imports from
//! the cli: the command finds the stack, the gateway and the users' tokens and passes them in.

pub mod html;
pub mod junit;
pub mod monkey;
pub mod report;
pub mod run;
pub mod spec;
