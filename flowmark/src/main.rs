//! The `flowmark` command: `run` (the marking daemon), `collect` (the
//! firefly collector), `scitag` and `registry` (small tools).
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use flowmark::{
    api, collector,
    daemon::{Config, Daemon},
    discovery, pipe,
    registry::Registry,
    scitag::SciTag,
    tool,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[derive(Parser)]
#[command(version, about = "SciTags flow marking for storage nodes", long_about = None)]
struct Cli {
    /// Registry of experiments and activities (JSON as published by
    /// SciTags); default: the copy built into this binary.
    #[arg(long, global = true, value_name = "FILE")]
    registry: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The marking daemon: takes flows from the flowd pipe and the API
    /// socket, marks their IPv6 flow label on egress, sends fireflies.
    Run(RunArgs),
    /// The firefly collector: UDP fireflies in, Prometheus metrics out.
    Collect(CollectArgs),
    /// Decode a SciTag value, or encode one from --exp and --act, as JSON.
    ///
    /// `flowmark scitag 206` prints experiment 3 (cms), activity 14 and the
    /// flow label with zero entropy (196664 = 0x30038). `flowmark scitag
    /// --exp cms --act "Analysis Input"` does the reverse. Exit status 2 for
    /// an invalid value.
    Scitag {
        /// SciTag value, 65..=65535 (experiment << 6 | activity).
        #[arg(required_unless_present_all = ["exp", "act"], conflicts_with_all = ["exp", "act"])]
        value: Option<String>,
        /// Experiment id (1..=1023) or registry name.
        #[arg(long, requires = "act")]
        exp: Option<String>,
        /// Activity id (0..=63) or registry name for that experiment.
        #[arg(long, requires = "exp")]
        act: Option<String>,
    },
    /// Check or replace the registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCmd,
    },
    /// Write man pages and completions into DIR (for `make packages`).
    #[command(name = clidoc::SUBCOMMAND, hide = true)]
    GenerateDocs { dir: PathBuf },
}

#[derive(Args)]
struct RunArgs {
    /// Interface whose egress is marked (repeatable). Without one, no
    /// marking: fireflies only.
    #[arg(long = "iface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// The flowd named pipe (created if absent); "none" to disable.
    #[arg(long, default_value = "/var/run/flowd", value_name = "PATH")]
    pipe: String,
    /// The JSON API socket for the reverse proxy; "none" to disable.
    #[arg(long, default_value = "/run/flowmark.sock", value_name = "PATH")]
    api: String,
    /// Permissions of the API socket (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    api_mode: u32,
    /// Group of the API socket: the reverse proxy's workers (e.g. www-data).
    #[arg(long, value_name = "GROUP")]
    api_group: Option<String>,
    /// Also send every firefly to this collector (repeatable).
    #[arg(long = "collector", value_name = "ADDR:PORT")]
    collectors: Vec<SocketAddr>,
    /// Do not send fireflies to the flow's peer.
    #[arg(long)]
    no_peer_fireflies: bool,
    /// Port of the peer's firefly receiver.
    #[arg(long, default_value_t = flowmark::firefly::PORT)]
    peer_port: u16,
    /// Seconds between "ongoing" fireflies of a live flow; 0: none.
    #[arg(long, default_value_t = 60)]
    ongoing_interval: u64,
    /// Milliseconds a flow keeps its label after its end (its last queued
    /// bytes and FIN leave after the application reported the end).
    #[arg(long, default_value_t = 5000)]
    linger_ms: u64,
    /// Mark every flow from this local port: PORT=VALUE or PORT=EXP:ACT
    /// (perfSONAR-style; repeatable).
    #[arg(long = "port-rule", value_name = "PORT=TAG")]
    port_rules: Vec<String>,
    /// Mark every flow of this cgroup (v2 directory): PATH=VALUE or PATH=EXP:ACT.
    #[arg(long = "cgroup-rule", value_name = "PATH=TAG")]
    cgroup_rules: Vec<String>,
    /// Poll sock_diag every this many ms for established connections that
    /// match a port or cgroup rule, and send fireflies for them; 0: off.
    #[arg(long, default_value_t = 0)]
    discover_interval_ms: u64,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Most registered flows; a start beyond it evicts the oldest flow.
    #[arg(long, default_value_t = flowmark::daemon::DEFAULT_MAX_FLOWS)]
    max_flows: usize,
    /// Seconds after its start a flow never ended is dropped; 0: never.
    #[arg(long, default_value_t = flowmark::daemon::DEFAULT_MAX_AGE.as_secs())]
    max_flow_age: u64,
}

