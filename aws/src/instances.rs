//! Demo instances: launch (security group + user data that starts the demo backend), list,
//! and the kill switch that terminates only instances carrying the project tag.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context};
use aws_sdk_ec2::types::{
    Filter, InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use super::{describe_error, CLUSTER_TAG_KEY, PROJECT_TAG_KEY, PROJECT_TAG_VALUE};

/// Name of the security group `launch` creates or reuses.
pub const SECURITY_GROUP_NAME: &str = "switchyard-demo";

/// What to launch (the flags of `switchyard aws launch`).
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchSpec {
    /// Instance type.
    #[arg(long, default_value = "t3.micro")]
    pub flavor: String,
    /// Cluster tag value, e.g. Cluster1.
    #[arg(long)]
    pub cluster: String,
    #[arg(long, default_value_t = 2)]
    pub count: i32,
    /// EC2 key pair for SSH.
    #[arg(long)]
    pub key_name: Option<String>,
    /// Open SSH to this CIDR (closed unless given).
    #[arg(long)]
    pub ssh_cidr: Option<String>,
    /// Open the application port to this CIDR (default: the VPC's CIDR).
    #[arg(long)]
    pub app_cidr: Option<String>,
    /// Port the demo backend listens on.
    #[arg(long, default_value_t = 8001)]
    pub app_port: u16,
    /// Image (default: the newest Amazon Linux 2023).
    #[arg(long)]
    pub ami: Option<String>,
    /// Subnet (default: the default VPC's).
    #[arg(long)]
    pub subnet_id: Option<String>,
    /// URL the instances download the demo backend (`backend-server`, built with `cargo
    /// build --release -p backend-server`) from. Without it, a Python stand-in answering the
    /// same paths (`/health` and JSON naming the instance) runs instead.
    #[arg(long)]
    pub backend_url: Option<String>,
}

/// One project instance as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    pub cluster: String,
    pub instance_type: String,
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

pub(super) fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn project_filter() -> Filter {
    Filter::builder()
        .name(format!("tag:{PROJECT_TAG_KEY}"))
        .values(PROJECT_TAG_VALUE)
        .build()
}

/// The user data that installs and starts the demo backend at boot. With a download URL the
/// real `backend-server` runs; without one, a small Python server answers the same paths
/// (`/health`, everything else as JSON naming the instance) so checks and routing work.
pub fn user_data(cluster: &str, port: u16, backend_url: Option<&str>) -> String {
    let start = match backend_url {
        Some(url) => format!(
            "curl -fsSL -o /usr/local/bin/backend-server '{url}'\nchmod +x /usr/local/bin/backend-server\n\
             NAME=\"{cluster}-$(hostname -s)\"\n\
             cat > /etc/systemd/system/backend-server.service <<UNIT\n[Unit]\nDescription=Switchyard demo backend\n[Service]\n\
             ExecStart=/usr/local/bin/backend-server --listen 0.0.0.0:{port} --name $NAME\nRestart=always\n[Install]\nWantedBy=multi-user.target\nUNIT\n\
             systemctl daemon-reload\nsystemctl enable --now backend-server\n"
        ),
        None => format!(
            "cat > /usr/local/bin/backend-server.py <<'PY'\n\
import json, socket, http.server\n\
NAME = '{cluster}-' + socket.gethostname().split('.')[0]\n\
class H(http.server.BaseHTTPRequestHandler):\n\
    def do_GET(self):\n\
        body = json.dumps({{'backend': NAME, 'path': self.path, 'hostname': socket.gethostname()}}).encode()\n\
        self.send_response(200); self.send_header('content-type', 'application/json'); self.send_header('x-backend', NAME)\n\
        self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
http.server.ThreadingHTTPServer(('0.0.0.0', {port}), H).serve_forever()\n\
PY\n\
nohup python3 /usr/local/bin/backend-server.py >/var/log/backend-server.log 2>&1 &\n"
        ),
    };
    format!("#!/bin/bash\nset -eu\n{start}")
}

/// The default VPC's id and CIDR.
pub(super) async fn default_vpc(ec2: &Client) -> anyhow::Result<(String, String)> {
    let vpcs = ec2
        .describe_vpcs()
        .filters(Filter::builder().name("is-default").values("true").build())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("DescribeVpcs: {}", describe_error(&e)))?;
    let vpc = vpcs
        .vpcs()
        .first()
        .context("no default VPC in this region: pass --subnet-id")?;
    Ok((
        vpc.vpc_id().unwrap_or_default().to_string(),
        vpc.cidr_block().unwrap_or("10.0.0.0/8").to_string(),
    ))
}

