//! Switchyard's AWS side, in a crate of its own (the SDK is large and never on the request
//! path: it compiles once, at a modest optimisation level, and a change to the proxy does not
//! recompile it): the SDK configuration, the EC2 calls of discovery ([`discovery`]), and the
//! `switchyard aws` commands (launch, list, kill switch, ALB for comparison, NLB and nodes for
//! high availability).
//!
//! Credentials come from the standard AWS chain (environment, shared files, SSO, instance
//! metadata) through `aws-config`; they are never logged.

pub mod alb;
pub mod cli;
pub mod discovery;
pub mod instances;
pub mod nlb;
pub mod nodes;

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Tag put on everything Switchyard creates, so the kill switch touches nothing else.
pub const PROJECT_TAG_KEY: &str = "Project";
/// Value of [`PROJECT_TAG_KEY`].
pub const PROJECT_TAG_VALUE: &str = "switchyard";
/// Tag naming an instance's cluster.
pub const CLUSTER_TAG_KEY: &str = "Cluster";
/// Tag naming what an instance is for.
pub const ROLE_TAG_KEY: &str = "Role";
/// [`ROLE_TAG_KEY`] of Switchyard nodes (the load balancers themselves).
pub const NODE_ROLE: &str = "switchyard-node";

/// Where and as whom to call AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsTarget {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
}

/// The SDK configuration for `target`: the default credential chain, the named profile, an
/// assumed role, and an endpoint override when given.
pub async fn sdk_config(target: &AwsTarget) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &target.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &target.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let base = loader.load().await;
    let Some(role_arn) = &target.role_arn else {
        return base;
    };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("switchyard")
        .configure(&base)
        .build()
        .await;
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).credentials_provider(provider);
    if let Some(region) = base.region() {
        loader = loader.region(region.clone());
    }
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// An error from the AWS SDK with its service message, without the request's details.
pub fn describe_error<E: std::error::Error>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
