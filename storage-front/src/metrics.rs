//! Prometheus metrics (text format on the `metrics` listener), through the
//! `metrics` facade as flowmark and lbd do.

use std::net::SocketAddr;

pub const TRANSFERS: &str = "storage_front_transfers_total";
pub const TRANSFER_BYTES: &str = "storage_front_transfer_bytes_total";
pub const TRANSFERS_ACTIVE: &str = "storage_front_transfers_active";
pub const SCITAG_INVALID: &str = "storage_front_scitag_invalid_total";
pub const SCITAG_MARKED: &str = "storage_front_scitag_registered_total";
pub const CHECKSUMS: &str = "storage_front_checksum_requests_total";
pub const CHECKSUM_COMPUTATIONS: &str = "storage_front_checksum_computations_total";
pub const REFUSED: &str = "storage_front_requests_refused_total";

/// Installs the exporter and describes the metrics.
pub fn install(listen: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(listen)
        .install()
        .map_err(|e| format!("metrics listener {listen}: {e}"))?;
    metrics::describe_counter!(
        TRANSFERS,
        "third-party copies by direction (pull, push) and result (success, failure, aborted)"
    );
    metrics::describe_counter!(
        TRANSFER_BYTES,
        "bytes moved by third-party copies, by direction"
    );
    metrics::describe_gauge!(TRANSFERS_ACTIVE, "third-party copies running");
    metrics::describe_counter!(
        SCITAG_INVALID,
        "COPY requests whose SciTag was present but invalid (run unmarked)"
    );
    metrics::describe_counter!(SCITAG_MARKED, "data connections registered with flowmark");
    metrics::describe_counter!(
        CHECKSUMS,
        "checksum requests by origin (stored, computed) and result"
    );
    metrics::describe_counter!(
        CHECKSUM_COMPUTATIONS,
        "adler32 computations over whole files"
    );
    metrics::describe_counter!(
        REFUSED,
        "requests refused before any transfer, by HTTP status"
    );
    Ok(())
}