/// Create the demo security group, or reuse it: the application port open to `app_cidr`,
/// SSH only when `ssh_cidr` is given.
pub async fn ensure_security_group(
    ec2: &Client,
    vpc_id: &str,
    app_port: u16,
    app_cidr: &str,
    ssh_cidr: Option<&str>,
) -> anyhow::Result<String> {
    let mut rules = vec![(app_port, app_cidr.to_string())];
    if let Some(ssh) = ssh_cidr {
        rules.push((22, ssh.to_string()));
    }
    ensure_group(
        ec2,
        vpc_id,
        SECURITY_GROUP_NAME,
        "Switchyard demo backends",
        &rules,
    )
    .await
}

/// Create security group `name` in `vpc_id` with TCP `rules` (port, CIDR), or reuse it.
pub async fn ensure_group(
    ec2: &Client,
    vpc_id: &str,
    name: &str,
    description: &str,
    rules: &[(u16, String)],
) -> anyhow::Result<String> {
    let existing = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("DescribeSecurityGroups: {}", describe_error(&e)))?;
    if let Some(id) = existing
        .security_groups()
        .first()
        .and_then(|g| g.group_id())
    {
        return Ok(id.to_string());
    }
    let created = ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .tags(tag(PROJECT_TAG_KEY, PROJECT_TAG_VALUE))
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("CreateSecurityGroup: {}", describe_error(&e)))?;
    let id = created
        .group_id()
        .context("CreateSecurityGroup returned no id")?
        .to_string();
    let mut ingress = ec2.authorize_security_group_ingress().group_id(&id);
    for (port, cidr) in rules {
        ingress = ingress.ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(*port as i32)
                .to_port(*port as i32)
                .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
                .build(),
        );
    }
    ingress
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("AuthorizeSecurityGroupIngress: {}", describe_error(&e)))?;
    Ok(id)
}

/// The newest Amazon Linux 2023 x86_64 image.
pub(super) async fn latest_amazon_linux(ec2: &Client) -> anyhow::Result<String> {
    let images = ec2
        .describe_images()
        .owners("amazon")
        .filters(
            Filter::builder()
                .name("name")
                .values("al2023-ami-2023*-x86_64")
                .build(),
        )
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("DescribeImages: {}", describe_error(&e)))?;
    let mut list: Vec<_> = images
        .images()
        .iter()
        .filter_map(|i| Some((i.creation_date()?.to_string(), i.image_id()?.to_string())))
        .collect();
    list.sort();
    list.pop()
        .map(|(_, id)| id)
        .context("no Amazon Linux 2023 image found: pass --ami")
}

