//! Listener rules: host and path prefix → target group, in order, first match wins.

use crate::config::{HostMatch, PathMatch, Route, RouteAction};

/// Name given to the fallback route in logs.
pub const DEFAULT_ROUTE_NAME: &str = "default";

/// The ordered routing table.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
    default: Option<RouteAction>,
    uses_host: bool,
}

/// The route a request matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matched<'a> {
    /// Index of the route, or `None` for the default route.
    pub index: Option<usize>,
    pub name: &'a str,
    pub action: &'a RouteAction,
    /// The prefix to remove before forwarding, if the route strips it.
    pub strip_prefix: Option<&'a str>,
}

impl Router {
    pub fn new(routes: Vec<Route>, default: Option<RouteAction>) -> Self {
        let uses_host = routes.iter().any(|r| r.host.is_some());
        Self {
            routes,
            default,
            uses_host,
        }
    }

    /// The first route matching `host` (a Host header, port allowed) and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Matched<'_>> {
        // Normalising the host allocates; do it only when some rule looks at it.
        let host = if self.uses_host {
            host.map(normalize_host)
        } else {
            None
        };
        for (i, r) in self.routes.iter().enumerate() {
            let host_ok = match (&r.host, &host) {
                (None, _) => true,
                (Some(m), Some(h)) => host_matches(m, h),
                (Some(_), None) => false,
            };
            if host_ok && path_matches(&r.path, path) {
                let strip_prefix = match (&r.path, r.strip_prefix) {
                    (PathMatch::Prefix(p), true) => Some(p.as_str()),
                    _ => None,
                };
                return Some(Matched {
                    index: Some(i),
                    name: &r.name,
                    action: &r.action,
                    strip_prefix,
                });
            }
        }
        self.default.as_ref().map(|action| Matched {
            index: None,
            name: DEFAULT_ROUTE_NAME,
            action,
            strip_prefix: None,
        })
    }
}

/// Lower-case host without port (`[::1]:80` → `[::1]`, `Example.com:8080` → `example.com`).
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(m: &HostMatch, host: &str) -> bool {
    match m {
        HostMatch::Exact(h) => h == host,
        HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
    }
}

/// Prefix matching on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`.
fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Any => true,
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) => {
            path.starts_with(p.as_str())
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }
    }
}

/// `path_and_query` with `prefix` removed; the result always starts with `/`.
pub fn strip_prefix(path_and_query: &str, prefix: &str) -> String {
    let rest = path_and_query
        .strip_prefix(prefix)
        .unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// Whether `path` has a `.` or `..` segment, raw or percent-encoded. Such paths are refused
/// rather than guessed at: routing on `/cluster1/../cluster2` would send a request for
/// `cluster2` to `cluster1`'s backends.
pub fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // A dot segment needs a `.` or a `%2e`, an encoded slash a `%`: a path with neither
    // (most of them) has none.
    if memchr::memchr2(b'.', b'%', bytes).is_none() {
        return false;
    }
    // Encoded slashes anywhere.
    if bytes
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
    {
        return true;
    }
    path.split('/').any(is_dot_segment)
}

/// `.` or `..`, with each dot possibly written `%2e`/`%2E`.
fn is_dot_segment(seg: &str) -> bool {
    let mut dots = 0;
    let mut rest = seg.as_bytes();
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && (rest[2] == b'e' || rest[2] == b'E')
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<HostMatch>, path: PathMatch, group: usize) -> Route {
        Route {
            name: name.into(),
            host,
            path,
            strip_prefix: false,
            action: RouteAction::Forward(group),
            rate_limit: None,
            mirror: None,
            fault: None,
        }
    }

    fn router() -> Router {
        Router::new(
            vec![
                route(
                    "api-host",
                    Some(HostMatch::Exact("api.example.com".into())),
                    PathMatch::Any,
                    9,
                ),
                route("c1", None, PathMatch::Prefix("/cluster1".into()), 1),
                route("c2", None, PathMatch::Prefix("/cluster2".into()), 2),
                Route {
                    name: "root".into(),
                    host: None,
                    path: PathMatch::Exact("/".into()),
                    strip_prefix: false,
                    action: RouteAction::StatusPage,
                    rate_limit: None,
                    mirror: None,
                    fault: None,
                },
            ],
            None,
        )
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let r = router();
        assert_eq!(r.route(None, "/cluster1").unwrap().name, "c1");
        assert_eq!(r.route(None, "/cluster1/a/b").unwrap().name, "c1");
        assert_eq!(r.route(None, "/cluster2/").unwrap().name, "c2");
        assert!(r.route(None, "/cluster10").is_none());
        assert_eq!(r.route(None, "/").unwrap().action, &RouteAction::StatusPage);
        assert!(r.route(None, "/other").is_none());
    }

    #[test]
    fn host_rules_come_first_and_ignore_case_and_port() {
        let r = router();
        assert_eq!(
            r.route(Some("API.example.com:8080"), "/cluster1")
                .unwrap()
                .name,
            "api-host"
        );
        assert_eq!(
            r.route(Some("other.example.com"), "/cluster1")
                .unwrap()
                .name,
            "c1"
        );
        let wild = Router::new(
            vec![route(
                "w",
                Some(HostMatch::Suffix(".example.com".into())),
                PathMatch::Any,
                0,
            )],
            None,
        );
        assert!(wild.route(Some("a.example.com"), "/").is_some());
        assert!(wild.route(Some("example.com"), "/").is_none());
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    }

    #[test]
    fn default_route_catches_the_rest() {
        let r = Router::new(vec![], Some(RouteAction::Forward(3)));
        let m = r.route(None, "/anything").unwrap();
        assert_eq!(m.name, DEFAULT_ROUTE_NAME);
        assert_eq!(m.index, None);
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash_and_the_query() {
        assert_eq!(strip_prefix("/cluster1/x?y=1", "/cluster1"), "/x?y=1");
        assert_eq!(strip_prefix("/cluster1", "/cluster1"), "/");
        assert_eq!(strip_prefix("/cluster1?q", "/cluster1"), "/?q");
    }

    #[test]
    fn dot_segments_are_detected() {
        assert!(has_dot_segment("/cluster1/../cluster2"));
        assert!(has_dot_segment("/cluster1/%2E%2e/cluster2"));
        assert!(has_dot_segment("/cluster1/%2fetc"));
        assert!(has_dot_segment("/./x"));
        assert!(!has_dot_segment("/cluster1/file.txt"));
        assert!(!has_dot_segment("/a/..b/c"));
        assert!(!has_dot_segment("/cluster1/x"));
    }
}
