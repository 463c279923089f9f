//! `make packages` and what a site does with the packages, on this machine:
//! the .debs install with dpkg, work (check-config on the shipped example,
//! `systemd-analyze verify` on the installed units, `man`, bash
//! completion), keep an edited conffile on reinstall, start no daemon, and
//! purge without leaving a file; lintian has no error and no warning; the RPMs' file
//! lists, config flags, dependencies and scriptlets are what they should
//! be (`rpm -qp`).
//!
//! The .deb tests install into the real system and remove again: they hold
//! one lock (dpkg runs one at a time) and purge leftovers of an
//! interrupted earlier run first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

const VERSION: &str = env!("CARGO_PKG_VERSION");
static DPKG: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// target/packages, built once per test binary by `make packages`.
fn packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new("make")
            .args(["--no-print-directory", "packages"])
            .current_dir(root())
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .output()
            .expect("make");
        assert!(
            out.status.success(),
            "make packages failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        target.join("packages")
    })
}

/// The one file in target/packages named `prefix*suffix`.
fn package(prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(packages())
        .expect("target/packages")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in target/packages: {found:?}"
    );
    found.into_iter().next().expect("one")
}

fn deb(name: &str) -> PathBuf {
    package(&format!("{name}_{VERSION}"), "_amd64.deb")
}

fn rpm(name: &str) -> PathBuf {
    package(&format!("{name}-{VERSION}"), ".x86_64.rpm")
}

