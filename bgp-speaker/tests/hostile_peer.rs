//! The hostile-peer corpus (tests/hostile_corpus) against bgp-speaker and
//! against FRR 8.4 in the same run. Each case runs on a fresh connection
//! and is followed by a liveness probe: a correct session must reach
//! Established. bgp-speaker must do exactly what each case's RFC says;
//! FRR's answers are recorded next to ours (docs/bgp-speaker.md explains
//! every difference). Meanwhile the speaker's session with FRR must not
//! flap and its VIP must stay in the router's table.

mod common;
mod hostile_corpus;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bgp_speaker::{PeerConfig, PeerStatus, RouteAttrs, Speaker, State};
use common::raw::enter_netns;
use common::*;
use hostile_corpus::{Case, Outcome, PEER_AS, corpus, probe, run_case};

fn hostile_status(sp: &Speaker, hostile: IpAddr) -> PeerStatus {
    sp.peers()
        .into_iter()
        .find(|p| p.peer == hostile)
        .expect("hostile peer configured")
}

/// Runs the corpus against bgp-speaker; returns, per case, the outcome or
/// what went wrong (wrong counters, failed probe).
fn against_speaker(
    sp: &Speaker,
    hostile: IpAddr,
    target: SocketAddr,
) -> Vec<Result<Outcome, String>> {
    corpus()
        .iter()
        .map(|c| {
            let before = hostile_status(sp, hostile);
            let out = run_case(target, c, Duration::ZERO)?;
            if let Some(key) = c.counts {
                let now = hostile_status(sp, hostile);
                let n = |s: &PeerStatus| s.update_errors.get(key).copied().unwrap_or(0);
                if n(&now) != n(&before) + 1 {
                    return Err(format!("counter {key}: {} -> {}", n(&before), n(&now)));
                }
                if now.established_count != before.established_count + 1 {
                    return Err("the session did not stay up".into());
                }
            }
            // Whatever the case did, the connection is gone from our side
            // once the outcome is read: the session must leave
            // Established (no NOTIFICATION sent with the session kept).
            let gone = wait_until(Duration::from_secs(5), || {
                hostile_status(sp, hostile).state != State::Established
            });
            if !gone {
                return Err("session still Established after the close".into());
            }
            let count = hostile_status(sp, hostile).established_count;
            let s = probe(target).map_err(|e| format!("probe: {e}"))?;
            if !wait_until(Duration::from_secs(5), || {
                hostile_status(sp, hostile).established_count > count
            }) {
                return Err("probe never reached Established".into());
            }
            drop(s);
            wait_until(Duration::from_secs(5), || {
                hostile_status(sp, hostile).state != State::Established
            });
            Ok(out)
        })
        .collect()
}

/// Whether `f` comes to hold within `limit` (the lab's poll, as a bool: a
/// case that times out is an outcome, not a panic; every 10 ms, as the
/// corpus runs hundreds of these waits).
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let every = Duration::from_millis(10);
    lab::wait::poll_every("a corpus case's condition", limit, every, || {
        f().then_some(())
    })
    .is_ok()
}

