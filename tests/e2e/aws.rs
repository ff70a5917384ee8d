//! EC2 discovery and the `switchyard aws` commands against a real EC2 API emulator
//! (`moto_server`). Instances get private IPs in 127.0.0.0/24, where demo backends listen, so
//! discovered instances are real, reachable backends. Only loopback is ever contacted.

use crate::support;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use backend_server::{Behaviour, RunningBackend};
use support::*;

/// A VPC 127.0.0.0/16 with a subnet 127.0.0.0/24; returns the subnet id.
async fn loopback_subnet(ec2: &aws_sdk_ec2::Client) -> String {
    let vpc = ec2
        .create_vpc()
        .cidr_block("127.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .cidr_block("127.0.0.0/24")
        .send()
        .await
        .unwrap();
    subnet.subnet().unwrap().subnet_id().unwrap().to_string()
}

async fn any_image(ec2: &aws_sdk_ec2::Client) -> String {
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    images.images()[0].image_id().unwrap().to_string()
}

/// Run one instance at `ip` with `tags`; returns its id.
async fn instance(
    ec2: &aws_sdk_ec2::Client,
    subnet: &str,
    ip: &str,
    tags: &[(&str, &str)],
) -> String {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let out = ec2
        .run_instances()
        .image_id(any_image(ec2).await)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet)
        .private_ip_address(ip)
        .tag_specifications(spec.build())
        .send()
        .await
        .unwrap();
    out.instances()[0].instance_id().unwrap().to_string()
}

async fn backend_on(ip: &str, port: u16, name: &str, healthy: bool) -> RunningBackend {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    backend_at(
        addr,
        name,
        Behaviour {
            healthy,
            ..Behaviour::default()
        },
    )
    .await
}

fn discovery_config(moto: &Moto, port: u16) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:{{PORT}}
target_groups:
  - name: cluster1
    ec2:
      region: us-east-1
      endpoint: {}
      filters:
        - name: tag:Cluster
          values: [Cluster1]
      port: {port}
      refresh_interval: 1s
    deregistration_delay: 10s
    health_check:
      interval: 200ms
      timeout: 150ms
      healthy_threshold: 2
      unhealthy_threshold: 2
routes:
  - path_prefix: /
    target_group: cluster1
"#,
        moto.endpoint()
    )
}

async fn served(sy: &Switchyard, n: usize) -> HashSet<String> {
    load(&sy.url("/"), n, 4)
        .await
        .into_iter()
        .filter_map(|a| a.backend)
        .collect()
}

fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    status["target_groups"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovery_follows_instances_checks_new_ones_and_drains_gone_ones() {
    let moto = Moto::start().await;
    let ec2 = moto.ec2();
    let subnet = loopback_subnet(&ec2).await;
    let port = free_port();
    let b21 = backend_on("127.0.0.21", port, "i-21", true).await;
    let _b22 = backend_on("127.0.0.22", port, "i-22", true).await;
    let _b23 = backend_on("127.0.0.23", port, "i-23", true).await;
    let b24 = backend_on("127.0.0.24", port, "i-24", false).await;
    let i21 = instance(&ec2, &subnet, "127.0.0.21", &[("Cluster", "Cluster1")]).await;
    instance(&ec2, &subnet, "127.0.0.22", &[("Cluster", "Cluster1")]).await;
    instance(&ec2, &subnet, "127.0.0.23", &[("Cluster", "Cluster2")]).await;

    let sy = Switchyard::start_with_env(&discovery_config(&moto, port), &moto.env()).await;
    let both = eventually(Duration::from_secs(10), || async {
        served(&sy, 20).await == HashSet::from(["i-21".into(), "i-22".into()])
    })
    .await;
    assert!(both, "discovered backends: {:?}", served(&sy, 20).await);

    // A new instance whose backend fails its checks is discovered but gets no traffic.
    instance(&ec2, &subnet, "127.0.0.24", &[("Cluster", "Cluster1")]).await;
    let addr24 = format!("127.0.0.24:{port}");
    let seen = eventually(Duration::from_secs(10), || async {
        states(&sy.status().await).iter().any(|(a, _)| *a == addr24)
    })
    .await;
    assert!(seen, "the new instance was not discovered");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(states(&sy.status().await).contains(&(addr24.clone(), "initial".into())));
    assert!(
        !served(&sy, 40).await.contains("i-24"),
        "an unchecked instance got traffic"
    );
    // Once healthy, it joins.
    control(&b24, serde_json::json!({"healthy": true})).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            served(&sy, 30).await.contains("i-24")
        })
        .await
    );

    // A terminated instance drains: the requests it has in flight finish with 200, new ones
    // go elsewhere, and it leaves once idle.
    control(&b21, serde_json::json!({"delay_ms": 3000})).await;
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let url = sy.url("/slow");
            tokio::spawn(async move { get(&client(None), &url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ec2.terminate_instances()
        .instance_ids(&i21)
        .send()
        .await
        .unwrap();
    let addr21 = format!("127.0.0.21:{port}");
    let draining = eventually(Duration::from_secs(5), || async {
        states(&sy.status().await).contains(&(addr21.clone(), "draining".into()))
    })
    .await;
    assert!(draining, "never draining: {:?}", states(&sy.status().await));
    let meanwhile = served(&sy, 30).await;
    assert!(
        !meanwhile.contains("i-21"),
        "a draining backend got new requests: {meanwhile:?}"
    );
    let mut slow_on_21 = 0;
    for t in slow {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200, "a request in flight was cut: {a:?}");
        slow_on_21 += (a.backend.as_deref() == Some("i-21")) as usize;
    }
    assert!(
        slow_on_21 >= 1,
        "no request was in flight on the terminated instance"
    );
    let gone = eventually(Duration::from_secs(10), || async {
        !states(&sy.status().await)
            .iter()
            .any(|(a, _)| a.starts_with("127.0.0.21"))
    })
    .await;
    assert!(
        gone,
        "drained instance still present: {:?}",
        states(&sy.status().await)
    );
    assert!(sy.log_text().contains("left the group: draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_api_keeps_the_last_good_backends_serving() {
    let mut moto = Moto::start().await;
    let ec2 = moto.ec2();
    let subnet = loopback_subnet(&ec2).await;
    let port = free_port();
    let _b = backend_on("127.0.0.31", port, "i-31", true).await;
    instance(&ec2, &subnet, "127.0.0.31", &[("Cluster", "Cluster1")]).await;
    let sy = Switchyard::start_with_env(&discovery_config(&moto, port), &moto.env()).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            served(&sy, 10).await.contains("i-31")
        })
        .await
    );

    // Refreshes are counted when EC2 is really asked: once per refresh_interval (1 s), not
    // at every health-check pass (200 ms).
    let refreshes = || async {
        metric_sum(
            &sy.metrics().await,
            "lb_discovery_refreshes_total",
            &[("result", "success")],
        )
    };
    let before = refreshes().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let calls = refreshes().await - before;
    assert!(
        (1.0..=3.0).contains(&calls),
        "{calls} refreshes counted in 2.2 s"
    );

    moto.stop();
    let failed = eventually(Duration::from_secs(15), || async {
        metric_sum(
            &sy.metrics().await,
            "lb_discovery_refreshes_total",
            &[("result", "failure")],
        ) >= 1.0
    })
    .await;
    assert!(failed, "no failed refresh counted");
    let answers = load(&sy.url("/"), 50, 4).await;
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 && a.backend.as_deref() == Some("i-31")),
        "{:?}",
        statuses(&answers)
    );
    assert!(sy.log_text().contains("keeping the last good backends"));
}

