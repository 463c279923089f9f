//! The session FSM on in-memory connections (`tokio::io::duplex`) with
//! tokio's paused clock: the test plays the router end of each connection,
//! and every timer fires at its exact virtual time in a few milliseconds of
//! real time. Messages are built and decoded with the crate's `wire` module.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use tokio::io::{AsyncReadExt, DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;
use crate::iana::{BGP_VERSION, UNSPECIFIC, code, open as open_err};
use crate::state::{PeerShared, PeerStatus};
use crate::wire::{Decoder, HEADER_LEN, OpenParams};

const OUR_AS: u32 = 65101;
const OUR_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The hold time we offer.
const OUR_HOLD: u16 = 9;
const PEER_AS: u32 = 65000;
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// Peer identifiers above and below ours (collision resolution).
const HIGHER_ID: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const LOWER_ID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Room for a few messages in each direction of a pipe.
const PIPE_BUF: usize = 64 * 1024;
/// Where the version sits in an OPEN.
const VERSION_AT: usize = HEADER_LEN;

impl Transport for DuplexStream {
    fn local_ip(&self) -> io::Result<IpAddr> {
        Ok(IpAddr::V4(OUR_ID))
    }

    fn set_gtsm(&self, _peer: IpAddr) -> io::Result<()> {
        Ok(())
    }

    fn set_nodelay(&self) {}
}

/// Hands the router end of every connection the session opens to the test.
struct PipeDialer(mpsc::UnboundedSender<DuplexStream>);

impl Dialer<DuplexStream> for PipeDialer {
    async fn dial(&self, _cfg: &PeerConfig) -> io::Result<DuplexStream> {
        let (ours, theirs) = duplex(PIPE_BUF);
        self.0
            .send(theirs)
            .map_err(|_| io::Error::other("test ended"))?;
        Ok(ours)
    }
}

/// A running session task and the test's handles on its inputs.
struct Session {
    /// Connections from the peer, as the speaker's listener hands them over.
    accept: mpsc::Sender<DuplexStream>,
    /// The router end of each connection the session opened.
    dialed: mpsc::UnboundedReceiver<DuplexStream>,
    stop: watch::Sender<Stop>,
    _rib: watch::Sender<Rib>,
    events: broadcast::Receiver<SessionEvent>,
    shared: Arc<Mutex<PeerShared>>,
    task: JoinHandle<()>,
}

impl Session {
    /// A session with an eBGP peer (`remote_as` PEER_AS) or an iBGP one;
    /// `passive`: it never connects itself.
    fn start(remote_as: u32, passive: bool) -> Session {
        let mut cfg = PeerConfig::new(PEER, remote_as);
        cfg.passive = passive;
        let (accept, incoming) = mpsc::channel(4);
        let (dial_tx, dialed) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(Stop::Running);
        let (rib, rib_rx) = watch::channel(Rib::default());
        let (events_tx, events) = broadcast::channel(64);
        let shared = Arc::new(Mutex::new(PeerShared::new(PEER)));
        let task = PeerTask {
            cfg: Arc::new(cfg),
            global: Arc::new(SpeakerConfig {
                local_as: OUR_AS,
                router_id: OUR_ID,
                hold_time: OUR_HOLD,
                listen_port: None,
                graceful_restart: None,
                peers: Vec::new(),
            }),
            rib: rib_rx,
            shared: shared.clone(),
            events: events_tx,
            incoming,
            stop: stop_rx,
            bfd: None,
            error_log: LogLimiter::new(),
            dialer: Arc::new(PipeDialer(dial_tx)),
            inbox_closed: false,
        };
        Session {
            accept,
            dialed,
            stop,
            _rib: rib,
            events,
            shared,
            task: tokio::spawn(task.run()),
        }
    }

    /// A new connection from the peer.
    async fn peer_connects(&self) -> Router {
        let (ours, theirs) = duplex(PIPE_BUF);
        self.accept.send(ours).await.expect("session runs");
        Router::new(theirs)
    }