/// Runs the corpus against FRR; per case the outcome and how long the
/// probe took to reach Established.
fn against_frr(
    frr: &Frr,
    me: &str,
    target: SocketAddr,
) -> Vec<Result<(Outcome, Duration), String>> {
    corpus()
        .iter()
        .map(|c| {
            let out = run_case(target, c, FRR_SETTLE)?;
            let start = Instant::now();
            // FRR may refuse connections for a moment after an error (its
            // idle hold timer): retry the probe.
            loop {
                if let Ok(s) = probe(target)
                    && wait_until(Duration::from_secs(5), || {
                        frr.neighbor_state(me) == "Established"
                    })
                {
                    drop(s);
                    wait_until(Duration::from_secs(5), || {
                        frr.neighbor_state(me) != "Established"
                    });
                    return Ok((out, start.elapsed()));
                }
                if start.elapsed() > Duration::from_secs(150) {
                    return Err("FRR never came back to Established".into());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .collect()
}

/// How long FRR gets to answer a case before the barrier (see `run_case`).
const FRR_SETTLE: Duration = Duration::from_millis(300);

fn show(o: &Result<Outcome, String>) -> String {
    match o {
        Ok(Outcome::Reset(c, s, d)) => format!("{c}/{s} {d:02x?}"),
        Ok(o) => format!("{o:?}"),
        Err(e) => format!("ERROR {e}"),
    }
}

#[test]
fn hostile_corpus_against_bgp_speaker_and_frr() {
    let cases: Vec<Case> = corpus();
    assert!(cases.len() >= 50, "corpus has {} cases", cases.len());
    let lab = Lab::new("hostile", 1);
    let frr = Frr::start(
        &lab,
        &[
            FrrNeighbor {
                addr: speaker_v4(1),
                remote_as: 65101,
                ..Default::default()
            },
            FrrNeighbor {
                addr: speaker_v6(1),
                remote_as: u32::from(PEER_AS),
                passive: true,
                ..Default::default()
            },
        ],
        &FrrExtra::default(),
    );
    let mut cfg = speaker_config(1, &[&router_v4(1)]);
    let hostile: IpAddr = router_v6(1).parse().unwrap();
    let mut hp = PeerConfig::new(hostile, u32::from(PEER_AS));
    hp.passive = true;
    cfg.peers.push(hp);
    let sp = NsSpeaker::start(&lab.speakers[0], cfg);
    sp.speaker
        .announce(VIP4.parse().unwrap(), RouteAttrs::default())
        .unwrap();
    wait_for("FRR session", Duration::from_secs(30), || {
        sp.speaker
            .peers()
            .iter()
            .any(|p| p.peer.is_ipv4() && p.state == State::Established)
    });
    wait_for("route at FRR", Duration::from_secs(10), || {
        lab.router_route(VIP4).contains(&speaker_v4(1))
    });

    // Against the speaker, from the router's namespace.
    let ns = lab.router.clone();
    let speaker = sp.speaker.clone();
    let target = SocketAddr::new(speaker_v6(1).parse().unwrap(), 179);
    let t0 = Instant::now();
    let ours = std::thread::spawn(move || {
        enter_netns(&ns);
        against_speaker(&speaker, hostile, target)
    })
    .join()
    .expect("hostile client (speaker)");
    let ours_time = t0.elapsed();

    // Against FRR, from the speaker's namespace.
    let ns = lab.speakers[0].clone();
    let frr_target = SocketAddr::new(router_v6(1).parse().unwrap(), 179);
    let me = speaker_v6(1);
    let t0 = Instant::now();
    let theirs = std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(&ns);
            against_frr(&frr, &me, frr_target)
        })
        .join()
        .expect("hostile client (FRR)")
    });
    let frr_time = t0.elapsed();

    eprintln!(
        "{:<45} {:<20} {:<24} {:<24} {:<24} FRR probe",
        "case", "RFC", "expected", "bgp-speaker", "FRR 8.4"
    );
    let mut wrong = Vec::new();
    let mut frr_differs = Vec::new();
    for ((c, o), f) in cases.iter().zip(&ours).zip(&theirs) {
        let want = show(&Ok(c.want.clone()));
        let frr = match f {
            Ok((o, t)) => (show(&Ok(o.clone())), format!("{:.1}s", t.as_secs_f64())),
            Err(e) => (format!("ERROR {e}"), "-".into()),
        };
        eprintln!(
            "{:<45} {:<20} {:<24} {:<24} {:<24} {}",
            c.name,
            c.rfc,
            want,
            show(o),
            frr.0,
            frr.1
        );
        if o.as_ref().ok() != Some(&c.want) {
            wrong.push((c.name, want.clone(), show(o)));
        }
        if frr.0 != want {
            frr_differs.push(c.name);
        }
    }
    eprintln!(
        "{} cases: bgp-speaker {:.1}s, FRR {:.1}s; FRR differs from the RFC expectation in {}: {frr_differs:?}",
        cases.len(),
        ours_time.as_secs_f64(),
        frr_time.as_secs_f64(),
        frr_differs.len()
    );
    assert!(
        wrong.is_empty(),
        "bgp-speaker cases not as expected (case, want, got): {wrong:#?}"
    );
    let frr_errors: Vec<_> = theirs
        .iter()
        .zip(&cases)
        .filter(|(r, _)| r.is_err())
        .map(|(r, c)| (c.name, r.clone().err()))
        .collect();
    assert!(
        frr_errors.is_empty(),
        "FRR cases that could not run: {frr_errors:?}"
    );

    // The speaker's session with FRR was never disturbed.
    let frr_peer = sp
        .speaker
        .peers()
        .into_iter()
        .find(|p| p.peer.is_ipv4())
        .unwrap();
    assert_eq!(frr_peer.state, State::Established);
    assert_eq!(frr_peer.established_count, 1, "FRR session never flapped");
    assert_eq!(frr.neighbor_state(&speaker_v4(1)), "Established");
    assert!(lab.router_route(VIP4).contains(&speaker_v4(1)));
    let h = hostile_status(&sp.speaker, hostile);
    assert!(h.treat_as_withdraw > 0 && h.attribute_discard > 0, "{h:?}");
}