fn aws_cli(moto: &Moto, args: &[&str]) -> std::process::Output {
    Command::new(switchyard_bin())
        .arg("aws")
        .args(["--endpoint", &moto.endpoint(), "--region", "us-east-1"])
        .args(args)
        .envs(moto.env())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

async fn running_ids(ec2: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> HashSet<String> {
    let mut req = ec2.describe_instances().filters(
        Filter::builder()
            .name("instance-state-name")
            .values("running")
            .values("pending")
            .build(),
    );
    for f in filters {
        req = req.filters(f);
    }
    let out = req.send().await.unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn launch_list_and_the_kill_switch_touch_only_project_instances() {
    let moto = Moto::start().await;
    let ec2 = moto.ec2();
    let ami = any_image(&ec2).await;
    let out = aws_cli(
        &moto,
        &[
            "launch",
            "--cluster",
            "Cluster1",
            "--count",
            "2",
            "--ami",
            &ami,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = Filter::builder()
        .name("tag:Project")
        .values("switchyard")
        .build();
    let launched = running_ids(
        &ec2,
        vec![
            project.clone(),
            Filter::builder()
                .name("tag:Cluster")
                .values("Cluster1")
                .build(),
        ],
    )
    .await;
    assert_eq!(launched.len(), 2);

    // The security group opens the app port only, and only to the VPC; no SSH by default.
    let sgs = ec2
        .describe_security_groups()
        .group_names("switchyard-demo")
        .send()
        .await
        .unwrap();
    let perms = sgs.security_groups()[0].ip_permissions();
    assert_eq!(perms.len(), 1, "{perms:?}");
    assert_eq!(perms[0].from_port(), Some(8001));
    assert!(perms[0]
        .ip_ranges()
        .iter()
        .all(|r| r.cidr_ip() != Some("0.0.0.0/0")));
    let user_data = ec2
        .describe_instance_attribute()
        .instance_id(launched.iter().next().unwrap())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = user_data
        .user_data()
        .and_then(|u| u.value())
        .unwrap_or_default()
        .to_string();
    use base64::Engine;
    let script = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert!(
        script.contains("8001") && script.contains("Cluster1"),
        "{script}"
    );

    // Someone else's instance must survive the kill switch.
    let foreign = ec2
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let foreign_id = foreign.instances()[0].instance_id().unwrap().to_string();

    let listed = String::from_utf8(aws_cli(&moto, &["list"]).stdout).unwrap();
    assert!(
        launched.iter().all(|id| listed.contains(id.as_str())),
        "{listed}"
    );
    assert!(!listed.contains(&foreign_id));

    // Without --yes and without a terminal nothing happens.
    let refused = aws_cli(&moto, &["kill-switch"]);
    assert!(!refused.status.success());
    assert_eq!(running_ids(&ec2, vec![project.clone()]).await.len(), 2);

    let killed = aws_cli(&moto, &["kill-switch", "--yes"]);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert!(running_ids(&ec2, vec![project]).await.is_empty());
    assert!(
        running_ids(&ec2, vec![]).await.contains(&foreign_id),
        "the kill switch killed a foreign instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alb_up_is_idempotent_and_down_removes_it() {
    let moto = Moto::start().await;
    let ec2 = moto.ec2();
    let elb = moto.elb();
    let ami = any_image(&ec2).await;
    assert!(aws_cli(
        &moto,
        &[
            "launch",
            "--cluster",
            "Cluster1",
            "--count",
            "2",
            "--ami",
            &ami
        ]
    )
    .status
    .success());
    assert!(aws_cli(
        &moto,
        &[
            "launch",
            "--cluster",
            "Cluster2",
            "--count",
            "1",
            "--ami",
            &ami
        ]
    )
    .status
    .success());

    for _ in 0..2 {
        let up = aws_cli(&moto, &["alb", "up"]);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        assert!(
            String::from_utf8_lossy(&up.stdout).contains("elb.amazonaws.com"),
            "prints the DNS name"
        );
    }
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    assert_eq!(lbs.load_balancers().len(), 1, "up twice made one ALB");
    let lb_arn = lbs.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let tgs = elb.describe_target_groups().send().await.unwrap();
    assert_eq!(tgs.target_groups().len(), 2);
    for tg in tgs.target_groups() {
        assert_eq!(tg.health_check_path(), Some("/health"));
        let health = elb
            .describe_target_health()
            .target_group_arn(tg.target_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        let expected = if tg.target_group_name() == Some("switchyard-cluster1") {
            2
        } else {
            1
        };
        assert_eq!(health.target_health_descriptions().len(), expected);
    }
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(&lb_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listeners.listeners().len(), 1);
    let rules = elb
        .describe_rules()
        .listener_arn(listeners.listeners()[0].listener_arn().unwrap())
        .send()
        .await
        .unwrap();
    let patterns: Vec<String> = rules
        .rules()
        .iter()
        .flat_map(|r| r.conditions())
        .flat_map(|c| {
            c.path_pattern_config()
                .map(|p| p.values().to_vec())
                .unwrap_or_else(|| c.values().to_vec())
        })
        .collect();
    assert!(
        patterns.contains(&"/cluster1*".to_string())
            && patterns.contains(&"/cluster2*".to_string()),
        "{patterns:?}"
    );
    assert_eq!(patterns.len(), 2, "rules were not duplicated: {patterns:?}");

    let down = aws_cli(&moto, &["alb", "down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()
        .is_empty());
    assert!(elb
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_behind_an_nlb_up_twice_then_down_leaves_nothing() {
    let moto = Moto::start().await;
    let ec2 = moto.ec2();
    let elb = moto.elb();
    let ami = any_image(&ec2).await;
    let dir = TempDir::new();
    let conf = dir.write(
        "node.yaml",
        "listeners:\n  - address: 0.0.0.0:80\nadmin:\n  address: 0.0.0.0:9091\n  api: false\ntarget_groups:\n  - name: g\n    ec2:\n      region: us-east-1\n      filters: [{name: tag:Cluster, values: [Cluster1]}]\n      port: 8001\nroutes:\n  - path_prefix: /\n    target_group: g\n",
    );
    let conf = conf.display().to_string();
    let launched = aws_cli(
        &moto,
        &[
            "launch-nodes",
            "--binary-url",
            "https://example.invalid/switchyard",
            "--config",
            &conf,
            "--count",
            "2",
            "--ami",
            &ami,
        ],
    );
    assert!(
        launched.status.success(),
        "{}",
        String::from_utf8_lossy(&launched.stderr)
    );
    let nodes = running_ids(
        &ec2,
        vec![Filter::builder()
            .name("tag:Role")
            .values("switchyard-node")
            .build()],
    )
    .await;
    assert_eq!(nodes.len(), 2);

    for _ in 0..2 {
        let up = aws_cli(&moto, &["nlb", "up"]);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        assert!(String::from_utf8_lossy(&up.stdout).contains("TCP 443: 2 node(s) registered"));
    }
    let lbs = elb.describe_load_balancers().send().await.unwrap();
    assert_eq!(lbs.load_balancers().len(), 1, "up twice made one NLB");
    let nlb = &lbs.load_balancers()[0];
    assert_eq!(nlb.r#type().map(|t| t.as_str()), Some("network"));
    let listeners = elb
        .describe_listeners()
        .load_balancer_arn(nlb.load_balancer_arn().unwrap())
        .send()
        .await
        .unwrap();
    let mut ports: Vec<i32> = listeners
        .listeners()
        .iter()
        .filter_map(|l| l.port())
        .collect();
    ports.sort();
    assert_eq!(ports, vec![80, 443]);
    let tgs = elb.describe_target_groups().send().await.unwrap();
    assert_eq!(tgs.target_groups().len(), 2);
    for tg in tgs.target_groups() {
        assert_eq!(tg.protocol().map(|p| p.as_str()), Some("TCP"));
        assert_eq!(tg.health_check_path(), Some("/status"));
        assert_eq!(tg.health_check_port(), Some("9091"));
        let health = elb
            .describe_target_health()
            .target_group_arn(tg.target_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        let registered: HashSet<String> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_string))
            .collect();
        assert_eq!(registered, nodes);
    }

    let down = aws_cli(&moto, &["nlb", "down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()
        .is_empty());
    assert!(elb
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
        .is_empty());
    let again = aws_cli(&moto, &["nlb", "down"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}