/// Runs a command; (success, stdout, stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("MANWIDTH", "200")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; its stdout.
fn ok(cmd: &str, args: &[&str]) -> String {
    let (success, out, err) = run(cmd, args);
    assert!(success, "{cmd} {args:?} failed:\n{out}{err}");
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The regular files and symlinks a .deb installs (absolute paths).
fn deb_files(deb: &Path) -> Vec<String> {
    ok("dpkg-deb", &["-c", path_str(deb)])
        .lines()
        .filter(|l| l.starts_with('-') || l.starts_with('l'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// PIDs of running processes whose executable is `exe`.
fn running(exe: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path().join("exe")).ok()?;
            let target = target.to_str()?.trim_end_matches(" (deleted)").to_string();
            (target == exe).then_some(pid)
        })
        .collect()
}

/// Installs `deb`, runs `check`, purges, and asserts the system is as
/// before: none of its files, not known to dpkg, no process of `bin`.
fn install_check_purge(name: &str, bin: &str, check: impl FnOnce(&[String])) {
    let _dpkg = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let deb = deb(name);
    let files = deb_files(&deb);
    assert!(files.contains(&bin.to_string()), "{files:?}");
    // An interrupted earlier run may have left it installed.
    if run("dpkg", &["-s", name]).0 {
        ok("dpkg", &["--purge", name]);
    }
    for f in &files {
        assert!(
            !Path::new(f).exists(),
            "{f} exists before installing {name}"
        );
    }
    ok("dpkg", &["-i", path_str(&deb)]);
    let status = ok("dpkg-query", &["-W", "-f=${Status} ${Version}", name]);
    assert!(
        status.starts_with(&format!("install ok installed {VERSION}")),
        "{status}"
    );
    for f in &files {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    assert!(running(bin).is_empty(), "installing {name} started {bin}");
    // The checks run with the package installed; purge even if one fails.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&files)));
    let purge = run("dpkg", &["--purge", name]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(purge.0, "dpkg --purge {name}:\n{}{}", purge.1, purge.2);
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    assert!(left.is_empty(), "left after purging {name}: {left:?}");
    assert!(!run("dpkg", &["-s", name]).0, "{name} still known to dpkg");
    assert!(running(bin).is_empty(), "{bin} running after purge");
}

/// The subcommand names in `bin --help`'s Commands section.
fn subcommands(bin: &str) -> Vec<String> {
    let help = ok(bin, &["--help"]);
    help.split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every long option in `bin SUB --help`.
fn long_options(bin: &str, sub: &str) -> BTreeSet<String> {
    ok(bin, &[sub, "--help"])
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.split('<').next().unwrap_or(w).to_string())
        .collect()
}

/// `man PAGE` documents every subcommand of `bin` with every long option
/// `--help` shows, and bash completion offers every subcommand.
fn assert_man_and_completion(bin: &str) {
    let name = Path::new(bin)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    let page = ok("man", &["--nh", "--nj", "-P", "cat", name]);
    let subs = subcommands(bin);
    assert!(subs.len() >= 3, "{subs:?}");
    for sub in &subs {
        assert!(
            page.contains(&format!("{name} {sub}")),
            "man {name} lacks `{name} {sub}`:\n{page}"
        );
        for opt in long_options(bin, sub) {
            assert!(page.contains(&opt), "man {name} lacks {sub} {opt}");
        }
        ok("man", &["-w", &format!("{name}-{sub}")]);
    }
    assert!(
        !page.contains("generate-docs"),
        "the hidden subcommand is documented"
    );
    let script = format!(
        "source /usr/share/bash-completion/completions/{name}; \
         COMP_WORDS=({name} ''); COMP_CWORD=1; COMP_LINE='{name} '; COMP_POINT=${{#COMP_LINE}}; \
         _{fun} {name} '' {name}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        fun = name.replace('-', "__")
    );
    let offered = ok("bash", &["-c", &script]);
    let offered: BTreeSet<&str> = offered.lines().collect();
    for sub in &subs {
        assert!(
            offered.contains(sub.as_str()),
            "bash completion of `{name} ` lacks {sub}: {offered:?}"
        );
    }
}

fn unit_path(files: &[String], unit: &str) -> String {
    files
        .iter()
        .find(|f| f.ends_with(&format!("/systemd/system/{unit}")))
        .unwrap_or_else(|| panic!("{unit} not in {files:?}"))
        .clone()
}

fn assert_units_verify(files: &[String], units: &[&str]) {
    for unit in units {
        let path = unit_path(files, unit);
        let (success, out, err) = run("systemd-analyze", &["verify", &path]);
        assert!(
            success && err.trim().is_empty(),
            "systemd-analyze verify {path}:\n{out}{err}"
        );
    }
}

#[test]
fn lbd_deb_installs_checks_its_config_keeps_an_edited_conffile_and_purges_cleanly() {
    let deb = deb("lbd");
    let depends = ok("dpkg-deb", &["-f", path_str(&deb), "Depends"]);
    assert!(depends.contains("libc6"), "Depends: {depends}");
    install_check_purge("lbd", "/usr/bin/lbd", |files| {
        let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "lbd"]);
        assert!(conffiles.contains("/etc/lbd/lbd.toml"), "{conffiles}");
        let checked = ok("lbd", &["check-config", "/etc/lbd/lbd.toml"]);
        assert!(
            checked.contains(": OK: node 1, 3 members, 1 VIPs, 1 BGP peers"),
            "{checked}"
        );
        assert_units_verify(files, &["lbd.service"]);
        let unit = std::fs::read_to_string(unit_path(files, "lbd.service")).expect("unit");
        assert!(
            unit.contains("ExecStart=/usr/bin/lbd run --config /etc/lbd/lbd.toml"),
            "{unit}"
        );
        // The drop-in for nginx.service: quiesce before nginx stops, with
        // the packaged binary's path; nginx's unit still verifies with it.
        let dropin = "/usr/lib/systemd/system/nginx.service.d/lbd-listener.conf";
        assert!(
            files.iter().any(|f| f == dropin),
            "{dropin} not in the package"
        );
        let text = std::fs::read_to_string(dropin).expect("drop-in");
        for line in [
            "ExecStop=\n",
            "ExecStop=-/usr/bin/lbd listener quiesce --timeout 4s\n",
            "KillSignal=SIGQUIT\n",
            "ExecStartPost=-/usr/bin/lbd listener resume\n",
        ] {
            assert!(text.contains(line), "{dropin} lacks {line:?}:\n{text}");
        }
        let nginx_unit = "/usr/lib/systemd/system/nginx.service";
        if Path::new(nginx_unit).exists() {
            let (success, out, err) = run("systemd-analyze", &["verify", nginx_unit]);
            assert!(
                success && err.trim().is_empty(),
                "systemd-analyze verify {nginx_unit} with {dropin}:\n{out}{err}"
            );
        }
        assert_man_and_completion("/usr/bin/lbd");
        // lbd.toml(5) is the config reference: every key of the example.
        let config_page = ok("man", &["--nh", "--nj", "-P", "cat", "5", "lbd.toml"]);
        for key in [
            "node_id",
            "drain_period",
            "encapsulation",
            "graceful_restart_time",
            "md5_password_file",
            "body_contains",
            "metrics",
        ] {
            assert!(config_page.contains(key), "lbd.toml(5) lacks {key}");
        }
        for example in ["frr-router.conf", "bird-router.conf"] {
            let p = format!("/usr/share/doc/lbd/examples/{example}");
            assert!(files.contains(&p), "{p} not in the package");
        }
        // A site's edit survives reinstalling (the same as an upgrade for
        // dpkg's conffile handling); still no daemon started.
        let edited =
            std::fs::read_to_string("/etc/lbd/lbd.toml").expect("config") + "# site edit\n";
        std::fs::write("/etc/lbd/lbd.toml", &edited).expect("edit");
        ok("dpkg", &["-i", "--force-confold", path_str(&deb)]);
        assert_eq!(
            std::fs::read_to_string("/etc/lbd/lbd.toml").expect("config"),
            edited
        );
        assert!(running("/usr/bin/lbd").is_empty());
    });
    assert!(!Path::new("/etc/lbd").exists(), "/etc/lbd left after purge");
}

#[test]
fn flowmark_deb_installs_its_units_and_nginx_files_and_purges_cleanly() {
    install_check_purge("flowmark", "/usr/bin/flowmark", |files| {
        assert_units_verify(files, &["flowmark.service", "flowmark-collect.service"]);
        assert_man_and_completion("/usr/bin/flowmark");
        let http = std::fs::read_to_string("/usr/share/flowmark/nginx-http.conf")
            .expect("nginx-http.conf");
        assert!(
            http.contains("lua_package_path \"/usr/share/flowmark/?.lua;;\""),
            "{http}"
        );
        assert!(Path::new("/usr/share/flowmark/flowmark.lua").exists());
        let out = ok("flowmark", &["scitag", "206"]);
        assert!(out.contains("196664"), "{out}");
    });
}

#[test]
fn lbd_trace_deb_is_the_static_binary_alone_without_dependencies() {
    let deb = deb("lbd-trace");
    let depends = ok("dpkg-deb", &["-f", path_str(&deb), "Depends"]);
    assert_eq!(depends.trim(), "", "lbd-trace depends on {depends}");
    install_check_purge("lbd-trace", "/usr/bin/lbd-trace", |files| {
        let file = ok("file", &["/usr/bin/lbd-trace"]);
        assert!(file.contains("statically linked"), "{file}");
        assert!(
            files
                .iter()
                .all(|f| f.starts_with("/usr/bin/") || f.starts_with("/usr/share/")),
            "{files:?}"
        );
        let version = ok("lbd-trace", &["--version"]);
        assert_eq!(version.trim(), format!("lbd-trace {VERSION}"));
        assert_man_and_completion("/usr/bin/lbd-trace");
    });
}

#[test]
fn storage_front_deb_installs_its_unit_config_and_nginx_files_and_purges_cleanly() {
    install_check_purge("storage-front", "/usr/bin/storage-front", |files| {
        assert_units_verify(files, &["storage-front.service"]);
        assert_man_and_completion("/usr/bin/storage-front");
        let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "storage-front"]);
        assert!(
            conffiles.contains("/etc/storage-front/storage-front.toml"),
            "{conffiles}"
        );
        ok(
            "storage-front",
            &["check-config", "/etc/storage-front/storage-front.toml"],
        );
        let http = std::fs::read_to_string("/usr/share/storage-front/nginx-http.conf")
            .expect("nginx-http.conf");
        assert!(
            http.contains("/usr/share/storage-front/?.lua") && !http.contains("/etc/"),
            "{http}"
        );
        assert!(Path::new("/usr/share/storage-front/storage_front.lua").exists());
    });
}

