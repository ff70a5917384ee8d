//! What a new user meets in the first hour: the README's configuration example passes `-t`,
//! every counter exists from the start, the demo stays on loopback.

use crate::support;
use std::process::Command;

use support::*;

/// The first ```yaml block after `heading` in README.md.
fn readme_yaml_after(heading: &str) -> String {
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let section = &readme[readme.find(heading).expect("heading in README")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].to_string()
}

#[test]
fn the_readme_configuration_example_passes_the_check() {
    let dir = TempDir::new();
    let token = dir.write("admin-token", "0123456789abcdef0123456789abcdef\n");
    let yaml = readme_yaml_after("## Configuration reference")
        .replace(
            "      cert: /etc/switchyard/cert.pem   # PEM chain; checked at -t and start, re-read on reload\n      key: /etc/switchyard/key.pem\n",
            "      self_signed: true\n",
        )
        .replace("/etc/switchyard/admin-token", &token.display().to_string());
    assert!(
        yaml.contains("self_signed: true"),
        "the example's TLS listener moved:\n{yaml}"
    );
    let path = dir.write("readme.yaml", &yaml);
    let out = Command::new(switchyard_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README example fails -t:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_policy_examples_pass_the_check() {
    for heading in [
        "### Weighted splits",
        "### Progressive canary",
        "### Shadow traffic",
        "### Fault injection",
    ] {
        let routes = readme_yaml_after(heading);
        let mut groups = String::from("target_groups:\n");
        for name in ["shop-v1", "shop-v2", "search", "search-next", "checkout"] {
            groups.push_str(&format!(
                "  - name: {name}\n    backends: [{{address: 127.0.0.1:1}}]\n"
            ));
        }
        let yaml = format!("listeners:\n  - address: 127.0.0.1:1\n{groups}{routes}");
        let out = check_config(&yaml);
        assert!(
            out.status.success(),
            "{heading}: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_demo_listens_on_loopback_only() {
    let demo = switchyard::config::parse(switchyard::config::DEMO_YAML, "demo").unwrap();
    for l in &demo.listeners {
        assert!(l.address.ip().is_loopback(), "{}", l.address_text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_exists_at_zero_right_after_start() {
    let a = backend("a", 0).await;
    let body = format!(
        "listeners:\n  - address: 127.0.0.1:{{PORT}}\ntarget_groups:\n  - name: g\n    backends:\n{}  - name: h\n    backends:\n{}routes:\n  - path_prefix: /limited\n    target_group: g\n    rate_limit: {{rate: 5}}\n  - path_prefix: /\n    target_group: h\n",
        backend_list(&[&a]),
        backend_list(&[&a])
    );
    let sy = Switchyard::start(&body).await;
    let m = sy.metrics().await;
    let backend = a.addr().to_string();
    for series in [
        r#"lb_retries_total{target_group="g"} 0"#.to_string(),
        r#"lb_retries_total{target_group="h"} 0"#.to_string(),
        r#"lb_no_healthy_backend_total{target_group="g"} 0"#.to_string(),
        r#"lb_shed_total{target_group="h"} 0"#.to_string(),
        r#"lb_rate_limited_total{route="/limited"} 0"#.to_string(),
        r#"lb_rate_limited_total{route="/"} 0"#.to_string(),
        format!(r#"lb_backend_ejections_total{{backend="{backend}",target_group="g"}} 0"#),
        r#"lb_config_loads_total{result="failure"} 0"#.to_string(),
        r#"lb_config_loads_total{result="success"} 1"#.to_string(),
    ] {
        assert!(m.contains(&series), "missing {series} in:\n{m}");
    }
    assert!(
        !m.contains("lb_discovery_refreshes_total{"),
        "static groups do no discovery:\n{m}"
    );
    let promtool = require_tool("promtool", "apt-get install prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_readme_backend_protocols_example_passes_the_check() {
    let dir = TempDir::new();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["lb.internal".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let files = [
        ("/etc/switchyard/backend-ca.pem", ca.pem()),
        ("/etc/switchyard/lb-client.pem", client.pem()),
        ("/etc/switchyard/lb-client.key", client_key.serialize_pem()),
    ];
    let mut yaml = readme_yaml_after("## Backend protocols");
    for (path, pem) in &files {
        assert!(
            yaml.contains(path),
            "the example no longer uses {path}:\n{yaml}"
        );
        let local = dir.write(path.rsplit('/').next().unwrap(), pem);
        yaml = yaml.replace(path, &local.display().to_string());
    }
    let yaml = format!("listeners:\n  - address: 127.0.0.1:1\n{yaml}routes:\n  - path_prefix: /pay\n    target_group: payments\n  - path_prefix: /\n    target_group: greeter\n");
    let out = check_config(&yaml);
    assert!(
        out.status.success(),
        "{}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}
