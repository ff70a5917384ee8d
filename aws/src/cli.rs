//! `switchyard aws …`: the AWS commands of the same binary.

use clap::{Args, Subcommand};

use super::alb::{self, AlbSpec};
use super::instances::{self, LaunchSpec};
use super::nlb::{self, NlbSpec};
use super::nodes::{self, NodeSpec};
use super::{sdk_config, AwsTarget};

/// Options shared by every AWS command.
#[derive(Args, Debug, Clone)]
pub struct AwsArgs {
    /// AWS region (default: the SDK's default chain, e.g. AWS_REGION).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Named profile from the shared AWS config files.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Endpoint override (e.g. an EC2 API emulator).
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// Role to assume with STS.
    #[arg(long, global = true)]
    pub role_arn: Option<String>,
    #[command(subcommand)]
    pub command: AwsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AwsCommand {
    /// Launch demo backend instances for a cluster (security group and user data included).
    Launch(LaunchSpec),
    /// Launch Switchyard nodes: the binary from a URL, the given configuration, systemd.
    LaunchNodes(NodeSpec),
    /// List the project's instances.
    List,
    /// Terminate every instance tagged Project=switchyard, and nothing else.
    KillSwitch {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Application Load Balancer for comparison.
    Alb {
        #[command(subcommand)]
        action: AlbAction,
    },
    /// Network Load Balancer in front of the Switchyard nodes (high availability).
    Nlb {
        #[command(subcommand)]
        action: NlbAction,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum NlbAction {
    /// Create (or complete) the NLB: TCP listeners, one target group per port with every
    /// running node registered, health checks on the nodes' admin status page.
    Up {
        #[arg(long, value_delimiter = ',')]
        subnets: Vec<String>,
        /// TCP ports passed through to the nodes.
        #[arg(long, value_delimiter = ',', default_value = "80,443")]
        ports: Vec<u16>,
        /// The nodes' admin port (health checks read `/status` there).
        #[arg(long, default_value_t = 9091)]
        admin_port: u16,
    },
    /// Remove what `up` created.
    Down {
        #[arg(long, value_delimiter = ',', default_value = "80,443")]
        ports: Vec<u16>,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AlbAction {
    /// Create (or complete) the ALB: one target group per cluster, path rules, instances registered.
    Up {
        #[arg(long, value_delimiter = ',', default_value = "Cluster1,Cluster2")]
        clusters: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        subnets: Vec<String>,
        #[arg(long, default_value_t = 8001)]
        app_port: u16,
        /// Who may reach the ALB on port 80.
        #[arg(long, default_value = "0.0.0.0/0")]
        client_cidr: String,
    },
    /// Remove what `up` created.
    Down {
        #[arg(long, value_delimiter = ',', default_value = "Cluster1,Cluster2")]
        clusters: Vec<String>,
    },
}

/// Run an AWS command; `check` validates a Switchyard configuration (text, source name).
pub async fn run(
    args: AwsArgs,
    check: &dyn Fn(&str, &str) -> Result<(), String>,
) -> anyhow::Result<()> {
    let target = AwsTarget {
        region: args.region,
        endpoint: args.endpoint,
        profile: args.profile,
        role_arn: args.role_arn,
    };
    let config = sdk_config(&target).await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    match args.command {
        AwsCommand::Launch(spec) => {
            let ids = instances::launch(&ec2, &spec).await?;
            println!(
                "launched {} instance(s) for {}: {}",
                ids.len(),
                spec.cluster,
                ids.join(" ")
            );
        }
        AwsCommand::LaunchNodes(spec) => {
            let ids = nodes::launch_nodes(&ec2, &spec, check).await?;
            println!("launched {} node(s): {}", ids.len(), ids.join(" "));
        }
        AwsCommand::List => print!("{}", instances::table(&instances::list(&ec2).await?)),
        AwsCommand::KillSwitch { yes } => {
            let ids = instances::kill_switch(&ec2, yes).await?;
            if !ids.is_empty() {
                println!("terminating {} instance(s): {}", ids.len(), ids.join(" "));
            }
        }
        AwsCommand::Alb { action } => {
            let lb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
            match action {
                AlbAction::Up {
                    clusters,
                    subnets,
                    app_port,
                    client_cidr,
                } => {
                    let info = alb::up(
                        &ec2,
                        &lb,
                        &AlbSpec {
                            clusters,
                            subnets,
                            app_port,
                            client_cidr,
                        },
                    )
                    .await?;
                    for (cluster, _, n) in &info.target_groups {
                        println!("target group for {cluster}: {n} instance(s) registered");
                    }
                    println!("{}", info.dns_name);
                }
                AlbAction::Down { clusters } => {
                    print_removed(&alb::down(&lb, &clusters).await?, alb::ALB_NAME);
                }
            }
        }
        AwsCommand::Nlb { action } => {
            let lb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
            match action {
                NlbAction::Up {
                    subnets,
                    ports,
                    admin_port,
                } => {
                    let info = nlb::up(
                        &ec2,
                        &lb,
                        &NlbSpec {
                            subnets,
                            ports,
                            admin_port,
                        },
                    )
                    .await?;
                    for (port, _, n) in &info.target_groups {
                        println!("TCP {port}: {n} node(s) registered");
                    }
                    println!("{}", info.dns_name);
                }
                NlbAction::Down { ports } => {
                    print_removed(&nlb::down(&lb, &ports).await?, nlb::NLB_NAME);
                }
            }
        }
    }
    Ok(())
}

fn print_removed(removed: &[String], what: &str) {
    if removed.is_empty() {
        println!("nothing to remove: no {what} and none of its target groups exist");
    }
    for r in removed {
        println!("removed {r}");
    }
}
