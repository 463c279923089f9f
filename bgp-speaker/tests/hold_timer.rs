//! Hold time negotiation, keepalives and hold timer expiry, against a raw
//! peer that offers hold time 3 (the speaker offers 9) and then goes silent.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bgp_speaker::PeerConfig;
use common::raw::*;
use common::*;

#[test]
fn negotiated_hold_time_keepalives_and_expiry() {
    let lab = Lab::new("hold", 1);
    let r = lab.router.clone();
    let lab_ref = &lab;
    std::thread::scope(|s| {
        s.spawn(move || {
            enter_netns(&r);
            let listener =
                TcpListener::bind(SocketAddr::new(router_v6(1).parse().unwrap(), 179)).unwrap();
            let mut cfg = speaker_config(1, &[]);
            cfg.peers
                .push(PeerConfig::new(router_v6(1).parse().unwrap(), 65000));
            let sp = NsSpeaker::start(&lab_ref.speakers[0], cfg);
            let (mut c, _) = listener.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(read_msg(&mut c).unwrap().0, 1);
            let caps = caps_param(&[cap(1, &[0, 1, 0, 1]), cap(65, &65000u32.to_be_bytes())]);
            c.write_all(&open_with(4, 65000, 3, &caps)).unwrap();
            assert_eq!(read_msg(&mut c).unwrap().0, 4);
            c.write_all(&keepalive()).unwrap();
            // From now on we say nothing. Keepalives come every hold/3 = 1 s
            // (with jitter allowed), then the hold timer expires.
            let silent_since = Instant::now();
            let mut keepalives = Vec::new();
            let notification = loop {
                let (ty, body) = read_msg(&mut c).unwrap();
                match ty {
                    4 => keepalives.push(silent_since.elapsed()),
                    3 => break (body[0], body[1], silent_since.elapsed()),
                    _ => {}
                }
            };
            assert_eq!(
                (notification.0, notification.1),
                (4, 0),
                "hold timer expired"
            );
            assert!(
                notification.2 >= Duration::from_millis(2900)
                    && notification.2 < Duration::from_millis(3600),
                "expired after {:?}",
                notification.2
            );
            assert!(keepalives.len() >= 2, "keepalives at {keepalives:?}");
            wait_for("last error recorded", Duration::from_secs(5), || {
                let p = &sp.speaker.peers()[0];
                p.last_error.as_deref().unwrap_or("").contains("4/0")
            });
        });
    });
}
