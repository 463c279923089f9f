//! `lbd`: the node daemon and the operator CLI (see docs/lbd.md).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lbd::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "lbd",
    version,
    about = "Routing-integrated load balancer for storage sites",
    long_about = "Routing-integrated load balancer for storage sites.\n\n\
        `lbd run` is the node daemon (health checks, peer liveness, Maglev tables in XDP, \
        BGP announcements); the other commands talk to it or check its config."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file without touching the system (exit 2 on error).
    CheckConfig {
        /// Config file.
        #[arg(default_value = config::DEFAULT_PATH)]
        file: PathBuf,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Version => {
            println!("lbd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: OK: node {}, {} members, {} VIPs, {} BGP peers, generation {}",
                file.display(),
                c.node_id,
                c.members.len(),
                c.vips.len(),
                c.bgp.peers.len(),
                c.generation()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
