//! A raw BGP peer for tests: hand-built messages on std TCP sockets.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const HOSTILE_AS: u16 = 65000;

pub fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(ty);
    m.extend_from_slice(body);
    m
}

pub fn cap(code: u8, val: &[u8]) -> Vec<u8> {
    let mut c = vec![code, val.len() as u8];
    c.extend_from_slice(val);
    c
}

pub fn open_with(version: u8, asn: u16, hold: u16, params: &[u8]) -> Vec<u8> {
    open_with_id(version, asn, hold, [203, 0, 113, 7], params)
}

pub fn open_with_id(version: u8, asn: u16, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
    let mut b = vec![version];
    b.extend_from_slice(&asn.to_be_bytes());
    b.extend_from_slice(&hold.to_be_bytes());
    b.extend_from_slice(&id);
    b.push(params.len() as u8);
    b.extend_from_slice(params);
    msg(1, &b)
}

pub fn caps_param(caps: &[Vec<u8>]) -> Vec<u8> {
    let all: Vec<u8> = caps.concat();
    let mut p = vec![2, all.len() as u8];
    p.extend_from_slice(&all);
    p
}

pub fn good_open() -> Vec<u8> {
    open_with(
        4,
        HOSTILE_AS,
        9,
        &caps_param(&[
            cap(1, &[0, 1, 0, 1]),
            cap(1, &[0, 2, 0, 1]),
            cap(65, &65000u32.to_be_bytes()),
        ]),
    )
}

pub fn keepalive() -> Vec<u8> {
    msg(4, &[])
}

/// UPDATE from raw withdrawn routes, attributes and NLRI.
pub fn update_msg(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

/// The attributes `base` without the one of type `drop`, then `extra`.
pub fn attrs_with(base: &[&[u8]], drop: Option<u8>, extra: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    for attr in base {
        if Some(attr[1]) != drop {
            a.extend_from_slice(attr);
        }
    }
    a.extend_from_slice(extra);
    a
}

/// UPDATE from raw withdrawn, attributes and NLRI.
pub fn update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    msg(2, &b)
}

pub const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
pub const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8];
pub const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];

/// Reads messages until a NOTIFICATION; returns (code, subcode) and checks
/// the connection is closed after it.
pub fn expect_notification(s: &mut TcpStream) -> (u8, u8) {
    loop {
        let mut h = [0u8; 19];
        s.read_exact(&mut h)
            .expect("read header before NOTIFICATION");
        let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
        let mut body = vec![0u8; len - 19];
        s.read_exact(&mut body).expect("read body");
        if h[18] == 3 {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(rest.is_empty(), "data after NOTIFICATION");
            return (body[0], body[1]);
        }
    }
}

/// Reads our OPEN and KEEPALIVE after the peer's OPEN.
pub fn expect_open_and_keepalive(s: &mut TcpStream) {
    let mut types = Vec::new();
    while types.len() < 2 {
        let mut h = [0u8; 19];
        s.read_exact(&mut h).expect("read header");
        let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
        let mut body = vec![0u8; len - 19];
        s.read_exact(&mut body).expect("read body");
        assert_ne!(h[18], 3, "unexpected NOTIFICATION {body:?}");
        types.push(h[18]);
    }
    assert_eq!(types, vec![1, 4]);
}

pub fn connect(target: SocketAddr) -> TcpStream {
    let mut last = None;
    for _ in 0..100 {
        match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("connect {target}: {last:?}");
}

/// Reads one message: (type, body).
pub fn read_msg(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 19];
    s.read_exact(&mut h)?;
    let len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let mut body = vec![0u8; len.saturating_sub(19)];
    s.read_exact(&mut body)?;
    Ok((h[18], body))
}

/// Moves the calling thread into namespace `ns` (sockets it opens live there).
pub fn enter_netns(ns: &str) {
    lab::enter_named(ns).expect("setns");
}