    /// The session's next connection to the peer.
    async fn dials(&mut self) -> Router {
        Router::new(self.dialed.recv().await.expect("session connects"))
    }

    /// Waits for the session to enter `state` (no virtual time passes).
    async fn reaches(&mut self, state: State) {
        loop {
            match self.events.recv().await {
                Ok(e) if e.to == state => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for {state:?}: {e}"),
            }
        }
    }

    fn status(&self) -> PeerStatus {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .clone()
    }
}

/// The router's end of one connection.
struct Router {
    pipe: DuplexStream,
    decoder: Decoder,
}

impl Router {
    fn new(pipe: DuplexStream) -> Router {
        Router {
            pipe,
            decoder: Decoder::new(true),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.pipe.write_all(bytes).await.expect("session reads");
    }

    /// The router's OPEN with identifier `id` offering `hold` seconds.
    async fn send_open(&mut self, id: Ipv4Addr, hold: u16) {
        self.send(&open_from(PEER_AS, id, hold)).await;
    }

    /// The next message from the session, or None when it closed the
    /// connection.
    async fn recv(&mut self) -> Option<Incoming> {
        let mut header = [0u8; HEADER_LEN];
        if self.pipe.read_exact(&mut header).await.is_err() {
            return None;
        }
        let len = wire::check_header(&header).expect("session sends valid headers");
        let mut frame = header.to_vec();
        frame.resize(len, 0);
        self.pipe
            .read_exact(&mut frame[HEADER_LEN..])
            .await
            .expect("whole message");
        Some(
            self.decoder
                .decode(&frame)
                .expect("session sends valid messages"),
        )
    }

    /// The session's NOTIFICATION, after which it must close the connection.
    async fn notification(&mut self) -> Notification {
        match self.recv().await {
            Some(Incoming::Notification(n)) => {
                assert!(
                    self.recv().await.is_none(),
                    "closed after NOTIFICATION {n:?}"
                );
                n
            }
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }

    async fn expect_open(&mut self) {
        match self.recv().await {
            Some(Incoming::Open(_)) => {}
            other => panic!("expected an OPEN, got {other:?}"),
        }
    }

    async fn expect_keepalive(&mut self) {
        match self.recv().await {
            Some(Incoming::KeepAlive) => {}
            other => panic!("expected a KEEPALIVE, got {other:?}"),
        }
    }

    /// OPEN exchange up to Established, the router offering `hold` seconds.
    async fn establish(&mut self, s: &mut Session, id: Ipv4Addr, hold: u16) {
        self.expect_open().await;
        self.send_open(id, hold).await;
        self.expect_keepalive().await;
        self.send(&wire::keepalive()).await;
        s.reaches(State::Established).await;
    }
}

fn open_from(asn: u32, id: Ipv4Addr, hold: u16) -> Vec<u8> {
    wire::open(&OpenParams {
        local_as: asn,
        hold_time: hold,
        router_id: id,
        graceful_restart: None,
    })
}

fn notification(code: u8, subcode: u8, data: &[u8]) -> Notification {
    Notification::new(code, subcode, data.to_vec())
}

#[tokio::test(start_paused = true)]
async fn hold_timer_expires_after_exactly_the_negotiated_hold_with_keepalives_every_third() {
    // (the router's offer, the hold time both use)
    for (offer, hold) in [(9, 9), (3, 3), (30, 9)] {
        let mut s = Session::start(PEER_AS, true);
        let mut r = s.peer_connects().await;
        r.establish(&mut s, HIGHER_ID, offer).await;
        // The router says nothing from now on.
        let silent_since = TInstant::now();
        let hold = Duration::from_secs(hold);
        let mut keepalives = Vec::new();
        let expired = loop {
            match r.recv().await {
                Some(Incoming::KeepAlive) => keepalives.push(silent_since.elapsed()),
                Some(Incoming::Notification(n)) => break (n, silent_since.elapsed()),
                other => panic!("hold {hold:?}: unexpected {other:?}"),
            }
        };
        assert_eq!(
            expired,
            (
                notification(code::HOLD_TIMER_EXPIRED, UNSPECIFIC, &[]),
                hold
            ),
            "Hold Timer Expired after exactly the hold time"
        );
        // Every hold/3 (the last one may share the instant of the expiry).
        let every = hold / 3;
        let due: Vec<Duration> = (1..=3).map(|k| every * k).collect();
        assert!(
            keepalives == due[..2] || keepalives == due,
            "hold {hold:?}: keepalives at {keepalives:?}"
        );
        assert!(r.recv().await.is_none(), "closed after the NOTIFICATION");
        s.reaches(State::Idle).await;
        assert!(
            s.status().last_error.unwrap_or_default().contains("4/0"),
            "last error names the expiry"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn each_message_from_the_peer_restarts_the_hold_timer() {
    let mut s = Session::start(PEER_AS, true);
    let mut r = s.peer_connects().await;
    r.establish(&mut s, HIGHER_ID, OUR_HOLD).await;
    let hold = Duration::from_secs(u64::from(OUR_HOLD));
    // A KEEPALIVE 1 s before the expiry; then silence.
    tokio::time::sleep(hold - Duration::from_secs(1)).await;
    r.send(&wire::keepalive()).await;
    let last_heard = TInstant::now();
    loop {
        match r.recv().await {
            Some(Incoming::KeepAlive) => {}
            Some(Incoming::Notification(n)) => {
                assert_eq!(n.code, code::HOLD_TIMER_EXPIRED);
                assert_eq!(
                    last_heard.elapsed(),
                    hold,
                    "hold counted from the last message"
                );
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_open_from_the_peer_expires_the_large_open_hold() {
    let mut s = Session::start(PEER_AS, true);
    let mut r = s.peer_connects().await;
    let connected = TInstant::now();
    r.expect_open().await;
    let n = r.notification().await;
    assert_eq!(n, notification(code::HOLD_TIMER_EXPIRED, UNSPECIFIC, &[]));
    assert_eq!(
        connected.elapsed(),
        OPEN_HOLD,
        "RFC 4271's large hold in OpenSent"
    );
    s.reaches(State::Idle).await;
}

#[tokio::test(start_paused = true)]
async fn bad_opens_get_the_notification_rfc_4271_names() {
    let mut bad_version = open_from(PEER_AS, HIGHER_ID, OUR_HOLD);
    bad_version[VERSION_AT] = BGP_VERSION - 1;
    let version = u16::from(BGP_VERSION).to_be_bytes();
    // (what goes wrong, session's remote AS, the OPEN, the NOTIFICATION)
    let cases: Vec<(&str, u32, Vec<u8>, Notification)> = vec![
        (
            "version 3",
            PEER_AS,
            bad_version,
            notification(code::OPEN, open_err::UNSUPPORTED_VERSION, &version),
        ),
        (
            "another AS than configured",
            PEER_AS,
            open_from(PEER_AS + 1, HIGHER_ID, OUR_HOLD),
            notification(code::OPEN, open_err::BAD_PEER_AS, &[]),
        ),
        (
            "hold time 1 s",
            PEER_AS,
            open_from(PEER_AS, HIGHER_ID, 1),
            notification(code::OPEN, open_err::UNACCEPTABLE_HOLD_TIME, &[]),
        ),
        (
            "hold time 2 s",
            PEER_AS,
            open_from(PEER_AS, HIGHER_ID, 2),
            notification(code::OPEN, open_err::UNACCEPTABLE_HOLD_TIME, &[]),
        ),
        (
            "iBGP peer with our identifier",
            OUR_AS,
            open_from(OUR_AS, OUR_ID, OUR_HOLD),
            notification(code::OPEN, open_err::BAD_BGP_ID, &[]),
        ),
        (
            "identifier 0.0.0.0",
            PEER_AS,
            open_from(PEER_AS, Ipv4Addr::UNSPECIFIED, OUR_HOLD),
            notification(code::OPEN, open_err::BAD_BGP_ID, &[]),
        ),
    ];
    for (what, remote_as, open, want) in cases {
        let mut s = Session::start(remote_as, true);
        let mut r = s.peer_connects().await;
        r.expect_open().await;
        r.send(&open).await;
        assert_eq!(r.notification().await, want, "{what}");
        s.reaches(State::Idle).await;
        let last = s.status().last_error.unwrap_or_default();
        assert!(
            last.starts_with(&format!("sent NOTIFICATION {}/{}", want.code, want.subcode)),
            "{what}: last error {last}"
        );
        assert_eq!(s.status().established_count, 0, "{what}");
    }
}

/// When the router's own connection reaches the session.
#[derive(Debug, Clone, Copy)]
enum CollisionIn {
    /// Before the OPEN on the session's connection: judged at that OPEN.
    OpenSent,
    /// After it: judged once the connection was held for the liveness grace.
    OpenConfirm,
}

#[tokio::test(start_paused = true)]
async fn collision_keeps_the_connection_opened_by_the_higher_identifier() {
    for when in [CollisionIn::OpenSent, CollisionIn::OpenConfirm] {
        for peer_id in [HIGHER_ID, LOWER_ID] {
            let case = format!("{when:?}, peer identifier {peer_id}");
            let mut s = Session::start(PEER_AS, false);
            let mut ours = s.dials().await;
            ours.expect_open().await;
            s.reaches(State::OpenSent).await;
            let mut theirs;
            let arrived;
            match when {
                CollisionIn::OpenSent => {
                    theirs = s.peer_connects().await;
                    theirs.send_open(peer_id, OUR_HOLD).await;
                    arrived = TInstant::now();
                    // Let the session take the connection before the OPEN.
                    tokio::task::yield_now().await;
                    ours.send_open(peer_id, OUR_HOLD).await;
                }
                CollisionIn::OpenConfirm => {
                    ours.send_open(peer_id, OUR_HOLD).await;
                    ours.expect_keepalive().await;
                    s.reaches(State::OpenConfirm).await;
                    theirs = s.peer_connects().await;
                    theirs.send_open(peer_id, OUR_HOLD).await;
                    arrived = TInstant::now();
                }
            }
            let cease = notification(code::CEASE, cease::CONNECTION_COLLISION, &[]);
            let (mut survivor, mut loser) = if peer_id > OUR_ID {
                (theirs, ours)
            } else {
                (ours, theirs)
            };
            let mut n = None;
            while let Some(m) = loser.recv().await {
                match m {
                    Incoming::Notification(x) => n = Some(x),
                    Incoming::KeepAlive => {}
                    other => panic!("{case}: loser got {other:?}"),
                }
            }
            assert_eq!(n.as_ref(), Some(&cease), "{case}: the loser gets Cease/7");
            let judged_after = match when {
                CollisionIn::OpenSent => Duration::ZERO,
                CollisionIn::OpenConfirm => LIVENESS_GRACE,
            };
            assert_eq!(arrived.elapsed(), judged_after, "{case}: judged when due");
            if peer_id > OUR_ID {
                // The session runs on the router's connection now.
                survivor.expect_open().await;
                survivor.expect_keepalive().await;
            } else if matches!(when, CollisionIn::OpenSent) {
                // Its KEEPALIVE waited for the judgement.
                survivor.expect_keepalive().await;
            }
            survivor.send(&wire::keepalive()).await;
            s.reaches(State::Established).await;
            assert_eq!(s.status().established_count, 1, "{case}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_loses_against_an_established_session_after_the_grace() {
    let mut s = Session::start(PEER_AS, true);
    let mut r = s.peer_connects().await;
    r.establish(&mut s, HIGHER_ID, OUR_HOLD).await;
    let mut third = s.peer_connects().await;
    third.send_open(HIGHER_ID, OUR_HOLD).await;
    let arrived = TInstant::now();
    assert_eq!(
        third.notification().await,
        notification(code::CEASE, cease::CONNECTION_COLLISION, &[])
    );
    assert_eq!(arrived.elapsed(), LIVENESS_GRACE);
    let st = s.status();
    assert_eq!((st.state, st.established_count), (State::Established, 1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_sends_cease_administrative_shutdown_and_restart_sends_nothing() {
    for (how, want) in [
        (
            Stop::Shutdown,
            Some(notification(
                code::CEASE,
                cease::ADMINISTRATIVE_SHUTDOWN,
                &[],
            )),
        ),
        (Stop::ForRestart, None),
    ] {
        let mut s = Session::start(PEER_AS, true);
        let mut r = s.peer_connects().await;
        r.establish(&mut s, HIGHER_ID, OUR_HOLD).await;
        let stopped_at = TInstant::now();
        s.stop.send(how).expect("session watches stop");
        let got = match r.recv().await {
            Some(Incoming::Notification(n)) => {
                assert!(r.recv().await.is_none(), "{how:?}: closed after it");
                Some(n)
            }
            None => None,
            Some(other) => panic!("{how:?}: unexpected {other:?}"),
        };
        assert_eq!(got, want, "{how:?}");
        // The router closes its side once it has read ours; the session
        // ends then (and its BFD session says AdminDown after).
        drop(r);
        (&mut s.task).await.expect("session task ends");
        assert_eq!(stopped_at.elapsed(), Duration::ZERO, "{how:?}: at once");
        let st = s.status();
        assert_eq!(
            (st.state, st.last_error.as_deref()),
            (State::Idle, Some("stopped")),
            "{how:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_the_router_to_close_its_side_at_most_the_limit() {
    let mut s = Session::start(PEER_AS, true);
    let mut r = s.peer_connects().await;
    r.establish(&mut s, HIGHER_ID, OUR_HOLD).await;
    let stopped_at = TInstant::now();
    s.stop.send(Stop::ForRestart).expect("session watches stop");
    assert!(r.recv().await.is_none(), "our side closed");
    // A router that never closes its side: the session (and its BFD
    // session, whose AdminDown waits for the close) ends at the limit.
    (&mut s.task).await.expect("session task ends");
    assert_eq!(stopped_at.elapsed(), CLOSE_SEEN_LIMIT);
    drop(r);
}

#[test]
fn update_errors_are_logged_once_per_class_and_interval() {
    let mut log = LogLimiter::new();
    let t0 = Instant::now();
    assert_eq!(log.admit("origin", t0), Some(0));
    assert_eq!(log.admit("as_path", t0), Some(0), "other classes log");
    for i in 1..=5 {
        assert_eq!(log.admit("origin", t0 + Duration::from_secs(i)), None);
    }
    // The next line says how many were held back.
    assert_eq!(log.admit("origin", t0 + ERROR_LOG_INTERVAL), Some(5));
    assert_eq!(log.admit("origin", t0 + ERROR_LOG_INTERVAL), None);
}

#[test]
fn backoff_doubles_to_the_cap_and_jitter_stays_in_range() {
    let mut b = Duration::from_secs(1);
    let mut seen = Vec::new();
    for _ in 0..8 {
        seen.push(b.as_secs());
        b = next_backoff(b, Duration::from_secs(30));
    }
    assert_eq!(seen, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    for _ in 0..1000 {
        let j = jitter(Duration::from_secs(4));
        assert!(
            j >= Duration::from_secs(3) && j <= Duration::from_secs(4),
            "{j:?}"
        );
    }
}
