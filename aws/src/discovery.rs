//! The EC2 side of discovery: which running instances match a set of filters, and at which
//! address. (What becomes of them is the proxy's business.)

use std::net::{IpAddr, SocketAddr};

use tokio::sync::OnceCell;

use super::{describe_error, sdk_config, AwsTarget};

/// What to ask EC2 for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub target: AwsTarget,
    /// (name, values) passed to DescribeInstances, plus `instance-state-name=running`.
    pub filters: Vec<(String, Vec<String>)>,
    pub port: u16,
    pub public_address: bool,
}

/// A client for one query, created on first use (inside the runtime that uses it, never
/// before a daemon fork).
pub struct Ec2Source {
    query: Query,
    client: OnceCell<aws_sdk_ec2::Client>,
}

impl Ec2Source {
    pub fn new(query: Query) -> Self {
        Self {
            query,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_ec2::Client {
        self.client
            .get_or_init(|| async {
                aws_sdk_ec2::Client::new(&sdk_config(&self.query.target).await)
            })
            .await
    }

    /// Addresses of the running instances matching the filters, sorted, without duplicates.
    pub async fn running(&self) -> Result<Vec<SocketAddr>, String> {
        let mut request = self.client().await.describe_instances();
        for (name, values) in &self.query.filters {
            request = request.filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        request = request.filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("running")
                .build(),
        );
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| describe_error(&e))?;
            for reservation in page.reservations() {
                for instance in reservation.instances() {
                    let ip = if self.query.public_address {
                        instance.public_ip_address()
                    } else {
                        instance.private_ip_address()
                    };
                    if let Some(ip) = ip.and_then(|ip| ip.parse::<IpAddr>().ok()) {
                        out.push(SocketAddr::new(ip, self.query.port));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
