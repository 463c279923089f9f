//! The lab's processes and waits come from the shared `lab` crate
//! (`lab::process`, `lab::wait`); these are the names the storage-site lab
//! calls them by.
pub use lab::process::{
    alive, belongs_to, nsenter, read_pid, run as run_checked, signal as signal_pid, spawn_in,
    stop_pid,
};
pub use lab::wait::wait_until;
