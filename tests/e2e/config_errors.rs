//! Every configuration error names the field and the line of the offending item, and every
//! independent error of a file is reported in one run. Messages and lines are checked in
//! process (`config::parse`, no process needed); what only the binary does — exit codes,
//! output, nothing bound, certificates at a real start — is checked on the real binary.

use crate::support;
use std::process::Command;
use support::*;
use switchyard::config::{self, ConfigError};

const VALID: &str = r#"version: 1
threads: 2
listeners:
  - address: 127.0.0.1:18999
target_groups:
  - name: cluster1
    strategy: round_robin
    backends:
      - address: 127.0.0.1:8001
      - address: 127.0.0.1:8002
    health_check:
      path: /health
      interval: 2s
      timeout: 1s
  - name: cluster2
    backends:
      - address: 127.0.0.1:8011
    health_check:
      interval: 2s
routes:
  - path_prefix: /cluster1
    target_group: cluster1
  - path_prefix: /cluster2
    target_group: cluster2
  - path: /
    status_page: true
"#;

/// `VALID` with the `nth` (0-based) occurrence of `from` replaced by `to`.
fn mutate_nth(from: &str, to: &str, nth: usize) -> String {
    let (at, _) = VALID
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("test bug: {from:?} #{nth} not in the base config"));
    format!("{}{to}{}", &VALID[..at], &VALID[at + from.len()..])
}

fn mutate(from: &str, to: &str) -> String {
    mutate_nth(from, to, 0)
}

/// The errors of `yaml` (which must be rejected).
fn errors(yaml: &str) -> Vec<ConfigError> {
    match config::parse(yaml, "t.yaml") {
        Ok(_) => panic!("accepted a bad config:\n{yaml}"),
        Err(e) => e.0,
    }
}

/// `yaml` is rejected with exactly one error on `field`, at `line`, saying `message`.
fn assert_rejected(yaml: &str, field: &str, message: &str, line: usize) {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error: {errors:#?}");
    let e = &errors[0];
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(message), "error lacks `{message}`: {e}");
    assert_eq!(e.line, Some(line), "wrong line: {e}\n{yaml}");
}

#[test]
fn valid_base_config_passes_the_binary_check() {
    let out = check_config(VALID);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
}

#[test]
fn unknown_strategy() {
    let yaml = mutate("strategy: round_robin", "strategy: fastest_ever");
    assert_rejected(&yaml, "target_groups[0].strategy", "unknown variant", 7);
}

/// The valid configuration with `proxy.<key>: <value>`, on line 4.
fn with_proxy_setting(key: &str, value: &str) -> String {
    mutate(
        "listeners:\n",
        &format!("proxy:\n  {key}: {value}\nlisteners:\n"),
    )
}

#[test]
fn http1_path_is_pingora_or_switchyard() {
    let with = |v: &str| with_proxy_setting("http1_path", v);
    assert_rejected(&with("own"), "proxy.http1_path", "unknown variant", 4);
    let parsed = |v: &str| config::parse(&with(v), "t.yaml").expect("valid").proxy;
    assert!(parsed("switchyard").own_http1_path);
    assert!(!parsed("pingora").own_http1_path);
    assert!(
        config::parse(VALID, "t.yaml")
            .expect("valid")
            .proxy
            .own_http1_path,
        "Switchyard's own path by default"
    );
}

#[test]
fn header_case_is_preserve_or_lowercase() {
    let with = |v: &str| with_proxy_setting("header_case", v);
    assert_rejected(&with("title"), "proxy.header_case", "unknown variant", 4);
    let parsed = |v: &str| config::parse(&with(v), "t.yaml").expect("valid").proxy;
    assert!(!parsed("lowercase").preserve_header_case);
    assert!(parsed("preserve").preserve_header_case);
    assert!(
        config::parse(VALID, "t.yaml")
            .unwrap()
            .proxy
            .preserve_header_case
    );
}

#[test]
fn route_to_missing_group() {
    let yaml = mutate("target_group: cluster2", "target_group: cluster9");
    assert_rejected(
        &yaml,
        "routes[1].target_group",
        "no target group named `cluster9`",
        24,
    );
}

