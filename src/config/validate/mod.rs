//! The one validation pass: surface structs in, a checked [`Config`] out.
//!
//! Every problem is recorded (not only the first) with its field path and the line of the
//! offending item; one submodule per section of the file.

mod admin;
mod groups;
mod listeners;
mod policy;
mod proxy;
mod routes;

use std::net::SocketAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::file::FileConfig;
use super::lines::LineIndex;
use super::model::*;

pub use admin::DEFAULT_ADMIN_ADDRESS;
pub use groups::{
    parse_status_ranges, DEFAULT_HC_INTERVAL, DEFAULT_HC_TIMEOUT, DEFAULT_HEALTHY_THRESHOLD,
    DEFAULT_UNHEALTHY_THRESHOLD,
};

/// Collects the errors and warnings of one validation pass.
pub struct Checker<'a> {
    source: &'a str,
    lines: &'a LineIndex,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    pub fn new(source: &'a str, lines: &'a LineIndex) -> Self {
        Self {
            source,
            lines,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn located(&self, field: &str, message: String) -> ConfigError {
        ConfigError {
            source: self.source.to_string(),
            field: field.to_string(),
            line: self.lines.find(field),
            message,
        }
    }

    /// Record an error at `field` (located at the field, or its nearest present ancestor).
    pub fn error(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        let e = self.located(field.as_ref(), message.into());
        self.errors.push(e);
    }

    /// Record a warning: the configuration is accepted, but `-t` and the start-up log say it.
    pub fn warn(&mut self, field: impl AsRef<str>, message: impl Into<String>) {
        let e = self.located(field.as_ref(), message.into());
        self.warnings.push(e);
    }

    /// Whether `field` is written in the file (as opposed to taking its default).
    pub fn present(&self, field: &str) -> bool {
        self.lines.exact(field).is_some()
    }

    /// `value` if it is not zero, else an error.
    fn nonzero(&mut self, field: &str, value: Duration) -> Duration {
        if value.is_zero() {
            self.error(field, "must be greater than zero");
        }
        value
    }
}

/// Validate `file` into a [`Config`]; `None` when `c` recorded errors.
pub fn validate(file: FileConfig, c: &mut Checker) -> Option<Config> {
    let listeners = listeners::validate(c, &file);
    let (target_groups, invalid_groups) = groups::validate(c, &file.target_groups);
    let names: Vec<&str> = target_groups.iter().map(|g| g.name.as_str()).collect();
    let known = |name: &str| {
        names.contains(&name)
            || invalid_groups.iter().any(|n| n == name)
            || file.unreadable_groups.iter().any(|u| u == name)
    };
    let group_index = |name: &str| names.iter().position(|n| *n == name);
    let routes = routes::validate(c, &file.routes, &group_index, &known);
    let default_action =
        file.default_target_group
            .as_ref()
            .and_then(|name| match group_index(name) {
                Some(i) => Some(RouteAction::Forward(i)),
                None => {
                    if !known(name) {
                        c.error(
                            "default_target_group",
                            format!("no target group named `{name}`"),
                        );
                    }
                    None
                }
            });
    let proxy = proxy::validate(c, &file.proxy);
    let admin = admin::validate(c, &file.admin, &listeners);
    if !c.errors.is_empty() {
        return None;
    }
    Some(Config {
        admin,
        listeners,
        target_groups,
        routes,
        default_action,
        proxy,
    })
}

/// Parse an `ip:port` address (names are not resolved).
fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        format!("`{text}` is not an `ip:port` address (names are not resolved; use e.g. 127.0.0.1:8080 or [::1]:8080)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<ConfigError> {
        crate::config::parse(yaml, "t.yaml").unwrap_err().0
    }

    const BASE: &str = "listeners:\n  - address: 127.0.0.1:8080\ntarget_groups:\n  - name: a\n    backends:\n      - address: 127.0.0.1:9001\n";

    #[test]
    fn independent_errors_are_all_reported_with_their_lines() {
        let yaml = "\
listeners:
  - address: 127.0.0.1:80800
target_groups:
  - name: a
    strategy: fastest
    backends:
      - address: 127.0.0.1:9001
    health_check:
      interval: 1s
      timeout: 2s
routes:
  - path_prefix: /x
    target_group: nope
";
        let e = errors(yaml);
        let found: Vec<(&str, Option<usize>)> =
            e.iter().map(|e| (e.field.as_str(), e.line)).collect();
        assert_eq!(
            found,
            vec![
                ("listeners[0].address", Some(2)),
                ("target_groups[0].health_check.timeout", Some(10)),
                ("routes[0].target_group", Some(13)),
            ],
            "{e:#?}"
        );
    }

    #[test]
    fn an_unreadable_group_does_not_also_fail_the_routes_naming_it() {
        let yaml = format!(
            "{BASE}  - name: b\n    strategy: nope\n    backends:\n      - address: 127.0.0.1:9002\nroutes:\n  - path_prefix: /b\n    target_group: b\n"
        );
        let e = errors(&yaml);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].field, "target_groups[1].strategy");
        assert_eq!(e[0].line, Some(8));
    }

    #[test]
    fn settings_that_do_nothing_for_the_strategy_are_refused() {
        let yaml = format!("{BASE}    sticky:\n      lb_cookie: {{name: S}}\n");
        let e = errors(&yaml);
        assert_eq!(e[0].field, "target_groups[0].sticky");
        assert!(e[0].message.contains("round_robin"), "{}", e[0].message);
        let yaml = format!("{BASE}    strategy: sticky\n    latency:\n      p2c_threshold: 8\n");
        assert_eq!(
            errors(&yaml)[0].field,
            "target_groups[0].latency.p2c_threshold"
        );
    }

    #[test]
    fn fastest_needs_active_health_checks() {
        let yaml =
            format!("{BASE}    strategy: fastest\n    health_check:\n      enabled: false\n");
        let e = errors(&yaml);
        assert_eq!(e[0].field, "target_groups[0].health_check.enabled");
    }

    #[test]
    fn a_missing_listener_list_points_at_the_document() {
        let e = errors("target_groups:\n  - name: a\n    backends: [{address: 127.0.0.1:1}]\n");
        assert_eq!(e[0].field, "listeners");
        assert_eq!(e[0].line, Some(1));
    }
}
