//! topology-tests: a storage site in network namespaces built from one
//! topology file (see docs/topology-tests.md), the transfer workload, the
//! scenarios and the demo.
pub mod foreign_site;
pub mod grid_clients;
pub mod lbd_config;
pub mod nginx;
pub mod outcome;
pub mod pki;
pub mod process;
pub mod router;
pub mod scenarios;
pub mod sidecars;
pub mod site;
pub mod topology;
pub mod upstream;
pub mod wire;
pub mod workload;