#[test]
fn lintian_is_clean_on_the_debs() {
    for name in ["lbd", "flowmark", "lbd-trace", "storage-front"] {
        let deb = deb(name);
        let (success, out, err) = run("lintian", &["--fail-on", "error,warning", path_str(&deb)]);
        let errors: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
            .collect();
        assert!(success && errors.is_empty(), "lintian {name}:\n{out}{err}");
    }
}

/// `rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]'`: path -> flags.
fn rpm_files(rpm: &Path) -> Vec<(String, String)> {
    ok(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILENAMES} %{FILEFLAGS:fflags}\\n]",
            path_str(rpm),
        ],
    )
    .lines()
    .filter_map(|l| {
        let mut w = l.split_whitespace();
        Some((w.next()?.to_string(), w.next().unwrap_or("").to_string()))
    })
    .collect()
}

#[test]
fn rpms_list_their_files_config_dependencies_and_scriptlets() {
    let lbd = rpm("lbd");
    assert_eq!(
        ok(
            "rpm",
            &["-qp", "--qf", "%{NAME} %{VERSION}", path_str(&lbd)]
        ),
        format!("lbd {VERSION}")
    );
    let listed: BTreeSet<String> = ok("rpm", &["-qlp", path_str(&lbd)])
        .lines()
        .map(str::to_string)
        .collect();
    for f in [
        "/usr/bin/lbd",
        "/etc/lbd/lbd.toml",
        "/usr/lib/systemd/system/lbd.service",
        "/usr/lib/systemd/system/nginx.service.d/lbd-listener.conf",
        "/usr/share/man/man1/lbd.1.gz",
        "/usr/share/man/man1/lbd-run.1.gz",
        "/usr/share/man/man1/lbd-status.1.gz",
        "/usr/share/man/man5/lbd.toml.5.gz",
        "/usr/share/bash-completion/completions/lbd",
        "/usr/share/zsh/site-functions/_lbd",
        "/usr/share/fish/vendor_completions.d/lbd.fish",
        "/usr/share/doc/lbd/examples/frr-router.conf",
        "/usr/share/doc/lbd/examples/bird-router.conf",
    ] {
        assert!(listed.contains(f), "rpm -qlp lbd lacks {f}: {listed:?}");
    }
    // The config file: %config(noreplace), never overwritten on upgrade.
    let flags = rpm_files(&lbd);
    let config: Vec<_> = flags.iter().filter(|(_, fl)| fl.contains('c')).collect();
    assert_eq!(config.len(), 1, "{flags:?}");
    assert_eq!(config[0].0, "/etc/lbd/lbd.toml");
    assert!(config[0].1.contains('n'), "not noreplace: {:?}", config[0]);
    let requires = ok("rpm", &["-qp", "--requires", path_str(&lbd)]);
    assert!(requires.contains("libc.so.6"), "{requires}");
    let scripts = ok("rpm", &["-qp", "--scripts", path_str(&lbd)]);
    for (section, body) in [
        ("preuninstall", "disable --now lbd.service"),
        ("preuninstall", "lbd cleanup --config /etc/lbd/lbd.toml"),
        ("postuninstall", "try-restart lbd.service"),
    ] {
        let part = scripts
            .split(&format!("{section} scriptlet"))
            .nth(1)
            .unwrap_or("");
        assert!(part.contains(body), "{section} lacks {body:?}:\n{scripts}");
    }
    // Install never starts or enables lbd (the example config needs edits).
    let post = scripts.split("postinstall scriptlet").nth(1).unwrap_or("");
    let post = post.split("scriptlet").next().unwrap_or("");
    assert!(
        !post.contains("start") && !post.contains("enable"),
        "{post}"
    );

    let flowmark = rpm("flowmark");
    let listed = ok("rpm", &["-qlp", path_str(&flowmark)]);
    for f in [
        "/usr/bin/flowmark",
        "/usr/lib/systemd/system/flowmark.service",
        "/usr/lib/systemd/system/flowmark-collect.service",
        "/usr/share/flowmark/flowmark.lua",
        "/usr/share/man/man1/flowmark-collect.1.gz",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "rpm -qlp flowmark lacks {f}:\n{listed}"
        );
    }
    let scripts = ok("rpm", &["-qp", "--scripts", path_str(&flowmark)]);
    assert!(
        scripts.contains("try-restart flowmark.service flowmark-collect.service"),
        "{scripts}"
    );

    let sf = rpm("storage-front");
    let listed = ok("rpm", &["-qlp", path_str(&sf)]);
    for f in [
        "/usr/bin/storage-front",
        "/etc/storage-front/storage-front.toml",
        "/usr/lib/systemd/system/storage-front.service",
        "/usr/share/storage-front/storage_front.lua",
        "/usr/share/storage-front/nginx-http.conf",
        "/usr/share/man/man1/storage-front-run.1.gz",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "rpm -qlp storage-front lacks {f}:\n{listed}"
        );
    }
    let flags = rpm_files(&sf);
    let config: Vec<_> = flags.iter().filter(|(_, fl)| fl.contains('c')).collect();
    assert_eq!(config.len(), 1, "{flags:?}");
    assert_eq!(config[0].0, "/etc/storage-front/storage-front.toml");
    assert!(config[0].1.contains('n'), "not noreplace: {:?}", config[0]);
    let scripts = ok("rpm", &["-qp", "--scripts", path_str(&sf)]);
    assert!(
        scripts.contains("try-restart storage-front.service"),
        "{scripts}"
    );

    // lbd-trace: the binary, its docs, and no dependency at all (only the
    // rpmlib features every RPM carries).
    let trace = rpm("lbd-trace");
    let requires = ok("rpm", &["-qp", "--requires", path_str(&trace)]);
    let real: Vec<&str> = requires
        .lines()
        .filter(|r| !r.starts_with("rpmlib("))
        .collect();
    assert!(real.is_empty(), "lbd-trace requires {real:?}");
    assert_eq!(
        ok("rpm", &["-qp", "--scripts", path_str(&trace)]).trim(),
        ""
    );
    let listed = ok("rpm", &["-qlp", path_str(&trace)]);
    assert!(
        listed.lines().any(|l| l == "/usr/bin/lbd-trace"),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .all(|l| l.starts_with("/usr/bin/") || l.starts_with("/usr/share/")),
        "{listed}"
    );
}

