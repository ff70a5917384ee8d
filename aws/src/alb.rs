//! An AWS Application Load Balancer built like Switchyard's demo routing (`/cluster1*` and
//! `/cluster2*` to one target group per cluster), for side-by-side comparison. `up` is
//! idempotent; `down` removes what `up` made.

use anyhow::{bail, Context};
use aws_sdk_ec2::types::Filter;
use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, LoadBalancerSchemeEnum,
    LoadBalancerTypeEnum, PathPatternConditionConfig, ProtocolEnum, RuleCondition, Tag,
    TargetDescription, TargetTypeEnum,
};

use super::{describe_error, CLUSTER_TAG_KEY, PROJECT_TAG_KEY, PROJECT_TAG_VALUE};

/// Name of the load balancer `up` creates.
pub const ALB_NAME: &str = "switchyard-alb";

/// What to build.
#[derive(Debug, Clone)]
pub struct AlbSpec {
    /// Clusters (tag values); cluster `Cluster1` is routed from `/cluster1*`.
    pub clusters: Vec<String>,
    /// Subnets (default: the default VPC's default subnets).
    pub subnets: Vec<String>,
    /// The port the demo backend listens on, on every instance.
    pub app_port: u16,
    /// Who may reach the ALB's port 80.
    pub client_cidr: String,
}

/// What `up` built.
#[derive(Debug, Clone)]
pub struct AlbInfo {
    pub arn: String,
    pub dns_name: String,
    pub target_groups: Vec<(String, String, usize)>,
}

fn target_group_name(cluster: &str) -> String {
    format!("switchyard-{}", cluster.to_ascii_lowercase())
}

fn path_of(cluster: &str) -> String {
    format!("/{}", cluster.to_ascii_lowercase())
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

async fn find_alb(lb: &elb::Client) -> anyhow::Result<Option<elb::types::LoadBalancer>> {
    // DescribeLoadBalancers by name fails when there is none; list and match instead.
    let all = lb
        .describe_load_balancers()
        .send()
        .await
        .map_err(err("DescribeLoadBalancers"))?;
    Ok(all
        .load_balancers()
        .iter()
        .find(|l| l.load_balancer_name() == Some(ALB_NAME))
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

/// Build (or complete) the ALB and register the clusters' running instances.
pub async fn up(
    ec2: &aws_sdk_ec2::Client,
    lb: &elb::Client,
    spec: &AlbSpec,
) -> anyhow::Result<AlbInfo> {
    let subnets = subnets_or_default(ec2, &spec.subnets).await?;
    let vpc_id = vpc_of(ec2, &subnets[0]).await?;

    let alb = match find_alb(lb).await? {
        Some(existing) => existing,
        None => {
            let sg = alb_security_group(ec2, &vpc_id, &spec.client_cidr).await?;
            let created = lb
                .create_load_balancer()
                .name(ALB_NAME)
                .set_subnets(Some(subnets.clone()))
                .security_groups(sg)
                .scheme(LoadBalancerSchemeEnum::InternetFacing)
                .r#type(LoadBalancerTypeEnum::Application)
                .tags(project_tag())
                .send()
                .await
                .map_err(err("CreateLoadBalancer"))?;
            created
                .load_balancers()
                .first()
                .cloned()
                .context("CreateLoadBalancer returned nothing")?
        }
    };
    let alb_arn = alb
        .load_balancer_arn()
        .context("load balancer without ARN")?
        .to_string();

    let mut target_groups = Vec::new();
    for cluster in &spec.clusters {
        let name = target_group_name(cluster);
        let arn = match find_target_group(lb, &name).await? {
            Some(arn) => arn,
            None => lb
                .create_target_group()
                .name(&name)
                .protocol(ProtocolEnum::Http)
                .port(spec.app_port as i32)
                .vpc_id(&vpc_id)
                .target_type(TargetTypeEnum::Instance)
                .health_check_path("/health")
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
        let ids = running_instances(ec2, cluster).await?;
        if !ids.is_empty() {
            let mut req = lb.register_targets().target_group_arn(&arn);
            for id in &ids {
                req = req.targets(
                    TargetDescription::builder()
                        .id(id)
                        .port(spec.app_port as i32)
                        .build(),
                );
            }
            req.send().await.map_err(err("RegisterTargets"))?;
        }
        target_groups.push((cluster.clone(), arn, ids.len()));
    }

    let listeners = lb
        .describe_listeners()
        .load_balancer_arn(&alb_arn)
        .send()
        .await
        .map_err(err("DescribeListeners"))?;
    let listener_arn = match listeners
        .listeners()
        .iter()
        .find(|l| l.port() == Some(80))
        .and_then(|l| l.listener_arn())
    {
        Some(arn) => arn.to_string(),
        None => {
            let not_found = FixedResponseActionConfig::builder()
                .status_code("404")
                .content_type("text/plain")
                .message_body("no route for this request")
                .build();
            lb.create_listener()
                .load_balancer_arn(&alb_arn)
                .protocol(ProtocolEnum::Http)
                .port(80)
                .default_actions(
                    Action::builder()
                        .r#type(ActionTypeEnum::FixedResponse)
                        .fixed_response_config(not_found)
                        .build(),
                )
                .send()
                .await
                .map_err(err("CreateListener"))?
                .listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .context("CreateListener returned nothing")?
                .to_string()
        }
    };
    let rules = lb
        .describe_rules()
        .listener_arn(&listener_arn)
        .send()
        .await
        .map_err(err("DescribeRules"))?;
    for (i, (cluster, tg_arn, _)) in target_groups.iter().enumerate() {
        let pattern = format!("{}*", path_of(cluster));
        let exists = rules.rules().iter().any(|r| {
            r.conditions().iter().any(|c| {
                c.path_pattern_config()
                    .is_some_and(|p| p.values().contains(&pattern))
                    || c.values().contains(&pattern)
            })
        });
        if exists {
            continue;
        }
        lb.create_rule()
            .listener_arn(&listener_arn)
            .priority(10 * (i as i32 + 1))
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .path_pattern_config(
                        PathPatternConditionConfig::builder()
                            .values(&pattern)
                            .build(),
                    )
                    .build(),
            )
            .actions(
                Action::builder()
                    .r#type(ActionTypeEnum::Forward)
                    .target_group_arn(tg_arn)
                    .build(),
            )
            .send()
            .await
            .map_err(err("CreateRule"))?;
    }
    Ok(AlbInfo {
        arn: alb_arn,
        dns_name: alb.dns_name().unwrap_or_default().to_string(),
        target_groups,
    })
}

/// `given`, or the default VPC's default subnets.
pub async fn subnets_or_default(
    ec2: &aws_sdk_ec2::Client,
    given: &[String],
) -> anyhow::Result<Vec<String>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let s = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        )
        .send()
        .await
        .map_err(err("DescribeSubnets"))?;
    let subnets: Vec<String> = s
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_string))
        .collect();
    if subnets.is_empty() {
        bail!("no subnets: the region has no default VPC subnets; pass --subnets");
    }
    Ok(subnets)
}

