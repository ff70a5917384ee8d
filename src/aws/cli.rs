//! `switchyard aws …`: the AWS commands of the same binary.

use clap::{Args, Subcommand};

use super::alb::{self, AlbSpec};
use super::instances::{self, LaunchSpec};
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
    /// Launch demo instances for a cluster (security group and user data included).
    Launch(LaunchSpec),
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

/// Run an AWS command.
pub async fn run(args: AwsArgs) -> anyhow::Result<()> {
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
                    for r in alb::down(&lb, &clusters).await? {
                        println!("removed {r}");
                    }
                }
            }
        }
    }
    Ok(())
}
