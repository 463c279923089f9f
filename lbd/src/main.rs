//! `lbd`: the node daemon and the operator CLI (see docs/lbd.md).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use lbd::config::{self, Config};
use lbd::control::{Request, Response};

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
    /// Run the node daemon (until SIGTERM; SIGHUP reloads the config).
    Run {
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Show node state, VIPs, checks, BGP peers, members and counters.
    Status {
        /// The same as stable JSON.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop taking new connections: GRACEFUL_SHUTDOWN, then withdraw; established connections are served until they end or the drain period does.
    Drain {
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Take new connections again.
    Undrain {
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// One VIP's table: buckets per owner node, buckets with a second hop and when they are dropped.
    Table {
        /// The VIP's address.
        vip: String,
        /// The same as stable JSON.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Detach the XDP program and remove every pin (on purpose: forwarding stops).
    Cleanup {
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Write man pages and completions into DIR (for `make packages`).
    #[command(name = clidoc::SUBCOMMAND, hide = true)]
    GenerateDocs { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { file } => check_config(&file),
        Cmd::Run { config } => run(&config),
        Cmd::Status { json, socket } => client(&socket, Request::Status, |r| match r {
            Response::Status(s) if json => print_json(&s),
            Response::Status(s) => {
                print!("{}", lbd::status::render(&s, health::unix_now()));
                true
            }
            _ => false,
        }),
        Cmd::Drain { socket } => client(&socket, Request::Drain, print_message),
        Cmd::Undrain { socket } => client(&socket, Request::Undrain, print_message),
        Cmd::Table { vip, json, socket } => client(&socket, Request::Table { vip }, |r| match r {
            Response::Table(t) if json => print_json(&t),
            Response::Table(t) => {
                print!("{}", t.render());
                true
            }
            _ => false,
        }),
        Cmd::Cleanup { config } => match Config::load(&config) {
            Ok(c) => match dataplane::loader::Dataplane::cleanup(&c.dataplane.pin_dir) {
                Ok(()) => {
                    println!("removed {} (XDP detached)", c.dataplane.pin_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lbd cleanup: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::GenerateDocs { dir } => clidoc::main(Cli::command(), &dir),
        Cmd::Version => {
            println!("lbd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn run(config: &std::path::Path) -> ExitCode {
    // Logs go to stderr (journald); colours only on a terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lbd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Signal handlers first: a SIGHUP while starting must not kill lbd.
    let signals = match rt.block_on(async { lbd::daemon::Signals::install() }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lbd: installing signal handlers: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // A bad config is exit 2, like check-config; anything else is 1.
    if let Err(e) = Config::load(config) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let result = rt.block_on(lbd::daemon::run(config, signals));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(data: &impl serde::Serialize) -> bool {
    match serde_json::to_string_pretty(data) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(e) => {
            eprintln!("lbd: {e}");
            false
        }
    }
}

fn print_message(r: Response) -> bool {
    match r {
        Response::Message(m) => {
            println!("{m}");
            true
        }
        _ => false,
    }
}

/// Sends `req`; `show` prints the answer it expects and returns false for
/// any other (an error answer is printed here).
fn client(socket: &std::path::Path, req: Request, show: impl FnOnce(Response) -> bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lbd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(lbd::control::call(socket, &req)) {
        Ok(Response::Error(message)) => {
            eprintln!("lbd: {message}");
            ExitCode::FAILURE
        }
        Ok(r) => {
            let kind = r.kind();
            if show(r) {
                ExitCode::SUCCESS
            } else {
                eprintln!("lbd: unexpected answer from the daemon ({kind})");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("lbd: {e}");
            ExitCode::FAILURE
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
