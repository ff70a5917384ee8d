//! Where a target group's backends come from. Every source is a Pingora `ServiceDiscovery`
//! that attaches each backend's stats (from the group's registry) to `Backend::ext`.

pub mod static_list;

pub use static_list::StaticList;
