//! The loader against the real kernel: tables written through the mmap'ed
//! bucket array read back identically through the syscall path, slots flip,
//! and a "restarted daemon" (a second `Dataplane::open` on the same pin
//! directory) finds the program still attached and the tables in place.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, ensure};
use dataplane::{
    loader::{Dataplane, LayoutMismatch, Vip},
    maglev::{self, Member},
    pinned_link,
};
use dataplane_common::{Bucket, NO_HOP};
use lab::{Netns, unique};

fn vip() -> Vip {
    Vip {
        addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
        port: 443,
        proto: 6,
    }
}

fn table(ids: &[u16], seed: u32) -> Result<Vec<Bucket>> {
    let members: Vec<Member> = ids.iter().map(|&id| Member { id, weight: 1 }).collect();
    Ok(maglev::build(&members, maglev::DEFAULT_TABLE_SIZE, seed)?
        .into_iter()
        .enumerate()
        .map(|(i, first)| Bucket {
            first,
            second: if i % 7 == 0 { 9 } else { NO_HOP },
            // Read back through the syscall path: the mmap write covers it.
            fallback: if i % 5 == 0 { 11 } else { NO_HOP },
            _pad: 0,
        })
        .collect())
}

#[test]
fn tables_round_trip_flip_and_survive_a_restart() -> Result<()> {
    let ns = Netns::new("dpl")?;
    ns.ip("link add up0 type veth peer name up1")?;
    ns.ip("link set up0 up")?;
    ns.ip("link set up1 up")?;
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpl")));
    let result = (|| -> Result<()> {
        let t1 = table(&[1, 2, 3], 7)?;
        let t2 = table(&[1, 2, 3, 4], 7)?;
        {
            let mut dp = Dataplane::open(&pins)?;
            ns.run(|| dp.attach_xdp("up0"))?;
            dp.set_vip_table(&vip(), &t1, 1400)?;
            ensure!(
                dp.vip_table(&vip())?.as_deref() == Some(&t1[..]),
                "first table reads back"
            );
            dp.set_vip_table(&vip(), &t2, 1400)?;
            ensure!(
                dp.vip_table(&vip())?.as_deref() == Some(&t2[..]),
                "second slot reads back"
            );
            ensure!(
                dp.listen_generation()?.1 && pins.join("link_tp_listen_close").exists(),
                "attach_xdp attaches the listener watch, pins it and arms the cache"
            );
            // The daemon exits here: nothing is detached.
        }
        let attached = ns.ip("link show up0")?;
        ensure!(
            attached.contains("prog/xdp"),
            "XDP detached when the loader exited: {attached}"
        );
        let mut dp = Dataplane::open(&pins)?;
        ensure!(
            dp.vip_table(&vip())?.as_deref() == Some(&t2[..]),
            "table lost across restart"
        );
        ensure!(
            dp.installed_vips()? == vec![vip()],
            "installed VIPs after restart"
        );
        // Re-attaching replaces the program behind the pinned link.
        ns.run(|| dp.attach_xdp("up0"))?;
        ensure!(
            ns.ip("link show up0")?.contains("prog/xdp"),
            "XDP missing after re-attach"
        );
        ensure!(
            dp.listen_generation()?.1 && !pins.join("link_tp_listen_close_new").exists(),
            "the listener watch is armed again, its new link pinned in place"
        );
        // One watch attached, not two: the restart released the old link.
        // A close counts once, so one of a few tries sees the generation
        // grow by exactly one (closes elsewhere on the host add to it; two
        // programs would only ever add twos).
        let once = (0..20).any(|_| {
            let before = dp.listen_generation().map(|g| g.0).unwrap_or(0);
            drop(std::net::TcpListener::bind("127.0.0.1:0"));
            dp.listen_generation().map(|g| g.0).unwrap_or(0) == before + 1
        });
        ensure!(once, "a listener close is counted once after the restart");
        dp.set_vip_table(&vip(), &t1, 1400)?;
        ensure!(
            dp.vip_table(&vip())?.as_deref() == Some(&t1[..]),
            "table after restart"
        );
        // A VIP taking over a removed VIP's index starts with a clean
        // listener state (no inherited quiesce, steering or cached listener).
        dp.set_quiesced(&vip(), true)?;
        dp.remove_vip(&vip())?;
        ensure!(dp.vip_table(&vip())?.is_none(), "VIP removed");
        let other = Vip {
            port: 8443,
            ..vip()
        };
        dp.set_vip_table(&other, &t1, 1400)?;
        let state = dp.listener_state(&other)?.unwrap_or_default();
        ensure!(
            state == Default::default(),
            "listener state inherited from the removed VIP: {state:?}"
        );
        Ok(())
    })();
    Dataplane::cleanup(&pins)?;
    ensure!(
        !ns.ip("link show up0")?.contains("prog/xdp"),
        "cleanup leaves XDP attached"
    );
    result
}

#[test]
fn bad_tables_are_refused_with_the_vip_named() -> Result<()> {
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpl")));
    let mut dp = Dataplane::open(&pins)?;
    let err = dp.set_vip_table(&vip(), &[], 0).unwrap_err().to_string();
    let too_big = vec![Bucket::default(); 70_000];
    let err2 = dp
        .set_vip_table(&vip(), &too_big, 0)
        .unwrap_err()
        .to_string();
    drop(dp);
    Dataplane::cleanup(&pins)?;
    ensure!(err.contains("198.51.100.10:443/tcp"), "{err}");
    ensure!(err2.contains("70000"), "{err2}");
    Ok(())
}

