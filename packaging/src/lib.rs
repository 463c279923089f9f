//! Packaging of lbd, flowmark and lbd-trace (`make packages`, see
//! docs/packaging.md). This crate holds no code: its tests build the
//! packages and check them the way a site would use them (dpkg, lintian,
//! rpm, systemd-analyze, man, bash completion), and check the alert rules
//! with promtool. `clidoc/` generates the man pages and completions.