/// The VPC of `subnet`.
pub async fn vpc_of(ec2: &aws_sdk_ec2::Client, subnet: &str) -> anyhow::Result<String> {
    let first = ec2
        .describe_subnets()
        .subnet_ids(subnet)
        .send()
        .await
        .map_err(err("DescribeSubnets"))?;
    Ok(first
        .subnets()
        .first()
        .and_then(|s| s.vpc_id())
        .context("subnet without VPC")?
        .to_string())
}

async fn running_instances(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
) -> anyhow::Result<Vec<String>> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{CLUSTER_TAG_KEY}"))
                .values(cluster)
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

/// The ALB's security group: port 80 open to `client_cidr`.
async fn alb_security_group(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    client_cidr: &str,
) -> anyhow::Result<String> {
    let name = "switchyard-alb";
    let existing = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .send()
        .await
        .map_err(err("DescribeSecurityGroups"))?;
    if let Some(id) = existing
        .security_groups()
        .first()
        .and_then(|g| g.group_id())
    {
        return Ok(id.to_string());
    }
    let id = ec2
        .create_security_group()
        .group_name(name)
        .description("Switchyard comparison ALB")
        .vpc_id(vpc_id)
        .send()
        .await
        .map_err(err("CreateSecurityGroup"))?
        .group_id()
        .context("no security group id")?
        .to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(80)
                .to_port(80)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip(client_cidr)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(err("AuthorizeSecurityGroupIngress"))?;
    Ok(id)
}

/// Remove the listener, the load balancer and the target groups `up` made.
pub async fn down(lb: &elb::Client, clusters: &[String]) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    if let Some(alb) = find_alb(lb).await? {
        let arn = alb.load_balancer_arn().unwrap_or_default().to_string();
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
        removed.push(format!("load balancer {ALB_NAME}"));
    }
    for cluster in clusters {
        let name = target_group_name(cluster);
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
