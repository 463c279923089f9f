//! Java: a JVM with -XX:+PreserveFramePointer and a perf map from
//! `jcmd PID Compiler.perfmap` gets its Java method names in the flamegraph;
//! without the map, lbd-trace says what to do instead of printing unknowns.
mod common;

use std::{fs, process::Command, time::Duration};

use common::*;

const HOT_JAVA: &str = r#"
public class Hot {
    static volatile long sink;
    static long spinA(long s) { for (int i = 0; i < 200000; i++) { s = s * 6364136223846793005L + i; } return s; }
    static long spinB(long s) { for (int i = 0; i < 100000; i++) { s = s * 2862933555777941757L + i; } return s; }
    public static void main(String[] args) throws Exception {
        long end = System.nanoTime() + (long) (Double.parseDouble(args[0]) * 1e9);
        long s = 1;
        while (System.nanoTime() < end) { s = spinA(s); s = spinB(s); }
        sink = s;
    }
}
"#;

#[test]
fn java_method_names_appear_with_a_perf_map() {
    if Command::new("javac").arg("-version").output().is_err() {
        panic!("javac not found: scripts/setup.sh installs openjdk-17-jdk-headless");
    }
    let _g = serial();
    let dir = workdir().join("java");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Hot.java"), HOT_JAVA).unwrap();
    let st = Command::new("javac")
        .arg("-d")
        .arg(&dir)
        .arg(dir.join("Hot.java"))
        .status()
        .unwrap();
    assert!(st.success());
    // PrintCompilation tells when the JIT has compiled the hot methods.
    let compilations = dir.join("compilations.log");
    let w = Proc::spawn(
        Command::new("java")
            .args(["-XX:+PreserveFramePointer", "-XX:+PrintCompilation", "-cp"])
            .arg(&dir)
            .args(["Hot", "60"])
            .stdout(fs::File::create(&compilations).unwrap()),
    );
    let pid = w.pid().to_string();
    let map = format!("/tmp/perf-{pid}.map");
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(map.clone());
    let _ = fs::remove_file(&map);
    lab::wait::wait_for(
        "C2 to compile Hot::spinA and Hot::spinB",
        Duration::from_secs(60),
        || {
            let log = fs::read_to_string(&compilations).unwrap_or_default();
            ["Hot::spinA", "Hot::spinB"]
                .iter()
                .all(|m| compiled_at_top_tier(&log, m))
        },
    );

    // Without a map: an explanation, not unknowns.
    let r = trace(
        &[
            "profile", "--pid", &pid, "-d", "1s", "-F", "199", "-f", "folded",
        ],
        Duration::from_secs(60),
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("has no perf map") && r.stderr.contains("Compiler.perfmap"),
        "{}",
        r.stderr
    );
    assert!(!String::from_utf8_lossy(&r.stdout).contains("[unknown]"));

    let st = Command::new("jcmd")
        .args([&pid, "Compiler.perfmap"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "jcmd: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let r = trace(
        &[
            "profile", "--pid", &pid, "-d", "2s", "-F", "499", "-f", "svg", "-o", "-",
        ],
        Duration::from_secs(60),
    );
    assert!(r.ok, "{}", r.stderr);
    let svg = String::from_utf8_lossy(&r.stdout);
    assert!(
        svg.contains("Hot.spinA") && svg.contains("Hot.spinB"),
        "Java methods missing: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("has no perf map"));
}

/// The highest JIT tier (C2).
const TOP_TIER: &str = "4";

/// Whether a `-XX:+PrintCompilation` log has `method` compiled by C2 as a
/// whole method (not only on-stack replacement, `%`), still in use. Its
/// lines read "TIME ID [FLAGS] TIER METHOD (SIZE) [made not entrant]".
fn compiled_at_top_tier(log: &str, method: &str) -> bool {
    log.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(at) = f.iter().position(|t| *t == method) else {
            return false;
        };
        at >= 1
            && f[at - 1] == TOP_TIER
            && !f[..at].contains(&"%")
            && !l.contains("made not entrant")
    })
}
