//! `storage-front run` (the sidecar) and `storage-front check-config FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use storage_front::config::{self, Config};

#[derive(Parser)]
#[command(
    version,
    about = "WLCG storage front sidecar for nginx: HTTP third-party copy and adler32 checksums"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sidecar.
    Run {
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check a config file; errors name the key (exit 2 if bad).
    CheckConfig { file: PathBuf },
    /// Print the adler32 of FILE (8 hex digits, as stored in the xattr).
    Adler32 { file: PathBuf },
    /// Man pages and shell completions into DIR (`make packages`).
    #[command(name = clidoc::SUBCOMMAND, hide = true)]
    GenerateDocs { dir: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::GenerateDocs { dir } => clidoc::main(Cli::command(), &dir),
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Adler32 { file } => {
            match std::fs::File::open(&file)
                .map_err(storage_front::checksum::ChecksumError::from)
                .and_then(|f| storage_front::checksum::compute(&f))
            {
                Ok(v) => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("storage-front: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(storage_front::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("storage-front: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
