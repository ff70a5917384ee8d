//! `loadtest`: a hey/oha-class HTTP load generator and the strategy experiments.
//!
//! The files follow the data: [`cli`] (flags) → [`plan`] (stop rule × pacing) → [`client`]
//! and [`worker`] (the hot loop) → [`record`] (hdrhistogram per worker) → [`report`] (text and
//! JSON); [`run`] ties one run together and [`experiment`] runs many.

pub mod cli;
pub mod client;
pub mod experiment;
pub mod plan;
pub mod record;
pub mod report;
pub mod run;
pub mod worker;
