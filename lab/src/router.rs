//! The routers labs peer with: FRR (zebra, bfdd, bgpd) and BIRD 2, started
//! inside a namespace with their config, sockets and pid files in a run
//! directory of their own. The caller writes the configs (each lab has its
//! own site); this module starts, restarts, queries and stops the daemons.
//! Every daemon started is killed by pid on drop.
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{kill_pid, read_pid, run, start_daemon};
use crate::wait::wait_until;

/// bfdd with a `fast` profile: 100 ms intervals, 3 missed = down.
pub const BFDD_FAST: &str = "bfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n!\n";

/// The three FRR configs (the text of zebra.conf, bfdd.conf, bgpd.conf).
pub struct FrrConfig<'a> {
    pub zebra: &'a str,
    pub bfdd: &'a str,
    pub bgpd: &'a str,
}

/// FRR's zebra, bfdd and bgpd in namespace `ns`, with unix vty sockets
/// only (no TCP vty: `-P 0`).
pub struct Frr {
    pub ns: String,
    /// Configs, sockets, pid files (owned by frr, as FRR requires).
    pub dir: PathBuf,
    pids: Vec<u32>,
}

impl Frr {
    pub fn start(ns: &str, dir: PathBuf, conf: &FrrConfig) -> Result<Frr> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("zebra.conf"), conf.zebra)?;
        fs::write(dir.join("bfdd.conf"), conf.bfdd)?;
        fs::write(dir.join("bgpd.conf"), conf.bgpd)?;
        run("chown", &["-R", "frr:frr", &dir.display().to_string()])?;
        let mut frr = Frr {
            ns: ns.to_string(),
            dir,
            pids: Vec::new(),
        };
        frr.daemon("zebra", &["-s", "90000000"])?;
        let zserv = frr.dir.join("zserv.api");
        wait_until("zebra's zserv socket", Duration::from_secs(10), || {
            zserv.exists()
        })?;
        let bfdctl = frr.file("bfdd.sock");
        frr.daemon("bfdd", &["--bfdctl", &bfdctl])?;
        frr.start_bgpd()?;
        Ok(frr)
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Starts FRR daemon `name` with its own config and pid file and the
    /// run directory's zserv and vty sockets, plus `extra`.
    fn daemon(&mut self, name: &str, extra: &[&str]) -> Result<u32> {
        let (conf, pid) = (self.file(&format!("{name}.conf")), format!("{name}.pid"));
        let (zserv, vty) = (self.file("zserv.api"), self.dir.display().to_string());
        let bin = format!("/usr/lib/frr/{name}");
        let pid_path = self.dir.join(&pid);
        let pid_arg = pid_path.display().to_string();
        let mut argv = vec![
            bin.as_str(),
            "-d",
            "-f",
            &conf,
            "-i",
            &pid_arg,
            "-z",
            &zserv,
            "--vty_socket",
            &vty,
            "-P",
            "0",
        ];
        argv.extend_from_slice(extra);
        let pid = start_daemon(&self.ns, &argv, &pid_path)?;
        self.pids.push(pid);
        Ok(pid)
    }

    /// (Re)starts bgpd; returns its pid.
    pub fn start_bgpd(&mut self) -> Result<u32> {
        self.daemon("bgpd", &[])
    }

    /// bgpd's pid (from its pid file).
    pub fn bgpd_pid(&self) -> Option<u32> {
        read_pid(&self.dir.join("bgpd.pid"))
    }

    /// kill -9 of bgpd (zebra and bfdd stay, as when bgpd crashes); returns
    /// once it is gone.
    pub fn kill_bgpd(&mut self) -> Result<()> {
        let pidf = self.dir.join("bgpd.pid");
        let pid = read_pid(&pidf).context("no bgpd pid")?;
        kill_pid(pid);
        self.pids.retain(|p| *p != pid);
        let _ = fs::remove_file(pidf);
        Ok(())
    }

    /// vtysh with one `-c` per command: (stdout, stderr).
    pub fn vtysh_output(&self, commands: &[&str]) -> Result<(String, String)> {
        let mut c = Command::new("vtysh");
        c.arg("--vty_socket").arg(&self.dir);
        for x in commands {
            c.arg("-c").arg(x);
        }
        let out = c.output().context("running vtysh")?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// What vtysh prints for `command` (stdout).
    pub fn vtysh(&self, command: &str) -> Result<String> {
        Ok(self.vtysh_output(&[command])?.0)
    }
}

impl Drop for Frr {
    /// Killed outright: a graceful FRR stop takes ~2 s and the namespace
    /// (with everything the daemons installed) goes right after.
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            kill_pid(*pid);
        }
    }
}

/// BIRD 2 in namespace `ns`.
pub struct Bird {
    pub ns: String,
    pub dir: PathBuf,
    pid: Option<u32>,
}

impl Bird {
    /// Writes `conf` as DIR/bird.conf and starts bird with it.
    pub fn start(ns: &str, dir: PathBuf, conf: &str) -> Result<Bird> {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("bird.conf"), conf)?;
        let mut bird = Bird {
            ns: ns.to_string(),
            dir,
            pid: None,
        };
        bird.restart()?;
        Ok(bird)
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The control socket birdc talks to.
    pub fn ctl(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// (Re)starts bird; returns its pid.
    pub fn restart(&mut self) -> Result<u32> {
        let (conf, ctl, pidf) = (
            self.file("bird.conf"),
            self.file("bird.ctl"),
            self.dir.join("bird.pid"),
        );
        let pid_arg = pidf.display().to_string();
        let pid = start_daemon(
            &self.ns,
            &["/usr/sbin/bird", "-c", &conf, "-s", &ctl, "-P", &pid_arg],
            &pidf,
        )?;
        self.pid = Some(pid);
        Ok(pid)
    }

    /// kill -9 of bird; returns once it is gone.
    pub fn kill(&mut self) -> Result<()> {
        let pidf = self.dir.join("bird.pid");
        let pid = read_pid(&pidf).context("no bird pid")?;
        kill_pid(pid);
        self.pid = None;
        let _ = fs::remove_file(pidf);
        Ok(())
    }

    /// birdc with `command` (words): (stdout, stderr).
    pub fn birdc_output(&self, command: &str) -> Result<(String, String)> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.ctl())
            .args(command.split_whitespace())
            .output()
            .context("running birdc")?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// What birdc prints for `command` (stdout).
    pub fn birdc(&self, command: &str) -> Result<String> {
        Ok(self.birdc_output(command)?.0)
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            kill_pid(pid);
        }
    }
}
