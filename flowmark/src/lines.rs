//! A bounded line reader for the named pipe and the API socket.
//!
//! Hand-written because tokio's `read_until` grows without bound on a line
//! that never ends, and tokio-util's `LinesCodec` ends the stream after its
//! first error (an over-long or non-UTF-8 line), which would stop the pipe
//! reader for good. Here an over-long line is skipped up to its newline and
//! reported, and reading goes on.

use tokio::io::{AsyncRead, AsyncReadExt};

pub enum Line {
    Text(String),
    NotUtf8(Vec<u8>),
    /// A line longer than the limit; carries its first bytes.
    TooLong(Vec<u8>),
}

pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    /// Dropping the rest of an over-long line.
    skipping: bool,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(1024),
            max,
            skipping: false,
            eof: false,
        }
    }

    /// The next line without its newline; `None` at end of input (a last
    /// line without newline is still returned).
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some(match String::from_utf8(line) {
                    Ok(s) => Line::Text(s),
                    Err(e) => Line::NotUtf8(e.into_bytes()),
                }));
            }
            if self.buf.len() > self.max {
                let head = self.buf[..64.min(self.buf.len())].to_vec();
                self.buf.clear();
                let was_skipping = std::mem::replace(&mut self.skipping, true);
                if !was_skipping {
                    return Ok(Some(Line::TooLong(head)));
                }
            }
            if self.eof {
                if self.buf.is_empty() || std::mem::take(&mut self.skipping) {
                    self.buf.clear();
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(match String::from_utf8(line) {
                    Ok(s) => Line::Text(s),
                    Err(e) => Line::NotUtf8(e.into_bytes()),
                }));
            }
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = LineReader::new(input, max);
        let mut out = vec![];
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(match l {
                Line::Text(s) => s,
                Line::NotUtf8(_) => "<utf8>".into(),
                Line::TooLong(_) => "<long>".into(),
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_skips_and_recovers() {
        assert_eq!(lines(b"a\nb\r\n\nc", 10).await, ["a", "b", "", "c"]);
        let mut long = vec![b'x'; 10_000];
        long.extend_from_slice(b"\nafter\n\xff\xfe\nlast\n");
        assert_eq!(
            lines(&long, 100).await,
            ["<long>", "after", "<utf8>", "last"]
        );
        assert_eq!(lines(&[b'y'; 500], 100).await, ["<long>"]);
    }

    proptest::proptest! {
        #[test]
        fn never_loses_a_short_line(parts in proptest::collection::vec("[a-z ]{0,20}", 0..20)) {
            let input = parts.iter().map(|p| format!("{p}\n")).collect::<String>();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(lines(input.as_bytes(), 64));
            proptest::prop_assert_eq!(got, parts);
        }
    }
}
