//! The `flowmark` command: `run` (the marking daemon), `collect` (the
//! firefly collector), `scitag` and `registry` (small tools).
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use flowmark::{registry::Registry, scitag::SciTag, tool};

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
