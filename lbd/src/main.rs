//! `lbd`: the node daemon and the operator CLI (see docs/lbd.md).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use lbd::config::{self, Config};
use lbd::control::{ListenerSelection, Request, Response};
use lbd::listeners::ListenerQueue;

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
    /// Quiesce or resume a VIP port's listener (before and after a server restart: docs/dataplane.md).
    Listener {
        #[command(subcommand)]
        cmd: ListenerCmd,
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

#[derive(Subcommand)]
enum ListenerCmd {
    /// New connections to the VIP ports go to their fallback node; returns once the listeners' accept queues and handshakes are empty, so that the server can close its listening sockets without resetting anything (exit 1 on timeout).
    Quiesce {
        #[command(flatten)]
        sel: Selection,
        /// Give up after this long ("500ms", "10s"), leaving the ports quiesced.
        #[arg(long, default_value = "10s", value_parser = duration)]
        timeout: std::time::Duration,
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Take new connections locally again (also automatic when a new listening socket serves the port).
    Resume {
        #[command(flatten)]
        sel: Selection,
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The VIP ports' listeners: quiesced or not, sockets, accept queue, handshakes.
    Show {
        #[command(flatten)]
        sel: Selection,
        /// The same as stable JSON.
        #[arg(long)]
        json: bool,
        #[arg(short, long, default_value = config::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// Which TCP VIP ports (default: every one of this node).
#[derive(clap::Args)]
struct Selection {
    /// Only this VIP address.
    #[arg(long)]
    vip: Option<String>,
    /// Only this port.
    #[arg(long)]
    port: Option<u16>,
}

impl From<Selection> for ListenerSelection {
    fn from(s: Selection) -> Self {
        ListenerSelection {
            vip: s.vip,
            port: s.port,
        }
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 500ms or 10s"))
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
        Cmd::Listener { cmd } => listener(cmd),
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

fn listener(cmd: ListenerCmd) -> ExitCode {
    match cmd {
        ListenerCmd::Quiesce {
            sel,
            timeout,
            socket,
        } => quiesce(&socket, sel.into(), timeout),
        ListenerCmd::Resume { sel, socket } => {
            client(&socket, Request::Resume(sel.into()), |r| match r {
                Response::Listeners(q) => {
                    print_queues(&q);
                    true
                }
                _ => false,
            })
        }
        ListenerCmd::Show { sel, json, socket } => {
            client(&socket, Request::Listeners(sel.into()), |r| match r {
                Response::Listeners(q) if json => print_json(&q),
                Response::Listeners(q) => {
                    print_queues(&q);
                    true
                }
                _ => false,
            })
        }
    }
}

fn print_queues(queues: &[ListenerQueue]) {
    for q in queues {
        println!(
            "{}: {}, {} listening socket(s), accept queue {}, handshakes {}",
            std::net::SocketAddr::new(q.vip, q.port),
            if q.quiesced {
                "quiesced"
            } else {
                "taking new connections"
            },
            q.listeners,
            q.accept_queue,
            q.handshakes
        );
    }
}

/// How often `lbd listener quiesce` asks for the queues while it waits.
const QUIESCE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Quiesces, then asks for the queues until they are empty or `timeout`.
fn quiesce(
    socket: &std::path::Path,
    sel: ListenerSelection,
    timeout: std::time::Duration,
) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::FAILURE;
    };
    let start = std::time::Instant::now();
    let mut req = Request::Quiesce(sel.clone());
    loop {
        let queues = match rt.block_on(lbd::control::call(socket, &req)) {
            Ok(Response::Listeners(q)) => q,
            Ok(Response::Error(m)) => {
                eprintln!("lbd: {m}");
                return ExitCode::FAILURE;
            }
            Ok(r) => {
                eprintln!("lbd: unexpected answer from the daemon ({})", r.kind());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("lbd: {e}");
                return ExitCode::FAILURE;
            }
        };
        if queues.iter().all(ListenerQueue::is_empty) {
            print_queues(&queues);
            println!(
                "quiesced after {} ms: the listening sockets can close",
                start.elapsed().as_millis()
            );
            return ExitCode::SUCCESS;
        }
        if start.elapsed() >= timeout {
            print_queues(&queues);
            eprintln!(
                "lbd: timeout after {timeout:?}: connections still wait in an accept queue or a handshake (above); the ports stay quiesced (`lbd listener resume` undoes it)"
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(QUIESCE_POLL);
        req = Request::Listeners(sel.clone());
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

/// The CLI's runtime (an error is printed).
fn client_runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("lbd: {e}"))
        .ok()
}

/// Sends `req`; `show` prints the answer it expects and returns false for
/// any other (an error answer is printed here).
fn client(socket: &std::path::Path, req: Request, show: impl FnOnce(Response) -> bool) -> ExitCode {
    let Some(rt) = client_runtime() else {
        return ExitCode::FAILURE;
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
