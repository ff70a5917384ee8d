//! Backend health: active HTTP checks with rise/fall thresholds ([`active`]), passive
//! ejection of backends that fail live requests (in the stats registry), and fail-open when a
//! whole group is down (in [`crate::target_group`]).

pub mod active;

pub use active::ProbeCheck;
