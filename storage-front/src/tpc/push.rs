//! Push (`Destination:`): PUT our file to the remote, checksumming what we
//! send; with `RequireChecksumVerification: true`, ask the destination
//! (HEAD with `Want-Digest: adler32`) and compare. With `Overwrite: F`, a
//! destination that answers a HEAD with 200 fails the copy before any data
//! moves.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_LENGTH, HeaderValue};
use hyper::{Method, StatusCode};
use tokio::io::AsyncReadExt;

use super::{Context, Copy, Progress, TransferError, remote, within};
use crate::checksum::{self, Adler32};

/// Read size from the local file.
const READ_CHUNK: usize = 256 << 10;
/// Chunks queued between the file and the connection.
const SEND_QUEUE: usize = 4;

type PushBody = http_body_util::Either<Channel<Bytes, std::io::Error>, remote::NoBody>;

pub async fn push(ctx: &Context, copy: &Copy, progress: &Progress) -> Result<(), TransferError> {
    super::over_data_connection::<PushBody, _, _>(ctx, copy, progress, |sender| {
        send(ctx, copy, progress, sender)
    })
    .await
}

async fn send(
    ctx: &Context,
    copy: &Copy,
    progress: &Progress,
    mut sender: SendRequest<PushBody>,
) -> Result<(), TransferError> {
    let cfg = &ctx.config;
    let req = &copy.req;
    if !req.overwrite && head(ctx, copy, &mut sender, false).await?.0 == StatusCode::OK {
        return Err(TransferError(
            "the destination exists and Overwrite is F".into(),
        ));
    }
    let mut file = tokio::fs::File::open(&copy.local)
        .await
        .map_err(|e| TransferError(format!("{}: {e}", copy.path)))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| TransferError(format!("{}: {e}", copy.path)))?
        .len();
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(SEND_QUEUE);
    let put = super::remote_request(
        Method::PUT,
        req,
        &[(CONTENT_LENGTH.as_str(), HeaderValue::from(len))],
        PushBody::Left(body),
    )?;
    within(cfg.idle_timeout, "destination", sender.ready())
        .await?
        .map_err(|e| TransferError(format!("destination: {e}")))?;
    let response = sender.send_request(put);
    let feed = async {
        let mut sum = Adler32::default();
        let mut sent = 0u64;
        // Stops at `len` without reading on to the end of the file: once
        // the last byte is queued the feed is done, so a destination that
        // answers as soon as it has everything is never taken for one
        // answering early.
        while sent < len {
            let want = usize::try_from(len - sent).map_or(READ_CHUNK, |left| left.min(READ_CHUNK));
            let mut buf = vec![0u8; want];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| TransferError(format!("reading {}: {e}", copy.path)))?;
            if n == 0 {
                return Err(TransferError(format!(
                    "{} shrank while it was sent",
                    copy.path
                )));
            }
            buf.truncate(n);
            sum.update(&buf);
            sent += n as u64;
            // Fails if the connection is gone: the response says why.
            if within(
                cfg.idle_timeout,
                "destination",
                tx.send_data(Bytes::from(buf)),
            )
            .await?
            .is_err()
            {
                return Ok(None);
            }
            progress.bytes.store(sent, Ordering::Relaxed);
        }
        Ok(Some(sum.hex()))
    };
    // While the body goes out, the feed's own idle timeouts bound the wait;
    // an answer before the end (a refusal) stops the feed. Once everything
    // is sent, the answer must come within the idle timeout.
    tokio::pin!(response);
    let (fed, early) = tokio::select! {
        // The feed first: when the last chunk is queued in the same poll
        // as the answer arrives, the copy is whole.
        biased;
        fed = feed => (fed, None),
        resp = &mut response => (Ok(None), Some(resp)),
    };
    let fed = fed?;
    let resp = match early {
        Some(resp) => resp,
        None => within(cfg.idle_timeout, "destination's answer", response).await?,
    }
    .map_err(|e| TransferError(format!("destination: {e}")))?;
    if !resp.status().is_success() {
        return Err(TransferError(format!(
            "destination answered {}",
            super::status_text(resp.status())
        )));
    }
    let sum = fed.ok_or_else(|| {
        TransferError("the destination answered before the whole file was sent".into())
    })?;
    // Drain the (small) answer so the connection can carry the HEAD.
    let _ = within(cfg.idle_timeout, "destination", resp.into_body().collect()).await;
    if let Ok(f) = std::fs::File::open(&copy.local)
        && checksum::stored(&f).is_none()
    {
        let _ = checksum::store(&f, &sum);
    }
    if req.verify_checksum {
        let (status, theirs) = head(ctx, copy, &mut sender, true).await?;
        match theirs {
            _ if status != StatusCode::OK => {
                return Err(TransferError(format!(
                    "checksum verification: the destination answered HEAD with {}",
                    super::status_text(status)
                )));
            }
            None => {
                return Err(TransferError(
                    "checksum verification: the destination sent no adler32 Digest".into(),
                ));
            }
            Some(theirs) if theirs != sum => {
                return Err(TransferError(format!(
                    "checksum mismatch: sent data has adler32 {sum}, the destination says {theirs}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// HEAD on the destination (same connection); its status and adler32.
async fn head(
    ctx: &Context,
    copy: &Copy,
    sender: &mut SendRequest<PushBody>,
    want_digest: bool,
) -> Result<(StatusCode, Option<String>), TransferError> {
    let idle = ctx.config.idle_timeout;
    let extra = if want_digest {
        vec![("want-digest", HeaderValue::from_static("adler32"))]
    } else {
        vec![]
    };
    let head = super::remote_request(
        Method::HEAD,
        &copy.req,
        &extra,
        PushBody::Right(remote::NoBody::new()),
    )?;
    within(idle, "destination", sender.ready())
        .await?
        .map_err(|e| TransferError(format!("destination: {e}")))?;
    let resp = within(
        idle,
        "destination's answer to HEAD",
        sender.send_request(head),
    )
    .await?
    .map_err(|e| TransferError(format!("destination: {e}")))?;
    let digest = resp
        .headers()
        .get_all("digest")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(crate::digest::adler32_of);
    Ok((resp.status(), digest))
}
