//! Pull (`Source:`): GET the remote file and store it. The data goes to a
//! temporary file beside the target while a writer thread checksums it;
//! only a complete (and, if asked, verified) file is renamed into place,
//! with its adler32 xattr already set. Anything else removes the temporary
//! file (its guard does, also when the copy is dropped mid-way).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use super::{Context, Copy, Progress, TransferError, remote, within};
use crate::checksum::{self, Adler32};

/// Chunks queued between the network and the writer thread.
const WRITE_QUEUE: usize = 64;
/// Mode of files a pull creates.
const FILE_MODE: u32 = 0o644;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A temporary file removed on drop unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    done: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub async fn pull(ctx: &Context, copy: &Copy, progress: &Progress) -> Result<(), TransferError> {
    super::over_data_connection::<remote::NoBody, _, _>(ctx, copy, progress, |sender| {
        fetch(ctx, copy, progress, sender)
    })
    .await
}

async fn fetch(
    ctx: &Context,
    copy: &Copy,
    progress: &Progress,
    mut sender: hyper::client::conn::http1::SendRequest<remote::NoBody>,
) -> Result<(), TransferError> {
    let cfg = &ctx.config;
    let req = &copy.req;
    let mut extra = Vec::new();
    if req.verify_checksum {
        extra.push(("want-digest", HeaderValue::from_static("adler32")));
    }
    let get = super::remote_request(Method::GET, req, &extra, remote::NoBody::new())?;
    let resp = within(
        cfg.idle_timeout,
        "source's answer",
        sender.send_request(get),
    )
    .await?
    .map_err(|e| TransferError(format!("source: {e}")))?;
    if resp.status() != StatusCode::OK {
        return Err(TransferError(format!(
            "source answered {}",
            super::status_text(resp.status())
        )));
    }
    let source_digest = resp
        .headers()
        .get_all("digest")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(crate::digest::adler32_of);
    if req.verify_checksum && source_digest.is_none() {
        return Err(TransferError(
            "RequireChecksumVerification: the source sent no adler32 Digest".into(),
        ));
    }

    let dir = super::parent(&copy.local);
    let name = copy
        .local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = TempFile {
        path: dir.join(format!(
            ".{name}.storage-front.{}.{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        )),
        done: false,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&temp.path)
        .map_err(|e| TransferError(format!("creating {}: {e}", copy.path)))?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_all(file, rx));
    let mut body = resp.into_body();
    let received = async {
        let tx = tx;
        while let Some(frame) = within(cfg.idle_timeout, "source's data", body.frame()).await? {
            let frame = frame.map_err(|e| TransferError(format!("source: {e}")))?;
            if let Ok(data) = frame.into_data() {
                progress
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if tx.send(data).await.is_err() {
                    break; // the writer failed: its error is reported below
                }
            }
        }
        Ok::<_, TransferError>(())
    }
    .await;
    let written = writer
        .await
        .map_err(TransferError::new)?
        .map_err(|e| TransferError(format!("writing {}: {e}", copy.path)))?;
    received?;
    let (file, sum) = written;
    // Compared only when asked: the client decides (gfal-copy -K).
    if req.verify_checksum
        && let Some(theirs) = &source_digest
        && *theirs != sum
    {
        return Err(TransferError(format!(
            "checksum mismatch: source says adler32 {theirs}, received data has {sum}"
        )));
    }
    checksum::store(&file, &sum).map_err(|e| TransferError(format!("storing checksum: {e}")))?;
    drop(file);
    place(&temp.path, &copy.local, copy.req.overwrite)
        .map_err(|e| TransferError(format!("{}: {e}", copy.path)))?;
    temp.done = true;
    Ok(())
}

/// The writer thread: checksums every chunk and writes it as it came
/// (hyper hands over chunks of up to ~400 KiB; a BufWriter in between
/// only added a copy of every byte).
fn write_all(
    file: std::fs::File,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<(std::fs::File, String)> {
    let mut file = file;
    let mut sum = Adler32::default();
    while let Some(chunk) = rx.blocking_recv() {
        sum.update(&chunk);
        file.write_all(&chunk)?;
    }
    Ok((file, sum.hex()))
}

/// Renames the finished file into place; with `Overwrite: F`, never over
/// a file that appeared meanwhile (renameat2 RENAME_NOREPLACE).
fn place(temp: &Path, target: &Path, overwrite: bool) -> std::io::Result<()> {
    if overwrite {
        return std::fs::rename(temp, target);
    }
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(temp)?, c(target)?);
    // SAFETY: two valid NUL-terminated paths, relative to the cwd.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
