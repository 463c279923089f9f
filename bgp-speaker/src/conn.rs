//! One connection of a session: the write half the FSM writes to, and a
//! reader task that frames, checks and decodes what the peer sends and
//! hands it over a channel, so the FSM can `select!` on it without
//! cancelling a half-read message.

use std::net::IpAddr;

use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::socket;
use crate::state::SessionError;
use crate::transport::Transport;
use crate::wire::{self, HEADER_LEN, Incoming, Notification};

/// Events from the reader task of one connection.
pub(crate) enum Read {
    Msg(Incoming),
    /// The peer sent something malformed; we owe it this NOTIFICATION.
    Bad(Notification),
    Closed(SessionError),
}

pub(crate) struct Conn<S> {
    pub wr: WriteHalf<S>,
    pub rd: mpsc::Receiver<Read>,
    reader: tokio::task::JoinHandle<()>,
    pub outbound: bool,
    pub local: IpAddr,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn reader<S: Transport>(mut rd: ReadHalf<S>, tx: mpsc::Sender<Read>, ebgp: bool) {
    let mut decoder = wire::Decoder::new(ebgp);
    loop {
        let mut hdr = [0u8; HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut hdr).await {
            let _ = tx.send(Read::Closed(SessionError::Read(e))).await;
            return;
        }
        let len = match wire::check_header(&hdr) {
            Ok(l) => l,
            Err(n) => {
                let _ = tx.send(Read::Bad(n)).await;
                return;
            }
        };
        let mut frame = vec![0u8; len];
        frame[..HEADER_LEN].copy_from_slice(&hdr);
        if let Err(e) = rd.read_exact(&mut frame[HEADER_LEN..]).await {
            let _ = tx.send(Read::Closed(SessionError::Read(e))).await;
            return;
        }
        match decoder.decode(&frame) {
            Ok(m) => {
                if tx.send(Read::Msg(m)).await.is_err() {
                    return;
                }
            }
            Err(n) => {
                let _ = tx.send(Read::Bad(n)).await;
                return;
            }
        }
    }
}

impl<S: Transport> Conn<S> {
    /// Splits the stream and starts its reader. `gtsm`: the peer whose
    /// accepted connection still needs TTL security; `ebgp`: the peer is in
    /// another AS.
    pub fn open(
        stream: S,
        outbound: bool,
        gtsm: Option<IpAddr>,
        ebgp: bool,
    ) -> Result<Conn<S>, SessionError> {
        let local = stream.local_ip().map_err(SessionError::LocalAddress)?;
        if let Some(peer) = gtsm {
            stream.set_gtsm(peer).map_err(SessionError::Gtsm)?;
        }
        stream.set_nodelay();
        let (rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(64);
        let reader = tokio::spawn(reader(rd, tx, ebgp));
        Ok(Conn {
            wr,
            rd: rx,
            reader,
            outbound,
            local: socket::canonical(local),
        })
    }
}
