//! The high-availability front of several Switchyard nodes: an AWS Network Load Balancer
//! passing TCP 80 and 443 to every running node (instances tagged `Role=switchyard-node`),
//! with health checks on each node's admin status page. `up` is idempotent; `down` removes
//! what `up` made (and says when there is nothing to remove).

use anyhow::{bail, Context};
use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum, Tag,
    TargetDescription, TargetTypeEnum,
};

use super::{describe_error, NODE_ROLE, PROJECT_TAG_KEY, PROJECT_TAG_VALUE, ROLE_TAG_KEY};

/// Name of the load balancer `up` creates.
pub const NLB_NAME: &str = "switchyard-nlb";

/// What to build.
#[derive(Debug, Clone)]
pub struct NlbSpec {
    /// Subnets (default: the default VPC's default subnets).
    pub subnets: Vec<String>,
    /// TCP ports passed through to the nodes.
    pub ports: Vec<u16>,
    /// The nodes' admin port, where the health check reads the status page.
    pub admin_port: u16,
}

/// What `up` built.
#[derive(Debug, Clone)]
pub struct NlbInfo {
    pub arn: String,
    pub dns_name: String,
    /// (port, target group ARN, nodes registered)
    pub target_groups: Vec<(u16, String, usize)>,
}

fn target_group_name(port: u16) -> String {
    format!("switchyard-nodes-{port}")
}

fn project_tag() -> Tag {
    Tag::builder()
        .key(PROJECT_TAG_KEY)
        .value(PROJECT_TAG_VALUE)
        .build()
}

fn err<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {}", describe_error(&e))
}

async fn find_nlb(lb: &elb::Client) -> anyhow::Result<Option<elb::types::LoadBalancer>> {
    let all = lb
        .describe_load_balancers()
        .send()
        .await
        .map_err(err("DescribeLoadBalancers"))?;
    Ok(all
        .load_balancers()
        .iter()
        .find(|l| l.load_balancer_name() == Some(NLB_NAME))
        .cloned())
}

async fn find_target_group(lb: &elb::Client, name: &str) -> anyhow::Result<Option<String>> {
    let all = lb
        .describe_target_groups()
        .send()
        .await
        .map_err(err("DescribeTargetGroups"))?;
    Ok(all
        .target_groups()
        .iter()
        .find(|t| t.target_group_name() == Some(name))
        .and_then(|t| t.target_group_arn())
        .map(str::to_string))
}

/// The running Switchyard nodes.
pub async fn running_nodes(ec2: &aws_sdk_ec2::Client) -> anyhow::Result<Vec<String>> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{ROLE_TAG_KEY}"))
                .values(NODE_ROLE)
                .build(),
        )
        .filters(
            Filter::builder()
                .name(format!("tag:{PROJECT_TAG_KEY}"))
                .values(PROJECT_TAG_VALUE)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        )
        .send()
        .await
        .map_err(err("DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

/// Build (or complete) the NLB and register every running node.
pub async fn up(
    ec2: &aws_sdk_ec2::Client,
    lb: &elb::Client,
    spec: &NlbSpec,
) -> anyhow::Result<NlbInfo> {
    let subnets = super::alb::subnets_or_default(ec2, &spec.subnets).await?;
    let vpc_id = super::alb::vpc_of(ec2, &subnets[0]).await?;
    let nlb = match find_nlb(lb).await? {
        Some(existing) => existing,
        None => lb
            .create_load_balancer()
            .name(NLB_NAME)
            .set_subnets(Some(subnets.clone()))
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .r#type(LoadBalancerTypeEnum::Network)
            .tags(project_tag())
            .send()
            .await
            .map_err(err("CreateLoadBalancer"))?
            .load_balancers()
            .first()
            .cloned()
            .context("CreateLoadBalancer returned nothing")?,
    };
    let nlb_arn = nlb
        .load_balancer_arn()
        .context("load balancer without ARN")?
        .to_string();
    let nodes = running_nodes(ec2).await?;
    if nodes.is_empty() {
        log::warn!("no running Switchyard node (tag {ROLE_TAG_KEY}={NODE_ROLE}): the NLB has no target yet; launch some with `switchyard aws launch-nodes`");
    }
    let listeners = lb
        .describe_listeners()
        .load_balancer_arn(&nlb_arn)
        .send()
        .await
        .map_err(err("DescribeListeners"))?;
    let mut target_groups = Vec::new();
    for &port in &spec.ports {
        let name = target_group_name(port);
        let arn = match find_target_group(lb, &name).await? {
            Some(arn) => arn,
            None => lb
                .create_target_group()
                .name(&name)
                .protocol(ProtocolEnum::Tcp)
                .port(port as i32)
                .vpc_id(&vpc_id)
                .target_type(TargetTypeEnum::Instance)
                .health_check_protocol(ProtocolEnum::Http)
                .health_check_port(spec.admin_port.to_string())
                .health_check_path("/status")
                .tags(project_tag())
                .send()
                .await
                .map_err(err("CreateTargetGroup"))?
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .context("CreateTargetGroup returned nothing")?
                .to_string(),
        };
        if !nodes.is_empty() {
            let mut req = lb.register_targets().target_group_arn(&arn);
            for id in &nodes {
                req = req.targets(
                    TargetDescription::builder()
                        .id(id)
                        .port(port as i32)
                        .build(),
                );
            }
            req.send().await.map_err(err("RegisterTargets"))?;
        }
        let has_listener = listeners
            .listeners()
            .iter()
            .any(|l| l.port() == Some(port as i32));
        if !has_listener {
            lb.create_listener()
                .load_balancer_arn(&nlb_arn)
                .protocol(ProtocolEnum::Tcp)
                .port(port as i32)
                .default_actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::Forward)
                        .target_group_arn(&arn)
                        .build(),
                )
                .send()
                .await
                .map_err(err("CreateListener"))?;
        }
        target_groups.push((port, arn, nodes.len()));
    }
    if spec.ports.is_empty() {
        bail!("no port to pass through");
    }
    Ok(NlbInfo {
        arn: nlb_arn,
        dns_name: nlb.dns_name().unwrap_or_default().to_string(),
        target_groups,
    })
}

/// Remove the listeners, the NLB and the target groups `up` made; what was removed.
pub async fn down(lb: &elb::Client, ports: &[u16]) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    if let Some(nlb) = find_nlb(lb).await? {
        let arn = nlb.load_balancer_arn().unwrap_or_default().to_string();
        let listeners = lb
            .describe_listeners()
            .load_balancer_arn(&arn)
            .send()
            .await
            .map_err(err("DescribeListeners"))?;
        for l in listeners.listeners() {
            if let Some(la) = l.listener_arn() {
                lb.delete_listener()
                    .listener_arn(la)
                    .send()
                    .await
                    .map_err(err("DeleteListener"))?;
                removed.push(format!("listener {la}"));
            }
        }
        lb.delete_load_balancer()
            .load_balancer_arn(&arn)
            .send()
            .await
            .map_err(err("DeleteLoadBalancer"))?;
        removed.push(format!("load balancer {NLB_NAME}"));
    }
    for &port in ports {
        let name = target_group_name(port);
        if let Some(arn) = find_target_group(lb, &name).await? {
            lb.delete_target_group()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(err("DeleteTargetGroup"))?;
            removed.push(format!("target group {name}"));
        }
    }
    Ok(removed)
}
