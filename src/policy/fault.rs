//! Fault injection for chaos testing (Envoy's fault filter): delay a share of a route's
//! requests, abort a share with an error status, optionally only for requests carrying a
//! header (so a tester can target their own requests). Off unless configured; every injected
//! fault is counted (`lb_faults_injected_total{route,kind}`) and marked in the access log.

use std::time::Duration;

use pingora_http::RequestHeader;

use crate::config::FaultSettings;

/// What to do to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<u16>,
}

impl Injected {
    /// How the access log names it.
    pub fn describe(&self) -> String {
        match (self.delay, self.abort) {
            (Some(d), Some(s)) => format!("delay {}ms, abort {s}", d.as_millis()),
            (Some(d), None) => format!("delay {}ms", d.as_millis()),
            (None, Some(s)) => format!("abort {s}"),
            (None, None) => String::new(),
        }
    }
}

/// The faults for `request`; `roll` draws a number in `0..100` per decision.
pub fn decide(
    settings: &FaultSettings,
    request: &RequestHeader,
    mut roll: impl FnMut() -> f64,
) -> Injected {
    if let Some(h) = &settings.header {
        if !request.headers.contains_key(h.as_str()) {
            return Injected::default();
        }
    }
    Injected {
        delay: settings
            .delay
            .and_then(|(percent, d)| (roll() < percent).then_some(d)),
        abort: settings
            .abort
            .and_then(|(percent, status)| (roll() < percent).then_some(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(header: Option<&str>) -> FaultSettings {
        FaultSettings {
            delay: Some((50.0, Duration::from_millis(100))),
            abort: Some((20.0, 503)),
            header: header.map(str::to_string),
        }
    }

    fn request(with: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(h) = with {
            r.insert_header(h.to_string(), "1").unwrap();
        }
        r
    }

    #[test]
    fn shares_follow_the_percentages() {
        let s = settings(None);
        let n = 10_000;
        let results: Vec<Injected> = (0..n)
            .map(|_| decide(&s, &request(None), || fastrand::f64() * 100.0))
            .collect();
        let aborts = results.iter().filter(|i| i.abort == Some(503)).count() as f64 / n as f64;
        let delays = results.iter().filter(|i| i.delay.is_some()).count() as f64 / n as f64;
        assert!((0.18..0.22).contains(&aborts), "{aborts}");
        assert!((0.47..0.53).contains(&delays), "{delays}");
    }

    #[test]
    fn a_header_scope_touches_only_requests_carrying_it() {
        let s = settings(Some("x-chaos"));
        assert_eq!(decide(&s, &request(None), || 0.0), Injected::default());
        let hit = decide(&s, &request(Some("x-chaos")), || 0.0);
        assert_eq!(hit.abort, Some(503));
        assert_eq!(hit.describe(), "delay 100ms, abort 503");
    }
}
