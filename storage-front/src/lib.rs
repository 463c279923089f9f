//! storage-front: the pieces of a WLCG storage front that nginx cannot do,
//! as a sidecar behind it (docs/storage-front.md): HTTP third-party copy
//! ([`tpc`], COPY pull and push with performance markers and SciTag
//! marking through flowmark) and adler32 checksums ([`checksum`]) in
//! StoRM-WebDAV's xattr.

pub mod checksum;
pub mod config;
pub mod digest;
pub mod marking;
pub mod metrics;
pub mod paths;
pub mod server;
pub mod tpc;

use std::sync::Arc;

/// Runs the sidecar until the listener fails or the process is stopped.
pub async fn run(config: config::Config) -> Result<(), String> {
    if let Some(listen) = config.metrics {
        metrics::install(listen)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen {}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, root = %config.root.display(), "storage-front ready");
    let server = Arc::new(server::Server {
        ctx: Arc::new(tpc::Context {
            marking: marking::Marking::new(config.flowmark_socket.clone()),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_transfers)),
            config,
        }),
        checksums: checksum::Checksums::default(),
    });
    server
        .serve(listener)
        .await
        .map_err(|e| format!("accept: {e}"))
}