/// `deb` with its Debian revision raised to `revision` (the same files: a
/// rebuild, as a site gets with a new release of the package).
fn next_revision(deb: &Path, revision: u32, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    ok("dpkg-deb", &["-R", path_str(deb), path_str(&tree)]);
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("control");
    let text = text.replace(
        &format!("Version: {VERSION}-1\n"),
        &format!("Version: {VERSION}-{revision}\n"),
    );
    assert!(text.contains(&format!("-{revision}\n")), "{text}");
    std::fs::write(&control, text).expect("control");
    let out = dir.join(format!("lbd_{VERSION}-{revision}_amd64.deb"));
    ok(
        "dpkg-deb",
        &["--root-owner-group", "-b", path_str(&tree), path_str(&out)],
    );
    std::fs::remove_dir_all(&tree).expect("remove tree");
    out
}

/// Issue 17: upgrading the lbd package on the nodes of a storage site under
/// load interrupts nothing. The lab's three nodes run the installed
/// /usr/bin/lbd; `dpkg -i` of the next revision replaces it (the old
/// package's prerm must not stop or clean up on upgrade), then each node's
/// daemon is restarted as the new postinst has systemd do (`try-restart`).
/// The scenario checks zero failed transfers, an ECMP route that never
/// lost a next hop, the same XDP program attached throughout, and daemons
/// running the new file.
#[test]
fn lbd_deb_upgrade_under_load_keeps_forwarding_and_routes() {
    let v1 = deb("lbd");
    let dir = std::env::temp_dir().join(format!("lbd-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let v2 = next_revision(&v1, 2, &dir);
    let postinst = ok("dpkg-deb", &["-I", path_str(&v2), "postinst"]);
    assert!(
        postinst.contains("deb-systemd-invoke try-restart lbd.service"),
        "the postinst does not restart the daemon on upgrade:\n{postinst}"
    );
    install_check_purge("lbd", "/usr/bin/lbd", |_| {
        let site = std::fs::read_to_string(root().join("configs/topology/site.toml"))
            .expect("configs/topology/site.toml");
        let mut t: toml::Table = site.parse().expect("site.toml");
        t.insert("name".into(), "tupgrade".into());
        let topo = topology_tests::topology::Topology::parse(&toml::to_string(&t).expect("toml"))
            .expect("topology");
        let mut install = || -> anyhow::Result<()> {
            let (success, out, err) = run("dpkg", &["-i", path_str(&v2)]);
            anyhow::ensure!(success, "dpkg -i {}:\n{out}{err}", v2.display());
            let version = ok("dpkg-query", &["-W", "-f=${Version}", "lbd"]);
            anyhow::ensure!(version == format!("{VERSION}-2"), "installed {version}");
            Ok(())
        };
        let mut log = |s: &str| eprintln!("[tupgrade] {s}");
        let out = topology_tests::scenarios::package_upgrade(
            &topo,
            &topology_tests::scenarios::Scale::default(),
            Path::new("/usr/bin/lbd"),
            &mut install,
            &mut log,
        )
        .unwrap_or_else(|e| panic!("package_upgrade: {e:#}"));
        eprintln!("{}", out.render());
        assert!(out.passed(), "{}", out.render());
        assert!(
            topology_tests::site::leftovers("tupgrade")
                .expect("leftovers")
                .is_empty(),
            "lab tupgrade left something behind"
        );
    });
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}
