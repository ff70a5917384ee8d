//! Traffic policies of a route: weighted splits with stickiness and a progressive canary
//! ([`split`], [`canary`]), shadow traffic ([`mirror`]) and fault injection ([`fault`]).

pub mod canary;
pub mod fault;
pub mod mirror;
pub mod split;

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;
use split::Split;

/// Run the canary analysis of `split` at `now`, applying its decision to the weights.
pub fn advance_canary(route: &str, split: &Split, metrics: &Metrics, now: Instant) {
    let Some(canary) = &split.canary else {
        return;
    };
    let decision = canary.decide(now);
    let Some(weight) = canary.apply(&decision, now) else {
        return;
    };
    let s = &canary.settings;
    split.set_weight(s.canary, weight);
    split.set_weight(s.baseline, 100 - weight);
    metrics.canary_weight(route, &canary.canary_name, weight);
    let reason = canary.last_reason();
    match decision {
        canary::Decision::RollBack(_) => {
            metrics.canary_rollback(route);
            log::warn!(
                "route {route}: canary {} {reason}; it gets no traffic until the configuration changes",
                canary.canary_name
            );
        }
        _ => log::info!(
            "route {route}: canary {} now at {weight} % ({reason})",
            canary.canary_name
        ),
    }
}

/// The split of a route (shared by every snapshot whose route keeps the same split).
pub type SharedSplit = Arc<Split>;
