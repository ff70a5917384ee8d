//! Switchyard nodes on EC2: instances whose user data installs the `switchyard` binary from a
//! URL and the given configuration, and runs it under systemd (`systemctl reload` = hot
//! reload). Tagged `Project=switchyard`, `Role=switchyard-node`, so `aws nlb up` finds them and
//! the kill switch removes them.

use anyhow::{bail, Context};
use aws_sdk_ec2::types::{InstanceType, ResourceType, TagSpecification};
use aws_sdk_ec2::Client;
use base64::Engine;

use super::instances::{default_vpc, ensure_group, latest_amazon_linux, tag};
use super::{describe_error, NODE_ROLE, PROJECT_TAG_KEY, PROJECT_TAG_VALUE, ROLE_TAG_KEY};

/// Name of the nodes' security group.
pub const NODE_SECURITY_GROUP: &str = "switchyard-nodes";

/// The largest configuration carried in user data (EC2 allows 16 KiB of user data).
pub const MAX_CONFIG_BYTES: usize = 10 * 1024;

/// What to launch (the flags of `switchyard aws launch-nodes`).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeSpec {
    /// URL the instances download the `switchyard` binary (Linux x86_64) from.
    #[arg(long)]
    pub binary_url: String,
    /// The configuration file each node runs with (checked here before anything starts).
    #[arg(long)]
    pub config: std::path::PathBuf,
    #[arg(long, default_value_t = 2)]
    pub count: i32,
    /// Instance type.
    #[arg(long, default_value = "t3.small")]
    pub flavor: String,
    /// Who may reach ports 80 and 443.
    #[arg(long, default_value = "0.0.0.0/0")]
    pub client_cidr: String,
    /// The nodes' admin port (opened to the VPC, for the NLB's health checks).
    #[arg(long, default_value_t = 9091)]
    pub admin_port: u16,
    /// EC2 key pair for SSH.
    #[arg(long)]
    pub key_name: Option<String>,
    /// Open SSH to this CIDR (closed unless given).
    #[arg(long)]
    pub ssh_cidr: Option<String>,
    /// Image (default: the newest Amazon Linux 2023).
    #[arg(long)]
    pub ami: Option<String>,
}

/// The user data of a node: the binary, the configuration, a systemd unit.
pub fn node_user_data(binary_url: &str, config: &str) -> String {
    let config_b64 = base64::engine::general_purpose::STANDARD.encode(config);
    format!(
        "#!/bin/bash\nset -eu\n\
         curl -fsSL -o /usr/local/bin/switchyard '{binary_url}'\nchmod +x /usr/local/bin/switchyard\n\
         mkdir -p /etc/switchyard\necho '{config_b64}' | base64 -d > /etc/switchyard/switchyard.yaml\n\
         /usr/local/bin/switchyard -t -c /etc/switchyard/switchyard.yaml\n\
         cat > /etc/systemd/system/switchyard.service <<'UNIT'\n\
         [Unit]\nDescription=Switchyard load balancer\nAfter=network-online.target\nWants=network-online.target\n\
         [Service]\nExecStart=/usr/local/bin/switchyard -c /etc/switchyard/switchyard.yaml\n\
         ExecReload=/bin/kill -HUP $MAINPID\nRestart=always\nLimitNOFILE=65536\n\
         [Install]\nWantedBy=multi-user.target\nUNIT\n\
         systemctl daemon-reload\nsystemctl enable --now switchyard\n"
    )
}

/// Launch `spec.count` nodes; returns their ids. `check` validates the configuration
/// (text, source name) the way `switchyard -t` does, before anything is launched.
pub async fn launch_nodes(
    ec2: &Client,
    spec: &NodeSpec,
    check: &dyn Fn(&str, &str) -> Result<(), String>,
) -> anyhow::Result<Vec<String>> {
    if spec.count < 1 || spec.count > 20 {
        bail!("--count must be within 1..=20");
    }
    let config = std::fs::read_to_string(&spec.config)
        .with_context(|| format!("reading {}", spec.config.display()))?;
    if config.len() > MAX_CONFIG_BYTES {
        bail!(
            "{} is {} bytes; at most {MAX_CONFIG_BYTES} fit in EC2 user data",
            spec.config.display(),
            config.len()
        );
    }
    check(&config, &spec.config.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (vpc_id, vpc_cidr) = default_vpc(ec2).await?;
    let mut rules = vec![
        (80, spec.client_cidr.clone()),
        (443, spec.client_cidr.clone()),
        (spec.admin_port, vpc_cidr),
    ];
    if let Some(ssh) = &spec.ssh_cidr {
        rules.push((22, ssh.clone()));
    }
    let sg = ensure_group(
        ec2,
        &vpc_id,
        NODE_SECURITY_GROUP,
        "Switchyard nodes",
        &rules,
    )
    .await?;
    let ami = match &spec.ami {
        Some(a) => a.clone(),
        None => latest_amazon_linux(ec2).await?,
    };
    let data =
        base64::engine::general_purpose::STANDARD.encode(node_user_data(&spec.binary_url, &config));
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
                .tags(tag("Name", "switchyard-node"))
                .tags(tag(ROLE_TAG_KEY, NODE_ROLE))
                .tags(tag(PROJECT_TAG_KEY, PROJECT_TAG_VALUE))
                .build(),
        );
    if let Some(k) = &spec.key_name {
        req = req.key_name(k);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_installs_checks_and_runs_the_node() {
        let data = node_user_data("https://example.com/switchyard", "listeners: []\n");
        assert!(data
            .contains("curl -fsSL -o /usr/local/bin/switchyard 'https://example.com/switchyard'"));
        assert!(data.contains("switchyard -t -c /etc/switchyard/switchyard.yaml"));
        assert!(data.contains("ExecReload=/bin/kill -HUP $MAINPID"));
        let b64 = base64::engine::general_purpose::STANDARD.encode("listeners: []\n");
        assert!(data.contains(&b64));
    }
}