/// The member maps mirror the node list: a new address is trusted, an old
/// one forgotten, a removed node's address untrusted, and a whole new list
/// drops what a previous run left. Unspecified addresses are refused (an
/// unset family must never match).
#[test]
fn member_maps_follow_the_node_list() -> Result<()> {
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpl")));
    let result = (|| -> Result<()> {
        let mut dp = Dataplane::open(&pins)?;
        let a2: IpAddr = "192.0.2.2".parse()?;
        let a2b: IpAddr = "192.0.2.22".parse()?;
        let a3: IpAddr = "2001:db8::3".parse()?;
        let a5: IpAddr = "192.0.2.5".parse()?;
        dp.set_node(2, Some(a2))?;
        dp.set_node(3, Some(a3))?;
        ensure!(
            dp.members()? == vec![(a2, 2), (a3, 3)],
            "{:?}",
            dp.members()?
        );
        dp.set_node(2, Some(a2b))?;
        ensure!(dp.members()? == vec![(a2b, 2), (a3, 3)], "re-addressed");
        dp.set_node(3, None)?;
        ensure!(dp.members()? == vec![(a2b, 2)], "removed");
        for bad in ["0.0.0.0", "::", "224.0.0.1"] {
            let err = dp.set_node(4, Some(bad.parse()?)).unwrap_err().to_string();
            ensure!(err.contains(bad), "{bad}: {err}");
        }
        drop(dp);
        // A restarted daemon with another member list.
        let mut dp = Dataplane::open(&pins)?;
        dp.set_nodes(&[(5, a5)])?;
        ensure!(dp.members()? == vec![(a5, 5)], "{:?}", dp.members()?);
        ensure!(
            dp.node(2)?.is_none() && dp.node(5)? == Some(a5),
            "node list"
        );
        Ok(())
    })();
    Dataplane::cleanup(&pins)?;
    result
}

/// An interface deleted and created again (a NIC or bond re-created)
/// detaches the pinned XDP and tc links in the kernel; attaching again
/// notices, unpins them and attaches afresh.
#[test]
fn detached_links_are_replaced() -> Result<()> {
    let ns = Netns::new("dpl")?;
    let veth = "link add up0 type veth peer name up1";
    ns.ip(veth)?;
    ns.ip("link set up0 up")?;
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpl")));
    let result = (|| -> Result<()> {
        let mut dp = Dataplane::open(&pins)?;
        ns.run(|| {
            dp.attach_xdp("up0")?;
            dp.attach_mss_clamp("up0")
        })?;
        ensure!(ns.ip("link show up0")?.contains("prog/xdp"), "attached");
        ns.ip("link del up0")?;
        ns.ip(veth)?;
        ns.ip("link set up0 up")?;
        ensure!(
            !ns.ip("link show up0")?.contains("prog/xdp"),
            "a re-created interface has no program"
        );
        for link in ["link_xdp_up0", "link_tc_up0"] {
            let on = pinned_link::ifindex(&pins.join(link))?;
            ensure!(on == 0, "{link} still drives ifindex {on}");
        }
        ns.run(|| {
            dp.attach_xdp("up0")?;
            dp.attach_mss_clamp("up0")
        })?;
        ensure!(
            ns.ip("link show up0")?.contains("prog/xdp"),
            "XDP not attached again: {}",
            ns.ip("link show up0")?
        );
        let up0 = ns.ifindex("up0")?;
        for link in ["link_xdp_up0", "link_tc_up0"] {
            let on = pinned_link::ifindex(&pins.join(link))?;
            ensure!(on == up0, "{link} drives ifindex {on}, up0 is {up0}");
        }
        Ok(())
    })();
    Dataplane::cleanup(&pins)?;
    result
}

/// Maps pinned with another layout are refused with an error that names
/// the way out (`lbd cleanup`), and cleanup removes them.
#[test]
fn other_layouts_are_refused_naming_lbd_cleanup() -> Result<()> {
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/{}", unique("dpl")));
    let result = (|| -> Result<()> {
        drop(Dataplane::open(&pins)?);
        let current = pins.join(format!("layout-{}", dataplane_common::LAYOUT_VERSION));
        ensure!(current.join("LBD_NODES").exists(), "maps pinned by layout");
        // A build with an older layout left its directory.
        std::fs::create_dir(pins.join("layout-1"))?;
        let err = Dataplane::open(&pins).err().context("layout 1 accepted")?;
        ensure!(
            err.downcast_ref::<LayoutMismatch>().is_some(),
            "untyped error: {err:#}"
        );
        let text = err.to_string();
        ensure!(
            text.contains("layout 1") && text.contains("`lbd cleanup`"),
            "{text}"
        );
        std::fs::remove_dir(pins.join("layout-1"))?;
        drop(Dataplane::open(&pins)?);
        // Maps pinned before versioning sit at the top.
        std::fs::rename(current.join("LBD_STATS"), pins.join("LBD_STATS"))?;
        let text = Dataplane::open(&pins)
            .err()
            .context("unversioned accepted")?;
        ensure!(
            text.to_string().contains("unversioned") && text.to_string().contains("lbd cleanup"),
            "{text}"
        );
        Ok(())
    })();
    Dataplane::cleanup(&pins)?;
    ensure!(!pins.exists(), "cleanup left {}", pins.display());
    result
}
