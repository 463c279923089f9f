//! Why the daemon could not start (or stopped): each error names what it
//! was doing (the file, interface, address or peer) and why.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::ConfigErrors;
use crate::control::ControlError;
use crate::liveness::SecretError;

use super::lock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The dataplane library reports errors as a chain of text.
    #[error("{what}: {detail}")]
    Dataplane { what: String, detail: String },
    #[error("liveness endpoint: binding {addr}: {source}")]
    Liveness {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bgp peer {peer}: reading md5_password_file {}: {source}", file.display())]
    Md5Password {
        peer: IpAddr,
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the BGP speaker: {0}")]
    Speaker(#[from] bgp_speaker::StartError),
    #[error("metrics: listening on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: metrics_exporter_prometheus::BuildError,
    },
}

/// Context for the dataplane library's errors (its chain of causes is
/// printed with `{:#}`).
pub(super) trait DataplaneContext<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, DaemonError>;
}

impl<T, E: std::fmt::Display> DataplaneContext<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, DaemonError> {
        self.map_err(|e| DaemonError::Dataplane {
            what: what(),
            detail: format!("{e:#}"),
        })
    }
}
