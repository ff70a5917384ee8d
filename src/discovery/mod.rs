//! Where a target group's backends come from. Every source is a Pingora `ServiceDiscovery`
//! that attaches each backend's stats (from the group's registry) to `Backend::ext`.

pub mod ec2;
pub mod static_list;

pub use ec2::Ec2Discovery;
pub use static_list::StaticList;