/// Launch `spec.count` instances for a cluster; returns their ids.
pub async fn launch(ec2: &Client, spec: &LaunchSpec) -> anyhow::Result<Vec<String>> {
    if spec.count < 1 || spec.count > 20 {
        bail!("--count must be within 1..=20");
    }
    let (vpc_id, vpc_cidr) = match &spec.subnet_id {
        Some(subnet) => {
            let s = ec2
                .describe_subnets()
                .subnet_ids(subnet)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("DescribeSubnets: {}", describe_error(&e)))?;
            let s = s.subnets().first().context("no such subnet")?;
            (
                s.vpc_id().unwrap_or_default().to_string(),
                s.cidr_block().unwrap_or("10.0.0.0/8").to_string(),
            )
        }
        None => default_vpc(ec2).await?,
    };
    // The application port is open to the VPC by default: the load balancer lives there.
    let app_cidr = spec.app_cidr.clone().unwrap_or(vpc_cidr);
    let sg = ensure_security_group(
        ec2,
        &vpc_id,
        spec.app_port,
        &app_cidr,
        spec.ssh_cidr.as_deref(),
    )
    .await?;
    let ami = match &spec.ami {
        Some(a) => a.clone(),
        None => latest_amazon_linux(ec2).await?,
    };
    let data = base64::engine::general_purpose::STANDARD.encode(user_data(
        &spec.cluster,
        spec.app_port,
        spec.backend_url.as_deref(),
    ));
    let mut req = ec2
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::from(spec.flavor.as_str()))
        .min_count(spec.count)
        .max_count(spec.count)
        .security_group_ids(sg)
        .user_data(data)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag("Name", &format!("switchyard-{}", spec.cluster)))
                .tags(tag(CLUSTER_TAG_KEY, &spec.cluster))
                .tags(tag(PROJECT_TAG_KEY, PROJECT_TAG_VALUE))
                .build(),
        );
    if let Some(k) = &spec.key_name {
        req = req.key_name(k);
    }
    if let Some(s) = &spec.subnet_id {
        req = req.subnet_id(s);
    }
    let out = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("RunInstances: {}", describe_error(&e)))?;
    Ok(out
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

/// Every instance carrying the project tag (terminated ones excluded).
pub async fn list(ec2: &Client) -> anyhow::Result<Vec<InstanceInfo>> {
    let mut pages = ec2
        .describe_instances()
        .filters(project_filter())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .build(),
        )
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| anyhow::anyhow!("DescribeInstances: {}", describe_error(&e)))?;
        for r in page.reservations() {
            for i in r.instances() {
                let tag_value = |key: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                };
                let cluster = tag_value(CLUSTER_TAG_KEY)
                    .or(tag_value(super::ROLE_TAG_KEY))
                    .unwrap_or("-");
                out.push(InstanceInfo {
                    id: i.instance_id().unwrap_or_default().to_string(),
                    cluster: cluster.to_string(),
                    instance_type: i
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    private_ip: i.private_ip_address().map(str::to_string),
                    public_ip: i.public_ip_address().map(str::to_string),
                });
            }
        }
    }
    out.sort_by(|a, b| a.cluster.cmp(&b.cluster).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// A table of instances.
pub fn table(instances: &[InstanceInfo]) -> String {
    let mut out = format!(
        "{:<22} {:<12} {:<10} {:<9} {:<16} {}\n",
        "INSTANCE", "CLUSTER", "TYPE", "STATE", "PRIVATE IP", "PUBLIC IP"
    );
    for i in instances {
        out.push_str(&format!(
            "{:<22} {:<12} {:<10} {:<9} {:<16} {}\n",
            i.id,
            i.cluster,
            i.instance_type,
            i.state,
            i.private_ip.as_deref().unwrap_or("-"),
            i.public_ip.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// Terminate every project-tagged instance. Without `yes`, list them and ask on the
/// terminal; with no terminal, refuse.
pub async fn kill_switch(ec2: &Client, yes: bool) -> anyhow::Result<Vec<String>> {
    let victims: Vec<InstanceInfo> = list(ec2).await?;
    if victims.is_empty() {
        println!("no instance carries the tag {PROJECT_TAG_KEY}={PROJECT_TAG_VALUE}: nothing to terminate");
        return Ok(Vec::new());
    }
    print!("{}", table(&victims));
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "{} instance(s) would be terminated; pass --yes to confirm without a terminal",
                victims.len()
            );
        }
        print!(
            "terminate these {} instance(s)? type 'yes': ",
            victims.len()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("aborted: nothing terminated");
        }
    }
    let ids: Vec<String> = victims.into_iter().map(|i| i.id).collect();
    ec2.terminate_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("TerminateInstances: {}", describe_error(&e)))?;
    Ok(ids)
}
