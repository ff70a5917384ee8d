//! Every configuration error exits non-zero, before binding anything, with a message that
//! names the field (and the line, for YAML errors).

mod support;
use std::process::Command;
use support::*;

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
routes:
  - path_prefix: /cluster1
    target_group: cluster1
  - path_prefix: /cluster2
    target_group: cluster2
  - path: /
    status_page: true
"#;

/// `VALID` with `from` replaced by `to` (which must occur).
fn mutate(from: &str, to: &str) -> String {
    assert!(
        VALID.contains(from),
        "test bug: {from:?} not in the base config"
    );
    VALID.replacen(from, to, 1)
}

fn assert_rejected(yaml: &str, field: &str, message: &str, line: Option<usize>) {
    let out = check_config(yaml);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted a bad config (expected error on {field}):\n{yaml}"
    );
    assert!(
        stderr.contains(field),
        "error does not name `{field}`: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "error lacks `{message}`: {stderr}"
    );
    if let Some(line) = line {
        assert!(
            stderr.contains(&format!(".yaml:{line}:")),
            "error does not give line {line}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn valid_base_config_passes() {
    let out = check_config(VALID);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_strategy() {
    assert_rejected(
        &mutate("strategy: round_robin", "strategy: fastestest"),
        "target_groups[0].strategy",
        "unknown variant `fastestest`",
        Some(7),
    );
}

#[test]
fn route_to_missing_group() {
    assert_rejected(
        &mutate("target_group: cluster2", "target_group: cluster3"),
        "routes[1].target_group",
        "no target group named `cluster3`",
        Some(22),
    );
}

#[test]
fn empty_backend_list() {
    assert_rejected(
        &mutate(
            "    backends:\n      - address: 127.0.0.1:8011\n",
            "    backends: []\n",
        ),
        "target_groups[1].backends",
        "has no backends",
        None,
    );
}

#[test]
fn bad_backend_address() {
    assert_rejected(
        &mutate("127.0.0.1:8002", "backend.local:8002"),
        "target_groups[0].backends[1].address",
        "not an `ip:port` address",
        Some(10),
    );
}

#[test]
fn bad_listener_address() {
    assert_rejected(
        &mutate("127.0.0.1:18999", "127.0.0.1:99999"),
        "listeners[0].address",
        "not an `ip:port`",
        Some(4),
    );
}

#[test]
fn duplicate_group_names() {
    assert_rejected(
        &mutate("name: cluster2", "name: cluster1"),
        "target_groups[1].name",
        "duplicate target group name",
        None,
    );
}

#[test]
fn duplicate_backends() {
    assert_rejected(
        &mutate("127.0.0.1:8002", "127.0.0.1:8001"),
        "target_groups[0].backends[1].address",
        "duplicate backend",
        None,
    );
}

#[test]
fn unknown_key_in_our_sections() {
    assert_rejected(
        &mutate("      path: /health", "      pathh: /health"),
        "target_groups[0].health_check",
        "unknown field `pathh`",
        Some(12),
    );
}

#[test]
fn unknown_top_level_key() {
    assert_rejected(
        &mutate("routes:", "routez:"),
        "(top level)",
        "unknown field `routez`",
        Some(18),
    );
}

#[test]
fn bad_duration() {
    assert_rejected(
        &mutate("interval: 2s", "interval: soon"),
        "target_groups[0].health_check.interval",
        "",
        Some(13),
    );
}

#[test]
fn health_timeout_longer_than_interval() {
    assert_rejected(
        &mutate("timeout: 1s", "timeout: 5s"),
        "target_groups[0].health_check.timeout",
        "must not exceed interval",
        None,
    );
}

#[test]
fn bad_pingora_key_type() {
    assert_rejected(
        &mutate("threads: 2", "threads: many"),
        "threads",
        "invalid type",
        Some(2),
    );
}

#[test]
fn route_without_action() {
    assert_rejected(
        &mutate("    status_page: true\n", "\n"),
        "routes[2]",
        "exactly one of",
        None,
    );
}

#[test]
fn yaml_syntax_error_gives_the_line() {
    assert_rejected(
        &mutate("  - name: cluster2\n", "  - name: [cluster2\n"),
        "target_groups[1].name",
        "",
        Some(15),
    );
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
    let mut child = Command::new(switchyard_bin())
        .arg("-c")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    // The port was never bound: we can bind it ourselves.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn unreadable_tls_certificate() {
    let yaml = mutate("  - address: 127.0.0.1:18999\n", "  - address: 127.0.0.1:18999\n    tls:\n      cert: /nonexistent/cert.pem\n      key: /nonexistent/key.pem\n");
    assert_rejected(
        &yaml,
        "listeners[0].tls.cert",
        "cannot read /nonexistent/cert.pem",
        Some(6),
    );
}

#[test]
fn tls_without_a_certificate() {
    let yaml = mutate(
        "  - address: 127.0.0.1:18999\n",
        "  - address: 127.0.0.1:18999\n    tls: {}\n",
    );
    assert_rejected(&yaml, "listeners[0].tls", "give `cert` and `key`", None);
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
        stderr.contains("listeners[0].tls.cert") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
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
        None,
    );
    let yaml = mutate(
        "    strategy: round_robin\n",
        "    strategy: round_robin\n    queue:\n      size: 3\n",
    );
    assert_rejected(
        &yaml,
        "target_groups[0].queue",
        "needs `max_inflight`",
        None,
    );
}
