//! bgp-speakerd: the speaker as a standalone process, for tests, benchmarks
//! and trying the speaker against a router by hand.
//!
//! Session events are printed on stdout as JSON lines. Commands are read
//! from stdin, one a line: `announce PREFIX`, `withdraw PREFIX`,
//! `drain SECONDS`, `status`, `shutdown`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bgp_speaker::{
    BfdConfig, GracefulRestart, IpNet, PeerConfig, RouteAttrs, Speaker, SpeakerConfig,
};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(about = "Embedded BGP speaker of lbd as a standalone process")]
struct Args {
    /// Our AS number.
    #[arg(long)]
    local_as: u32,
    /// BGP identifier.
    #[arg(long)]
    router_id: Ipv4Addr,
    /// Peer as ADDRESS,AS (repeatable), e.g. 192.0.2.1,65000.
    #[arg(long = "peer", required = true)]
    peers: Vec<String>,
    /// Source address for all sessions.
    #[arg(long)]
    local_address: Option<IpAddr>,
    /// Hold time offered in OPEN (seconds).
    #[arg(long, default_value_t = 9)]
    hold_time: u16,
    /// TCP port to listen on (0: do not listen).
    #[arg(long, default_value_t = 179)]
    listen_port: u16,
    /// Prefix to announce at start (repeatable).
    #[arg(long = "announce")]
    announce: Vec<IpNet>,
    /// Advertise graceful restart with this restart time (seconds).
    #[arg(long)]
    graceful_restart: Option<u16>,
    /// Set the graceful-restart Restart State bit (this is a restart).
    #[arg(long)]
    restarting: bool,
    /// With --restarting: hold End-of-RIB until the `end-of-rib` command
    /// (else it follows the --announce prefixes).
    #[arg(long)]
    hold_end_of_rib: bool,
    /// Run BFD (100 ms x 3) with every peer.
    #[arg(long)]
    bfd: bool,
    /// TCP-MD5 password for every peer.
    #[arg(long)]
    md5_password: Option<String>,
    /// GTSM (TTL security) with every peer.
    #[arg(long)]
    ttl_security: bool,
}

fn peer(spec: &str, a: &Args) -> Result<PeerConfig> {
    let (addr, asn) = spec
        .split_once(',')
        .with_context(|| format!("--peer {spec}: expected ADDRESS,AS"))?;
    let mut p = PeerConfig::new(
        addr.parse()
            .with_context(|| format!("--peer {spec}: bad address"))?,
        asn.parse()
            .with_context(|| format!("--peer {spec}: bad AS number"))?,
    );
    p.local_address = a.local_address;
    p.md5_password = a.md5_password.clone();
    p.ttl_security = a.ttl_security;
    if a.bfd {
        p.bfd = Some(BfdConfig::default());
    }
    Ok(p)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let peers = a
        .peers
        .iter()
        .map(|s| peer(s, &a))
        .collect::<Result<Vec<_>>>()?;
    let speaker = Speaker::start(SpeakerConfig {
        local_as: a.local_as,
        router_id: a.router_id,
        hold_time: a.hold_time,
        listen_port: (a.listen_port != 0).then_some(a.listen_port),
        graceful_restart: a.graceful_restart.map(|t| GracefulRestart {
            restart_time: t,
            restarting: a.restarting,
        }),
        peers,
    })
    .await?;
    for p in &a.announce {
        speaker.announce(*p, RouteAttrs::default())?;
    }
    // The --announce prefixes are all this process starts with.
    if !a.hold_end_of_rib {
        speaker.release_end_of_rib();
    }
    let mut events = speaker.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let Ok(line) = serde_json::to_string(&e) {
                println!("{line}");
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Err(e) = command(&speaker, line.trim()).await {
            eprintln!("error: {e:#}");
        }
        if line.trim() == "shutdown" {
            break;
        }
    }
    // stdin closed or `shutdown`: a clean stop that withdraws everything.
    speaker.shutdown().await;
    Ok(())
}

async fn command(speaker: &Speaker, line: &str) -> Result<()> {
    let mut w = line.split_whitespace();
    match (w.next(), w.next()) {
        (None, _) | (Some("shutdown"), _) => {}
        (Some("announce"), Some(p)) => speaker.announce(p.parse()?, RouteAttrs::default())?,
        (Some("withdraw"), Some(p)) => speaker.withdraw(p.parse()?),
        (Some("drain"), Some(s)) => speaker.drain(Duration::from_secs_f64(s.parse()?)).await,
        (Some("status"), None) => println!("{}", serde_json::to_string(&speaker.peers())?),
        (Some("end-of-rib"), None) => speaker.release_end_of_rib(),
        _ => bail!(
            "unknown command {line:?} (announce P, withdraw P, drain S, end-of-rib, status, shutdown)"
        ),
    }
    Ok(())
}
