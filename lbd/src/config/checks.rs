//! Validation of `[[vips.checks]]` entries into health check specs.

use health::{CheckSpec, Probe};

use super::raw::RawCheck;
use super::values::{V, format_duration};

pub(super) fn check(v: &mut V, p: &str, r: RawCheck) -> Option<CheckSpec> {
    let kind = v.required(
        &format!("{p}.type"),
        r.kind,
        "\"http\", \"https\", \"tcp\" or \"exec\"",
    )?;
    let interval = v.duration_or(&format!("{p}.interval"), r.interval, "2s");
    let timeout = v.duration_or(&format!("{p}.timeout"), r.timeout, "1s");
    let rise = v.count_or(&format!("{p}.rise"), r.rise, 2);
    let fall = v.count_or(&format!("{p}.fall"), r.fall, 2);
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        v.err(
            &format!("{p}.timeout"),
            format!(
                "{} is longer than the interval ({}): expected at most the interval",
                format_duration(t),
                format_duration(i)
            ),
        );
        return None;
    }
    // Keys that belong to other check types are errors, not silently unused.
    let http_only = [
        ("url", r.url.is_some()),
        ("expect_status", r.expect_status.is_some()),
        ("body_contains", r.body_contains.is_some()),
        ("verify_tls", r.verify_tls.is_some()),
    ];
    let foreign: Vec<&str> = match kind.as_str() {
        "http" | "https" => vec![
            ("address", r.address.is_some()),
            ("command", r.command.is_some()),
        ],
        "tcp" => [&http_only[..], &[("command", r.command.is_some())]].concat(),
        "exec" => [&http_only[..], &[("address", r.address.is_some())]].concat(),
        _ => vec![],
    }
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| k)
    .collect();
    for k in &foreign {
        v.err(&format!("{p}.{k}"), format!("not a key of {kind:?} checks"));
    }
    let probe = match kind.as_str() {
        "http" | "https" => {
            let url = v.required(
                &format!("{p}.url"),
                r.url,
                &format!("the URL to GET, e.g. \"{kind}://127.0.0.1/health\""),
            );
            let url = url.and_then(|u| v.url(&format!("{p}.url"), &u, &kind));
            let expect_status = match r.expect_status {
                None => Some(200),
                Some(s) => v.range(
                    &format!("{p}.expect_status"),
                    s,
                    100,
                    599,
                    "an HTTP status 100-599",
                ),
            };
            Some(Probe::Http {
                url: url?,
                expect_status: expect_status? as u16,
                body_contains: r.body_contains,
                verify_tls: r.verify_tls.unwrap_or(true),
            })
        }
        "tcp" => {
            let addr = v.required(
                &format!("{p}.address"),
                r.address,
                "an address and port, e.g. \"127.0.0.1:443\"",
            );
            addr.and_then(|a| v.socket_addr(&format!("{p}.address"), &a))
                .map(|addr| Probe::Tcp { addr })
        }
        "exec" => {
            let cmd = v.required(
                &format!("{p}.command"),
                r.command,
                "a command as a list, e.g. [\"/usr/local/bin/check\", \"arg\"]",
            );
            cmd.and_then(|argv| match argv.first() {
                Some(c) if c.starts_with('/') => Some(Probe::Exec { argv }),
                Some(c) => {
                    v.err(
                        &format!("{p}.command[0]"),
                        format!("{c:?} is not an absolute path (the command runs without a shell or PATH)"),
                    );
                    None
                }
                None => {
                    v.err(&format!("{p}.command"), "empty: expected the program and its arguments");
                    None
                }
            })
        }
        o => {
            v.err(
                &format!("{p}.type"),
                format!(
                    "{o:?} is not a check type (expected \"http\", \"https\", \"tcp\" or \"exec\")"
                ),
            );
            None
        }
    };
    if !foreign.is_empty() {
        return None;
    }
    let probe = probe?;
    let name = match &probe {
        Probe::Http { url, .. } => url.clone(),
        Probe::Tcp { addr } => format!("tcp:{addr}"),
        Probe::Exec { argv } => format!("exec:{}", argv.join(" ")),
    };
    Some(CheckSpec {
        name,
        probe,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    })
}