#[test]
fn empty_backend_list() {
    let yaml = mutate(
        "    backends:\n      - address: 127.0.0.1:8011\n",
        "    backends: []\n",
    );
    assert_rejected(&yaml, "target_groups[1].backends", "has no backends", 16);
}

#[test]
fn bad_backend_address() {
    let yaml = mutate("127.0.0.1:8002", "localhost:8002");
    assert_rejected(
        &yaml,
        "target_groups[0].backends[1].address",
        "is not an `ip:port` address",
        10,
    );
}

#[test]
fn bad_listener_address() {
    let yaml = mutate("127.0.0.1:18999", "127.0.0.1:99999");
    assert_rejected(&yaml, "listeners[0].address", "not an `ip:port`", 4);
}

#[test]
fn duplicate_group_names() {
    let yaml = mutate("name: cluster2", "name: cluster1");
    let e = errors(&yaml);
    assert_eq!(e[0].field, "target_groups[1].name", "{e:#?}");
    assert_eq!(e[0].line, Some(15));
    assert!(e[0].message.contains("duplicate target group name"));
}

#[test]
fn duplicate_backends() {
    let yaml = mutate("127.0.0.1:8002", "127.0.0.1:8001");
    assert_rejected(
        &yaml,
        "target_groups[0].backends[1].address",
        "duplicate backend",
        10,
    );
}

#[test]
fn unknown_key_in_our_sections() {
    let yaml = mutate(
        "      interval: 2s\n      timeout",
        "      intervall: 2s\n      timeout",
    );
    assert_rejected(
        &yaml,
        "target_groups[0].health_check.intervall",
        "unknown field `intervall`",
        13,
    );
}

#[test]
fn unknown_top_level_key() {
    let yaml = VALID.replace("routes:", "routez:");
    let e = errors(&yaml);
    assert_eq!(e[0].field, "routez");
    assert_eq!(e[0].line, Some(20));
    assert!(e[0].message.contains("unknown key `routez`"), "{}", e[0]);
}

#[test]
fn bad_duration() {
    let yaml = mutate("interval: 2s", "interval: soon");
    assert_rejected(&yaml, "target_groups[0].health_check.interval", "", 13);
}

#[test]
fn an_error_in_the_second_group_names_the_second_groups_line() {
    let yaml = mutate_nth(
        "      interval: 2s\n",
        "      interval: 2s\n      timeout: 5s\n",
        1,
    );
    assert_rejected(
        &yaml,
        "target_groups[1].health_check.timeout",
        "must not exceed interval",
        20,
    );
}

#[test]
fn bad_pingora_key_type() {
    let yaml = mutate("threads: 2", "threads: many");
    assert_rejected(&yaml, "threads", "invalid type", 2);
}

/// Pingora's own checks of its keys are reported at the key's line, like ours.
#[test]
fn a_value_pingora_refuses_names_its_key_and_line() {
    let yaml = mutate("threads: 2", "threads: 2\nmax_blocking_threads: 0");
    assert_rejected(&yaml, "max_blocking_threads", "greater than zero", 3);
}

/// Tokio would panic on 0 when the runtime is built; the check names the key and its line.
/// Unset or `null`, the interval is tokio's own.
#[test]
fn global_queue_interval_refuses_0_and_is_tokios_own_unless_set() {
    let yaml = mutate("threads: 2", "threads: 2\nruntime_global_queue_interval: 0");
    assert_rejected(&yaml, "runtime_global_queue_interval", "at least 1", 3);
    let interval = |yaml: &str| {
        let loaded = config::parse_full(yaml, "t.yaml").expect("accepted");
        loaded.pingora.runtime_global_queue_interval
    };
    let set = |v: &str| {
        mutate(
            "threads: 2",
            &format!("threads: 2\nruntime_global_queue_interval: {v}"),
        )
    };
    assert_eq!(interval(&set("2")), Some(2));
    assert_eq!(interval(VALID), None, "unset: tokio's own choice");
    assert_eq!(interval(&set("null")), None, "null: tokio's own choice");
}

#[test]
fn route_without_action() {
    let yaml = mutate("    status_page: true\n", "");
    assert_rejected(&yaml, "routes[2]", "exactly one of", 25);
}

