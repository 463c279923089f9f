//! SciTag registration of the data connections we open, with flowmark's
//! local JSON API (one JSON object per line on a unix socket, see
//! docs/flowmark.md): `start` with the exact 5-tuple once connected, `end`
//! with the bytes moved. It fails open, as flowmark's nginx Lua does: a
//! missing or slow flowmark costs the mark, never the transfer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest wait for flowmark's answer.
const API_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest answer line read.
const MAX_ANSWER: u64 = 16 << 10;
const APPLICATION: &str = concat!("storage-front ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Marking {
    socket: Option<PathBuf>,
}

/// One registered flow, as flowmark knows it: `src` is always this host.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Marking {
    pub fn new(socket: Option<PathBuf>) -> Marking {
        Marking { socket }
    }

    /// Registers the flow; true if flowmark accepted it.
    pub async fn start(&self, flow: Flow, scitag: u16) -> bool {
        let mut req = tuple(flow, "start");
        req["scitag"] = json!(scitag);
        req["application"] = json!(APPLICATION);
        match self.call(req).await {
            Ok(answer) if answer["ok"] == json!(true) => answer["marked"] != json!(false),
            Ok(answer) => {
                tracing::warn!(%answer, "flowmark refused the flow");
                false
            }
            Err(e) => {
                tracing::warn!("flowmark: {e} (the copy runs unmarked)");
                false
            }
        }
    }

    /// Ends the flow with its usage.
    pub async fn end(&self, flow: Flow, sent: u64, received: u64) {
        let mut req = tuple(flow, "end");
        req["sent"] = json!(sent);
        req["received"] = json!(received);
        if let Err(e) = self.call(req).await {
            tracing::warn!("flowmark: ending a flow: {e}");
        }
    }

    async fn call(&self, req: serde_json::Value) -> Result<serde_json::Value, String> {
        let Some(path) = &self.socket else {
            return Err("no socket configured".into());
        };
        let exchange = async {
            let mut s = UnixStream::connect(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut line = req.to_string();
            line.push('\n');
            s.write_all(line.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            BufReader::new(s)
                .take(MAX_ANSWER)
                .read_line(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))
        };
        tokio::time::timeout(API_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {API_TIMEOUT:?}"))?
    }
}

use tokio::io::AsyncReadExt;

fn tuple(flow: Flow, op: &str) -> serde_json::Value {
    json!({
        "op": op,
        "src": canonical(flow.local).to_string(),
        "sport": flow.local.port(),
        "dst": canonical(flow.remote).to_string(),
        "dport": flow.remote.port(),
    })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: SocketAddr) -> std::net::IpAddr {
    a.ip().to_canonical()
}
