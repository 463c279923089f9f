//! Connection collision (RFC 4271 section 6.8) against a raw peer that
//! accepts the speaker's connection and opens its own at the same time: the
//! connection opened by the side with the higher BGP identifier survives,
//! the other gets Cease / Connection Collision Resolution (6/7). A third
//! connection while Established gets 6/7 and the session stays.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use bgp_speaker::{PeerConfig, State};
use common::raw::*;
use common::*;

/// A NOTIFICATION's (code, subcode), or None for the connection that
/// reached Established.
type Outcome = Option<(u8, u8)>;

/// Runs one collision; returns the outcome on the speaker's connection and
/// on ours.
fn collide(lab: &Lab, listener: &TcpListener, peer_id: [u8; 4]) -> (Outcome, Outcome) {
    let mut cfg = speaker_config(1, &[]);
    let mut p = PeerConfig::new(router_v6(1).parse().unwrap(), 65000);
    p.connect_retry = Duration::from_secs(30);
    cfg.peers.push(p);
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    let (mut theirs, _) = listener.accept().expect("speaker connects");
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (ty, _) = read_msg(&mut theirs).expect("speaker's OPEN");
    assert_eq!(ty, 1);
    // Our own connection to the speaker, then our OPEN on both.
    let mut ours = connect(SocketAddr::new(speaker_v6(1).parse().unwrap(), 179));
    let caps = caps_param(&[cap(1, &[0, 1, 0, 1]), cap(65, &65000u32.to_be_bytes())]);
    let open = open_with_id(4, 65000, 9, peer_id, &caps);
    ours.write_all(&open).unwrap();
    // The collision: the speaker holds ours while its own connection waits
    // for our OPEN (had that OPEN come first, ours would meet Established).
    wait_for(
        "the speaker to accept our connection",
        Duration::from_secs(5),
        || accept_queue(&lab.speakers[0], 179) == Some(0),
    );
    theirs.write_all(&open).unwrap();
    let mut outcome = [None, None];
    for (i, s) in [&mut theirs, &mut ours].into_iter().enumerate() {
        loop {
            match read_msg(s) {
                Ok((3, b)) => {
                    outcome[i] = Some((b[0], b[1]));
                    break;
                }
                Ok((4, _)) => {
                    // The survivor: finish the handshake.
                    s.write_all(&keepalive()).unwrap();
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("connection {i}: {e}"),
            }
        }
    }
    wait_for("speaker established", Duration::from_secs(10), || {
        sp.speaker.peers()[0].state == State::Established
    });
    // RFC 4271 6.8: a third connection loses against the live Established
    // one (after the speaker's liveness grace) and the session stays.
    let mut third = connect(SocketAddr::new(speaker_v6(1).parse().unwrap(), 179));
    third.write_all(&open).unwrap();
    let rejected = loop {
        match read_msg(&mut third) {
            Ok((3, b)) => break (b[0], b[1]),
            Ok(_) => {}
            Err(e) => panic!("third connection: {e}"),
        }
    };
    assert_eq!(
        rejected,
        (6, 7),
        "a new connection loses against Established"
    );
    let p = &sp.speaker.peers()[0];
    assert_eq!((p.state, p.established_count), (State::Established, 1));
    (outcome[0], outcome[1])
}

/// Connections waiting in the accept queue of the TCP listener on `port`
/// in namespace `ns` (a listener's Recv-Q in `ss`); None if none listens.
fn accept_queue(ns: &str, port: u16) -> Option<u64> {
    let filter = format!("sport = :{port}");
    let out = lab::process::run("ip", &["netns", "exec", ns, "ss", "-Hltn", &filter]).ok()?;
    let queues: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    (!queues.is_empty()).then(|| queues.iter().sum())
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    let lab = Lab::new("coll", 1);
    let r = lab.router.clone();
    let bind: SocketAddr = SocketAddr::new(router_v6(1).parse().unwrap(), 179);
    let lab_ref = &lab;
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(&r);
            let listener = TcpListener::bind(bind).expect("listen in router ns");
            // Peer identifier above the speaker's 192.0.2.2: our connection wins.
            let (theirs, ours) = collide(lab_ref, &listener, [203, 0, 113, 7]);
            assert_eq!(theirs, Some((6, 7)), "speaker closes its own connection");
            assert_eq!(ours, None, "our connection survives");
            // Below the speaker's identifier: the speaker's connection wins.
            let (theirs, ours) = collide(lab_ref, &listener, [192, 0, 2, 1]);
            assert_eq!(theirs, None, "speaker's connection survives");
            assert_eq!(ours, Some((6, 7)), "speaker rejects ours");
        });
    });
}
