//! The flowd named pipe (default /var/run/flowd): StoRM-WebDAV writes
//! `start ...` lines, nginx's access_log writes `end ...` lines.
//!
//! The FIFO is opened read-write, so the reader never sees end-of-file
//! when a writer closes and never blocks the writers' open(2); bad lines
//! are counted and skipped, and the reader never stops on them.

use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::ffi::OsStrExt, unix::fs::FileTypeExt},
    path::Path,
};

use anyhow::{Context, bail};
use tokio::{io::AsyncRead, net::unix::pipe, sync::mpsc};

use crate::{
    bad,
    daemon::{Request, check_tag},
    flow::{Verb, parse_pipe_line},
    lines::{Line, LineReader},
    registry::Registry,
};

/// flowd lines are ~100 bytes; anything past this is not a flowd line.
pub const MAX_LINE: usize = 1024;

/// Any local service may register flows, as with flowd; only we read.
pub const MODE: u32 = 0o622;

/// Creates the FIFO if absent and opens it for reading. Its mode is then
/// set to [`MODE`] on the open descriptor: mkfifo's mode is cut by the
/// umask (systemd's UMask=0077 would leave 0600, and StoRM-WebDAV could
/// not write), and a FIFO left by an earlier run gets the same mode.
pub fn open(path: &Path) -> anyhow::Result<pipe::Receiver> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => bail!("{} exists and is not a named pipe", path.display()),
        Err(_) => {
            let c = CString::new(path.as_os_str().as_bytes()).context("pipe path")?;
            // SAFETY: a valid NUL-terminated path; mkfifo has no other inputs.
            if unsafe { libc::mkfifo(c.as_ptr(), MODE) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(e).with_context(|| format!("mkfifo {}", path.display()));
            }
        }
    }
    let rx = pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: fchmod on a descriptor we own and keep open.
    if unsafe { libc::fchmod(rx.as_raw_fd(), MODE) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(e).with_context(|| format!("chmod {MODE:o} {}", path.display()));
    }
    Ok(rx)
}

/// Reads lines until the input ends (a FIFO opened read-write never does).
pub async fn serve<R: AsyncRead + Unpin>(input: R, registry: Registry, tx: mpsc::Sender<Request>) {
    let mut reader = LineReader::new(input, MAX_LINE);
    loop {
        let line = match reader.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("reading the flowd pipe: {e}");
                return;
            }
        };
        let text = match line {
            Line::Text(t) => t,
            Line::NotUtf8(b) => {
                bad::report(
                    "pipe_not_utf8",
                    "pipe line is not UTF-8",
                    &String::from_utf8_lossy(&b),
                );
                continue;
            }
            Line::TooLong(head) => {
                bad::report(
                    "pipe_line_too_long",
                    "pipe line longer than 1024 bytes",
                    &String::from_utf8_lossy(&head),
                );
                continue;
            }
        };
        metrics::counter!("flowmark_pipe_lines_total").increment(1);
        if text.trim().is_empty() {
            continue;
        }
        let parsed = match parse_pipe_line(&text) {
            Ok(p) => p,
            Err(e) => {
                bad::report(e.kind(), "bad flowd pipe line", &text);
                continue;
            }
        };
        let req = match parsed.verb {
            Verb::Start => {
                let Some((e, a)) = parsed.tag else { continue };
                let Some(tag) = check_tag(e, a, &registry, &text) else {
                    continue;
                };
                Request::Start {
                    flow: parsed.flow,
                    tag,
                    application: None,
                    mark: true,
                    reply: None,
                }
            }
            Verb::End => Request::End {
                flow: parsed.flow,
                hint: parsed.tag,
                usage: None,
                reply: None,
            },
        };
        if tx.send(req).await.is_err() {
            return;
        }
    }
}
