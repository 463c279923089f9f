//! Authenticated liveness: a report is accepted only with an HMAC-SHA256
//! tag, keyed with the cluster secret, over the poller's fresh random nonce
//! and the exact body bytes. The nonce makes every answer single-use (a
//! captured answer does not verify for any later poll), and freshness
//! comes from the poller, not from clocks: no clock skew to tolerate.
//!
//! The secret file (`liveness.secret_file`) holds one secret per line: the
//! first signs, every line verifies, so a secret is rotated without a gap
//! (add the new one as line 2 everywhere, SIGHUP; swap the lines, SIGHUP;
//! drop the old one, SIGHUP). It must be owned by the daemon's user and not
//! readable by group or others; it is re-read on SIGHUP and never logged.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The HTTP header that carries the tag (hex).
pub const MAC_HEADER: &str = "x-lbd-mac";
/// The query parameter that carries the poller's nonce (hex).
pub const NONCE_PARAM: &str = "nonce";
pub const NONCE_BYTES: usize = 16;
/// Shorter secrets are refused: 16 bytes of randomness, e.g. from
/// `openssl rand -hex 32`.
pub const MIN_SECRET_BYTES: usize = 16;
/// Domain separation: a tag made for this protocol verifies nowhere else.
const CONTEXT: &[u8] = b"lbd-liveness-v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("liveness.secret_file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "liveness.secret_file {path}: mode {mode:04o} lets group or others read it; expected 0600 or 0400 (chmod 600)"
    )]
    Mode { path: String, mode: u32 },
    #[error("liveness.secret_file {path}: owned by uid {owner}, not by this daemon's uid {me}")]
    Owner { path: String, owner: u32, me: u32 },
    #[error(
        "liveness.secret_file {path}: line {line} is {len} bytes; expected at least {MIN_SECRET_BYTES}"
    )]
    Short {
        path: String,
        line: usize,
        len: usize,
    },
    #[error("liveness.secret_file {path}: no secret in the file")]
    Empty { path: String },
}

/// The cluster secrets, ready to sign and verify.
pub struct Keys {
    sign: hmac::Key,
    verify: Vec<hmac::Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} verifying, contents hidden)", self.verify.len())
    }
}

/// The keys every task reads; None: liveness runs unauthenticated.
pub type SharedKeys = tokio::sync::watch::Receiver<Option<Arc<Keys>>>;

impl Keys {
    /// Secrets given directly (one per entry, the first signs).
    pub fn new(secrets: &[&[u8]]) -> Option<Keys> {
        let key = |s: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, s);
        Some(Keys {
            sign: key(secrets.first()?),
            verify: secrets.iter().map(|s| key(s)).collect(),
        })
    }

    /// Reads and checks the secret file (see the module doc).
    pub fn load(path: &Path) -> Result<Keys, SecretError> {
        let name = path.display().to_string();
        let read = |source| SecretError::Read {
            path: name.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Mode {
                path: name.clone(),
                mode,
            });
        }
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(SecretError::Owner {
                path: name.clone(),
                owner: meta.uid(),
                me,
            });
        }
        let text = std::fs::read(path).map_err(read)?;
        let mut secrets = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            if line.len() < MIN_SECRET_BYTES {
                return Err(SecretError::Short {
                    path: name.clone(),
                    line: i + 1,
                    len: line.len(),
                });
            }
            secrets.push(line);
        }
        Keys::new(&secrets).ok_or_else(|| SecretError::Empty { path: name.clone() })
    }

    /// The tag (hex) of `body` answering `nonce`.
    pub fn sign(&self, nonce: &str, body: &[u8]) -> String {
        hex(hmac::sign(&self.sign, &message(nonce, body)).as_ref())
    }

    /// Whether `tag` (hex) is a valid tag of `body` for `nonce` under any
    /// of the secrets (ring compares in constant time).
    pub fn verify(&self, nonce: &str, body: &[u8], tag: &str) -> bool {
        let Some(tag) = unhex(tag) else { return false };
        let m = message(nonce, body);
        self.verify
            .iter()
            .any(|k| hmac::verify(k, &m, &tag).is_ok())
    }
}

/// What the tag covers: the protocol, the nonce, the exact body bytes.
fn message(nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + nonce.len() + 1 + body.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(nonce.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

/// A fresh random nonce (hex) for one poll.
pub fn nonce() -> Option<String> {
    let mut b = [0u8; NONCE_BYTES];
    SystemRandom::new().fill(&mut b).ok()?;
    Some(hex(&b))
}

/// A nonce as a poller sends it: exactly `NONCE_BYTES` in lowercase hex.
pub fn is_nonce(s: &str) -> bool {
    s.len() == 2 * NONCE_BYTES && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
