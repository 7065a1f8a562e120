//! `coldstart status`: every member in etcd with its health.

use crate::ConfigArgs;
use coldstart_runtime::discovery::{EtcdRegistry, EtcdSettings, Registry, Role};
use std::time::Duration;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Prints members and health; true when every role has a healthy member.
pub async fn run(a: StatusArgs) -> anyhow::Result<bool> {
    let cfg = a.config.load()?;
    let reg = EtcdRegistry::start(EtcdSettings::from_config(&cfg.process()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let membership = reg.watch().borrow().clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    println!(
        "{:<11} {:<14} {:<9} {:<12} {:<22} {:<22} health",
        "role", "node", "state", "model", "http", "flight"
    );
    let mut healthy_roles = std::collections::HashSet::new();
    for m in membership.all() {
        let ready = match client
            .get(format!("http://{}/readyz", m.http_addr))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => "ready".to_string(),
            Ok(r) => format!("not ready ({})", r.status().as_u16()),
            Err(e) => format!("unreachable ({})", e.without_url()),
        };
        if ready == "ready" {
            healthy_roles.insert(m.role);
        }
        println!(
            "{:<11} {:<14} {:<9} {:<12} {:<22} {:<22} {ready}",
            m.role.as_str(),
            m.node_id,
            format!("{:?}", m.state).to_lowercase(),
            m.model.as_deref().unwrap_or("-"),
            m.http_addr,
            m.flight_addr
        );
    }
    let missing: Vec<&str> = Role::ALL
        .iter()
        .filter(|r| !healthy_roles.contains(r))
        .map(|r| r.as_str())
        .collect();
    if missing.is_empty() {
        println!("all roles healthy");
        Ok(true)
    } else {
        println!("unhealthy or missing roles: {}", missing.join(", "));
        Ok(false)
    }
}
