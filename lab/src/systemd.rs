//! `systemd-analyze verify` of a shipped unit, as the packaging tests of
//! flowmark and storage-front run it.
use std::path::Path;
use std::process::Command;

/// Saves `text` as `dir/name` and runs `systemd-analyze verify` on it: Ok,
/// or what it said. Warnings fail too (verify exits 0 on an unknown key);
/// lines containing one of `ignore` are dropped first (a user a build
/// machine may lack). A missing `systemd-analyze` panics: no skip.
pub fn verify(dir: &Path, name: &str, text: &str, ignore: &[&str]) -> Result<(), String> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/setup.sh installs it with systemd)");
    let said =
        String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    let said: String = said
        .lines()
        .filter(|l| !ignore.iter().any(|x| l.contains(x)))
        .collect::<Vec<_>>()
        .join("\n");
    if o.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}
