//! Where a target group's backends come from. Every source is a Pingora `ServiceDiscovery`
//! that answers with the current set of addresses and weights; what happens to backends that
//! appear or vanish is decided by the group, the same way for every source.

pub mod ec2;
pub mod static_list;

pub use ec2::Ec2Discovery;
pub use static_list::StaticList;