#[derive(Args)]
struct CollectArgs {
    /// UDP address to receive fireflies on.
    #[arg(long, default_value = "[::]:10514")]
    listen: SocketAddr,
    /// Serve Prometheus metrics on this address.
    #[arg(long, default_value = "[::]:9814")]
    metrics: SocketAddr,
    /// Most distinct (experiment, activity) label sets; fireflies of later
    /// ones are counted under "other".
    #[arg(long, default_value_t = collector::DEFAULT_MAX_SERIES)]
    max_series: usize,
    /// Accept fireflies only from this network (CIDR, repeatable); default:
    /// from anywhere.
    #[arg(long = "allow-from", value_name = "CIDR")]
    allow_from: Vec<ipnet::IpNet>,
    /// Application name (first word of a firefly's `context.application`)
    /// whose flows are third-party copies, labelled `transfer="tpc"`
    /// (repeatable; replaces the default, storage-front).
    #[arg(long = "tpc-application", value_name = "NAME")]
    tpc_applications: Vec<String>,
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Print the registry in use (built in, or --registry FILE) after checking it.
    Show,
    /// Fetch a registry from a URL (e.g. https://www.scitags.org/api.json) or
    /// read it from a file, check it against the schema, and write it to
    /// --out (then start the daemon with --registry OUT).
    Refresh {
        source: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flowmark: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = Registry::from_option(cli.registry.as_deref())?;
    match cli.command {
        Cmd::GenerateDocs { dir } => Ok(clidoc::main(Cli::command(), &dir)),
        Cmd::Run(args) => runtime()?.block_on(run_daemon(args, registry)),
        Cmd::Collect(args) => runtime()?.block_on(collect(args, registry)),
        Cmd::Scitag { value, exp, act } => {
            let tag = match (value, exp, act) {
                (Some(v), _, _) => SciTag::parse(&v).map_err(anyhow::Error::from),
                (None, Some(e), Some(a)) => tool::tag_from_parts(&e, &a, &registry),
                _ => unreachable!("clap requires VALUE or both --exp and --act"),
            };
            match tag {
                Ok(tag) => {
                    println!("{}", tool::describe(tag, &registry));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("flowmark scitag: {e:#}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Cmd::Registry {
            command: RegistryCmd::Show,
        } => {
            for (id, e) in &registry.experiments {
                println!("{id:>4} {}", e.name);
                for (a, name) in &e.activities {
                    println!("       {a:>2} {name}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Registry {
            command: RegistryCmd::Refresh { source, out },
        } => {
            let r = tool::refresh(&source, &out)?;
            println!(
                "{}: {} experiments, modified {}",
                out.display(),
                r.experiments.len(),
                r.modified.as_deref().unwrap_or("(not stated)")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// PORT=VALUE or PORT=EXP:ACT (also PATH=... for cgroups).
fn parse_rule(rule: &str, registry: &Registry) -> anyhow::Result<(String, SciTag)> {
    let (target, tag) = rule
        .rsplit_once('=')
        .with_context(|| format!("rule {rule:?}: expected TARGET=TAG"))?;
    let tag = match tag.split_once(':') {
        Some((e, a)) => tool::tag_from_parts(e, a, registry)?,
        None => SciTag::parse(tag)?,
    };
    tag.flow_label().with_context(|| format!("rule {rule:?}"))?;
    Ok((target.to_string(), tag))
}

async fn run_daemon(args: RunArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.metrics {
        PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .context("metrics listener")?;
    }
    let mut port_rules = vec![];
    for r in &args.port_rules {
        let (port, tag) = parse_rule(r, &registry)?;
        port_rules.push((
            port.parse::<u16>()
                .with_context(|| format!("rule {r:?}: bad port"))?,
            tag,
        ));
    }
    let mut cgroup_rules = vec![];
    for r in &args.cgroup_rules {
        let (path, tag) = parse_rule(r, &registry)?;
        cgroup_rules.push((PathBuf::from(path), tag));
    }
    let mut discover = discovery::Rules {
        ports: port_rules.clone(),
        cgroups: vec![],
    };
    for (path, tag) in &cgroup_rules {
        discover
            .cgroups
            .push((flowmark::marker::cgroup_id(path)?, *tag));
    }
    let none = |s: &str| (s != "none").then(|| PathBuf::from(s));
    let cfg = Config {
        mark: !args.interfaces.is_empty(),
        interfaces: args.interfaces,
        pipe: none(&args.pipe),
        api: none(&args.api),
        collectors: args.collectors,
        peer_fireflies: !args.no_peer_fireflies,
        peer_port: args.peer_port,
        ongoing: Duration::from_secs(args.ongoing_interval),
        linger: Duration::from_millis(args.linger_ms),
        application: format!("flowmark {}", env!("CARGO_PKG_VERSION")),
        port_rules,
        cgroup_rules,
        max_flows: args.max_flows,
        max_age: Duration::from_secs(args.max_flow_age),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let pipe_rx = cfg.pipe.as_deref().map(pipe::open).transpose()?;
    let listener = cfg
        .api
        .as_deref()
        .map(|p| api::bind_with(p, args.api_mode, args.api_group.as_deref()))
        .transpose()?;
    let daemon = Daemon::new(cfg).await?;
    if let Some(p) = pipe_rx {
        tokio::spawn(pipe::serve(p, registry.clone(), tx.clone()));
    }
    if let Some(l) = listener {
        tokio::spawn(api::serve(l, registry.clone(), tx.clone()));
    }
    if args.discover_interval_ms > 0 && !discover.is_empty() {
        let every = Duration::from_millis(args.discover_interval_ms);
        tokio::spawn(discovery::serve(discover, every, tx.clone()));
    }
    // Held until exit: with no source at all (rules only, `--pipe none
    // --api none`) the daemon must still run, and keep its filter attached.
    let _keep_serving = tx;
    let serve = tokio::spawn(daemon.serve(rx));
    tracing::info!("ready");
    println!("flowmark: ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = serve => r?,
    }
    tracing::info!("stopping: the egress filter goes with us");
    Ok(ExitCode::SUCCESS)
}

async fn collect(args: CollectArgs, registry: Registry) -> anyhow::Result<ExitCode> {
    PrometheusBuilder::new()
        .with_http_listener(args.metrics)
        .set_buckets_for_metric(
            Matcher::Full(collector::DURATION_METRIC.into()),
            collector::DURATION_BUCKETS,
        )?
        .install()
        .context("metrics listener")?;
    let sock = tokio::net::UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("binding UDP {}", args.listen))?;
    let tpc_applications = if args.tpc_applications.is_empty() {
        collector::Limits::default().tpc_applications
    } else {
        args.tpc_applications
    };
    let limits = collector::Limits {
        max_series: args.max_series,
        allow_from: args.allow_from,
        tpc_applications,
    };
    tracing::info!(listen = %args.listen, metrics = %args.metrics, ?limits, "collecting fireflies");
    println!("flowmark: ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = collector::serve(sock, collector::Collector::new(registry, limits)) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode"))
}
