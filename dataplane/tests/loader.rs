//! The loader against the real kernel: tables written through the mmap'ed
//! bucket array read back identically through the syscall path, slots flip,
//! and a "restarted daemon" (a second `Dataplane::open` on the same pin
//! directory) finds the program still attached and the tables in place.
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, ensure};
use dataplane::{
    loader::{Dataplane, Vip},
    maglev::{self, Member},
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
        dp.set_vip_table(&vip(), &t1, 1400)?;
        ensure!(
            dp.vip_table(&vip())?.as_deref() == Some(&t1[..]),
            "table after restart"
        );
        dp.remove_vip(&vip())?;
        ensure!(dp.vip_table(&vip())?.is_none(), "VIP removed");
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