#[test]
fn yaml_syntax_error_gives_the_line() {
    let yaml = mutate("  - name: cluster2\n", "  - name: [cluster2\n");
    let e = errors(&yaml);
    assert_eq!(e[0].field, "(file)");
    assert!(
        e[0].line.is_some_and(|l| (15..=17).contains(&l)),
        "{}",
        e[0]
    );
}

#[test]
fn strategy_settings_that_would_do_nothing_are_refused() {
    let yaml = mutate(
        "    strategy: round_robin\n",
        "    strategy: round_robin\n    sticky:\n      lb_cookie:\n        name: SWITCHYARD\n",
    );
    assert_rejected(
        &yaml,
        "target_groups[0].sticky",
        "do nothing with strategy `round_robin`",
        8,
    );
}

#[test]
fn rate_limit_and_shedding_values_are_checked() {
    let yaml = mutate(
        "    target_group: cluster1\n",
        "    target_group: cluster1\n    rate_limit:\n      rate: 0\n",
    );
    assert_rejected(
        &yaml,
        "routes[0].rate_limit.rate",
        "must be a positive number",
        24,
    );
    let yaml = mutate(
        "    strategy: round_robin\n",
        "    strategy: round_robin\n    queue:\n      size: 3\n",
    );
    assert_rejected(&yaml, "target_groups[0].queue", "needs `max_inflight`", 8);
}

#[test]
fn unreadable_tls_certificate() {
    let yaml = mutate(
        "  - address: 127.0.0.1:18999\n",
        "  - address: 127.0.0.1:18999\n    tls:\n      cert: /nonexistent/cert.pem\n      key: /nonexistent/key.pem\n",
    );
    assert_rejected(
        &yaml,
        "listeners[0].tls.cert",
        "cannot read /nonexistent/cert.pem",
        6,
    );
}

#[test]
fn tls_without_a_certificate() {
    let yaml = mutate(
        "  - address: 127.0.0.1:18999\n",
        "  - address: 127.0.0.1:18999\n    tls: {}\n",
    );
    assert_rejected(&yaml, "listeners[0].tls", "give `cert` and `key`", 5);
}

#[test]
fn three_independent_errors_are_printed_with_their_lines_in_one_run() {
    let yaml = mutate("127.0.0.1:18999", "127.0.0.1:99999")
        .replacen("strategy: round_robin", "strategy: nope", 1)
        .replacen("target_group: cluster2", "target_group: cluster9", 1);
    let out = check_config(&yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for expected in [
        "check.yaml:4: listeners[0].address",
        "check.yaml:7: target_groups[0].strategy",
        "check.yaml:24: routes[1].target_group",
        "3 errors",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_file_is_an_error() {
    let out = Command::new(switchyard_bin())
        .args(["-t", "-c", "/nonexistent/switchyard.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file"));
}

#[test]
fn shipped_configs_pass_the_check() {
    for conf in ["conf/switchyard.yaml", "conf/demo.yaml", "conf/ec2.yaml"] {
        let path = format!("{}/{conf}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(switchyard_bin())
            .args(["-t", "-c", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_bad_config_exits_before_binding() {
    let port = free_port();
    let yaml = mutate("127.0.0.1:18999", &format!("127.0.0.1:{port}"))
        .replace("strategy: round_robin", "strategy: nope");
    let dir = TempDir::new();
    let path = dir.write("bad.yaml", &yaml);
    let out = Command::new(switchyard_bin())
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("target_groups[0].strategy"));
    // The port was never bound: we can bind it ourselves.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn a_bad_certificate_stops_a_real_start_too() {
    let dir = TempDir::new();
    let not_pem = dir.write("cert.pem", "this is not a certificate");
    let yaml = mutate(
        "  - address: 127.0.0.1:18999\n",
        &format!(
            "  - address: 127.0.0.1:18999\n    tls:\n      cert: {0}\n      key: {0}\n",
            not_pem.display()
        ),
    );
    let path = dir.write("bad.yaml", &yaml);
    let out = Command::new(switchyard_bin())
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.yaml:6: listeners[0].tls.cert")
            && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
