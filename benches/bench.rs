//! `scripts/bench`: each figure next to its baseline, measured in the same run
//! on the same sysroot. Not a test: it asserts nothing, it reports.

mod cockpit_page;
#[path = "../tests/common/mod.rs"]
mod common;
mod containers;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use apt_ostree::protocol::sysroot::{VarlinkClient, VarlinkClientInterface};
use common::*;

pub(crate) struct Stats {
    median: Duration,
    p99: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
        min: samples[0],
        max: samples[samples.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn time_process(n: usize, mut cmd: impl FnMut() -> Command) -> Stats {
    let samples = (0..n)
        .map(|_| {
            let mut c = cmd();
            let t = Instant::now();
            run(&mut c);
            t.elapsed()
        })
        .collect();
    stats(samples)
}

fn row(what: &str, ours: &str, baseline_name: &str, baseline: &str) {
    println!("{what:<44} {ours:>14}   {baseline_name:<34} {baseline:>14}");
}

fn rss_kib(pid: u32, key: &str) -> u64 {
    let file = if key == "Pss:" {
        "smaps_rollup"
    } else {
        "status"
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/{file}: {e}"));
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

/// Whether to run section `name`: all of them, unless APT_OSTREE_BENCH
/// names some (status, limits, upgrade, layering, compose, minbase, containers,
/// cockpit).
fn wanted(name: &str) -> bool {
    std::env::var("APT_OSTREE_BENCH").map_or(true, |v| v.split(',').any(|s| s.trim() == name))
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let s = TestSysroot::with_two_deployments();
    if wanted("status") {
        status_bench(&s);
    }
    if wanted("limits") {
        limits_bench(&s);
    }
    if wanted("upgrade") {
        upgrade_bench();
    }
    if wanted("layering") {
        layering_bench();
    }
    if wanted("compose") || wanted("minbase") {
        compose_bench();
    }
    if wanted("containers") {
        containers::bench();
    }
    if wanted("cockpit") {
        cockpit_page::bench();
    }
}

/// `status` against `ostree admin status`, warm and cold.
fn status_bench(s: &TestSysroot) {
    println!(
        "apt-ostree benchmarks ({} deployments, sysroot on tmpfs)",
        2
    );
    println!(
        "{:<44} {:>14}   {:<34} {:>14}",
        "measure", "ours", "baseline", ""
    );

    // Warm round trip: one connection, many calls.
    let d = ActivatedDaemon::start(&s.path, 60);
    let conn = varlink::Connection::with_address(&d.address()).unwrap();
    let mut client = VarlinkClient::new(conn.clone());
    client.get_status().call().unwrap(); // activate and warm
    let n = 2000;
    let status_rt: Vec<_> = (0..n)
        .map(|_| {
            let t = Instant::now();
            client.get_status().call().unwrap();
            t.elapsed()
        })
        .collect();
    let mut service = varlink::OrgVarlinkServiceClient::new(conn);
    use varlink::OrgVarlinkServiceInterface;
    let info_rt: Vec<_> = (0..n)
        .map(|_| {
            let t = Instant::now();
            service.get_info().unwrap();
            t.elapsed()
        })
        .collect();
    let (status_rt, info_rt) = (stats(status_rt), stats(info_rt));
    row(
        "GetStatus round trip, warm (median)",
        &ms(status_rt.median),
        "GetInfo round trip (protocol only)",
        &ms(info_rt.median),
    );
    row(
        "GetStatus round trip, warm (p99)",
        &ms(status_rt.p99),
        "GetInfo round trip (p99)",
        &ms(info_rt.p99),
    );
    let pid = {
        // systemd-socket-activate execs the daemon in place: same pid.
        d.child.id()
    };
    row(
        "idle daemon RSS / PSS",
        &format!("{} / {} KiB", rss_kib(pid, "VmRSS:"), rss_kib(pid, "Pss:")),
        "target",
        "< 30 MiB RSS",
    );
    drop(d);

    // Cold activation: a fresh socket each time, connect and call once.
    let cold: Vec<_> = (0..15)
        .map(|_| {
            let d = ActivatedDaemon::start(&s.path, 60);
            let t = Instant::now();
            let conn = varlink::Connection::with_address(&d.address()).unwrap();
            VarlinkClient::new(conn).get_status().call().unwrap();
            t.elapsed()
        })
        .collect();
    let cold = stats(cold);
    let ostree_cold = time_process(15, || {
        let mut c = ostree();
        c.args(["admin", "status"])
            .arg(format!("--sysroot={}", s.path.display()));
        c
    });
    row(
        "cold activation to first GetStatus reply",
        &ms(cold.median),
        "`ostree admin status` process",
        &ms(ostree_cold.median),
    );

    // Whole processes, as a user runs them.
    let d = ActivatedDaemon::start(&s.path, 60);
    let cli_warm = time_process(30, || {
        let mut c = Command::new(cli());
        c.arg("--address").arg(d.address()).arg("status");
        c
    });
    let cli_private = time_process(30, || {
        let mut c = s.cli();
        c.arg("status");
        c
    });
    row(
        "`apt-ostree status` (system daemon)",
        &ms(cli_warm.median),
        "`ostree admin status`",
        &ms(ostree_cold.median),
    );
    row(
        "`apt-ostree --sysroot status` (private)",
        &ms(cli_private.median),
        "`ostree admin status`",
        &ms(ostree_cold.median),
    );
    // Keep the socket alive until here.
    let _ = UnixStream::connect(&d.socket);
    drop(d);
}

/// The ratio of two medians, with the spread of each set of runs.
fn ratio_row(ours: &Stats, floor: &Stats) {
    println!(
        "{:<44} {:>13.2}x   (ours {:.0}-{:.0} ms, floor {:.0}-{:.0} ms over the runs)",
        "  ratio of the medians",
        ours.median.as_secs_f64() / floor.median.as_secs_f64(),
        ours.min.as_secs_f64() * 1e3,
        ours.max.as_secs_f64() * 1e3,
        floor.min.as_secs_f64() * 1e3,
        floor.max.as_secs_f64() * 1e3,
    );
}

/// What one user can do to everyone else: root's status while that user
/// holds all the connections it may (and tries 3,000), and the daemon's
/// memory while 1,000 connections trickle never-ending 1 MB messages.
fn limits_bench(s: &TestSysroot) {
    let d = ActivatedDaemon::start(&s.path, 120);
    run(Command::new("prlimit")
        .arg(format!("--pid={}", d.child.id()))
        .arg("--nofile=1024:1024"));
    let status = || {
        let mut c = Command::new(cli());
        c.arg("--address").arg(d.address()).arg("status");
        c
    };
    let alone = time_process(30, status);
    let (mut hog, _) = hold_connections(&d.socket, &["3000"]);
    let crowded = time_process(30, status);
    let _ = hog.kill();
    let _ = hog.wait();
    row(
        "root's status, one user at its cap",
        &ms(crowded.median),
        "root's status, nobody else",
        &ms(alone.median),
    );
    let pid = d.child.id();
    let idle = rss_kib(pid, "VmRSS:");
    let (mut trickle, _) = hold_connections(&d.socket, &["1000", "--trickle", "1048000"]);
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(rss_kib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = trickle.kill();
    let _ = trickle.wait();
    row(
        "daemon RSS, 1,000 trickling 1 MB messages",
        &format!("{} KiB", peak),
        "idle daemon RSS",
        &format!("{idle} KiB"),
    );
}

/// Compose the demo treefile from Debian's archive, split into its phases,
/// next to plain mmdebstrap of the same package set; then recompose unchanged.
fn compose_bench() {
    if let (false, Ok(repo)) = (
        wanted("compose"),
        std::env::var("APT_OSTREE_BENCH_MINBASE_REPO"),
    ) {
        // Only the layering figure, on a repository composed earlier.
        minbase_layering_bench(std::path::Path::new(&repo));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let treefile = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/treefiles/debian-minimal.toml");
    let repo = dir.path().join("repo");
    let t = Instant::now();
    let out = Command::new(cli())
        .args(["compose", "tree"])
        .arg(&treefile)
        .arg("--repo")
        .arg(&repo)
        .output()
        .unwrap();
    let total = t.elapsed();
    if !out.status.success() {
        println!(
            "compose: not measured: apt-ostree compose tree failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Phases as compose prints them, to a tenth of a second.
    let phase = |name: &str| {
        text.split(&format!("{name}: "))
            .nth(1)
            .and_then(|r| r.split(" s").next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|seconds| format!("{seconds:.1} s"))
            .unwrap_or_else(|| panic!("compose printed no \"{name}\" phase:\n{text}"))
    };
    // The baseline reads the treefile's sources as compose does
    // (sources = "host": this machine's files that name the suite).
    let loaded = apt_ostree::compose::treefile::Treefile::load(&treefile).unwrap();
    let apt_ostree::compose::treefile::Source::Mmdebstrap { suite, mirrors } =
        loaded.source().unwrap()
    else {
        panic!(
            "{} composes from a directory, not an archive",
            treefile.display()
        );
    };
    let plain = dir.path().join("plain");
    let t = Instant::now();
    run(Command::new("mmdebstrap")
        .arg(format!("--variant={}", loaded.variant))
        .args([
            "--mode=root",
            "--format=directory",
            "--skip=cleanup/reproducible",
            "-q",
        ])
        .arg(format!("--include={}", loaded.packages.join(",")))
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg(&suite)
        .arg(&plain)
        .args(&mirrors));
    let mmdebstrap = t.elapsed();
    row(
        "compose minimal (total)",
        &ms(total),
        "plain mmdebstrap, same packages",
        &ms(mmdebstrap),
    );
    row("  of which mmdebstrap", &phase("root file system"), "", "");
    row("  of which conversion", &phase("conversion"), "", "");
    row("  of which commit", &phase("commit"), "", "");
    let t = Instant::now();
    let again = Command::new(cli())
        .args(["compose", "tree"])
        .arg(&treefile)
        .arg("--repo")
        .arg(&repo)
        .output()
        .unwrap();
    assert!(again.status.success());
    row(
        "recompose, unchanged treefile",
        &ms(t.elapsed()),
        "target",
        "seconds",
    );
    minbase_layering_bench(&repo);
}

/// Where a round runs: on every core, or pinned to one (children inherit
/// the affinity, so the CLI, the daemon and dpkg all share that core).
#[derive(Clone, Copy)]
enum Cores {
    All,
    One,
}

impl Cores {
    fn label(self) -> &'static str {
        match self {
            Cores::All => "all cores",
            Cores::One => "one core (taskset -c 0)",
        }
    }

    /// Run `f` with this process (and so everything it starts) on these cores.
    fn run<T>(self, f: impl FnOnce() -> T) -> T {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        use nix::unistd::Pid;
        let all = sched_getaffinity(Pid::from_raw(0)).expect("reading the CPU affinity");
        if let Cores::One = self {
            let mut one = CpuSet::new();
            one.set(0).unwrap();
            sched_setaffinity(Pid::from_raw(0), &one).expect("pinning to CPU 0");
        }
        let result = f();
        sched_setaffinity(Pid::from_raw(0), &all).expect("restoring the CPU affinity");
        result
    }
}

/// Layer `hello` onto the composed real Debian image, next to the floor
/// below. Each round starts from a fresh sysroot with the image deployed;
/// apt-ostree's lists and the .deb are warmed by an install and uninstall
/// first (so the download is excluded), and the timed install is then the
/// same work as the floor's: resolve, dpkg, commit, deploy.
fn minbase_layering_bench(repo: &std::path::Path) {
    let image = "debian/12/x86_64/minimal";
    let deploy = |s: &TestSysroot| {
        s.set_remote(&format!("file://{}", repo.display()), &[]);
        run(s.repo_cmd().args(["pull", REMOTE, image]));
        run(ostree()
            .args(["admin", "deploy", "--os", OSNAME])
            .arg(format!("--sysroot={}", s.path.display()))
            .arg(format!("{REMOTE}:{image}")));
    };
    for cores in [Cores::All, Cores::One] {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let s = TestSysroot::empty();
            deploy(&s);
            run(s.cli().args(["install", "hello"]));
            run(s.cli().args(["uninstall", "hello"]));
            ours.push(cores.run(|| {
                let t = Instant::now();
                run(s.cli().args(["install", "hello"]));
                t.elapsed()
            }));

            let deb = std::fs::read_dir(
                s.path
                    .join("ostree/repo/extensions/apt-ostree/cache/archives"),
            )
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("hello_"))
            })
            .expect("hello in the cache");
            // The same deployments as ours has (two, so that the new one
            // drops the oldest, as ours does): the image deployed twice.
            let f = TestSysroot::empty();
            deploy(&f);
            deploy(&f);
            let base = stdout(
                f.repo_cmd()
                    .args(["rev-parse", &format!("{REMOTE}:{image}")]),
            );
            floor.push(cores.run(|| layering_floor(&f, base.trim(), &deb)));
        }
        layering_rows(
            &format!("install hello, Debian minbase, {}", cores.label()),
            ours,
            floor,
        );
    }
}

fn layering_rows(what: &str, ours: Vec<Duration>, floor: Vec<Duration>) {
    let rounds = ours.len();
    let (ours, floor) = (stats(ours), stats(floor));
    row(
        &format!("{what} (median of {rounds})"),
        &ms(ours.median),
        "overlay + dpkg -i + commit + deploy",
        &ms(floor.median),
    );
    ratio_row(&ours, &floor);
}

/// Layer one small package (from a local apt repository: no download)
/// next to the floor, on all cores and on one.
fn layering_bench() {
    use common::debs::{apt_repository, Deb};
    let repo = tempfile::tempdir().unwrap();
    let deb = Deb::new("bench-tool", "1.0").file("/usr/bin/bench-tool", "#!/bin/sh\necho bench\n");
    apt_repository(repo.path(), std::slice::from_ref(&deb));
    let deb_path = repo.path().join("bench-tool_1.0_all.deb");
    for cores in [Cores::All, Cores::One] {
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let s = TestSysroot::at_v1();
            let d = s.deployments()[0].clone();
            std::fs::write(
                s.deployment_dir(&d.0, d.1)
                    .join("etc/apt/sources.list.d/bench.list"),
                format!("deb [trusted=yes] file:{} ./\n", repo.path().display()),
            )
            .unwrap();
            // Package lists fetched beforehand, as after any earlier transaction.
            run(s.cli().arg("refresh-md"));
            ours.push(cores.run(|| {
                let t = Instant::now();
                run(s.cli().args(["install", "bench-tool"]));
                t.elapsed()
            }));

            let s = TestSysroot::at_v1();
            floor.push(cores.run(|| layering_floor(&s, &base_repo().v1, &deb_path)));
        }
        layering_rows(
            &format!("install 1 package, test image, {}", cores.label()),
            ours,
            floor,
        );
    }
}

/// A repository whose REF moves from v1 to a commit with a few MB more.
fn upgrade_repo(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let base = base_repo();
    let repo = dir.join("repo");
    run(ostree()
        .arg(format!("--repo={}", repo.display()))
        .args(["init", "--mode=archive"]));
    run(ostree().arg(format!("--repo={}", repo.display())).args([
        "pull-local",
        &base.path.display().to_string(),
        &base.v1,
    ]));
    let tree = dir.join("tree");
    run(ostree()
        .arg(format!("--repo={}", repo.display()))
        .args(["checkout", "-U", &base.v1])
        .arg(&tree));
    // 4 MiB that does not compress: a realistic "few MB" update.
    let mut blob = vec![0u8; 4 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::create_dir_all(tree.join("usr/share/bench")).unwrap();
    std::fs::write(tree.join("usr/share/bench/blob"), &blob).unwrap();
    run(ostree()
        .arg(format!("--repo={}", repo.display()))
        .args([
            "commit",
            "--branch",
            REF,
            "--owner-uid=0",
            "--owner-gid=0",
            "--parent",
            &base.v1,
        ])
        .arg(format!("--tree=dir={}", tree.display()))
        .arg("--add-metadata-string=version=12.9"));
    run(ostree()
        .arg(format!("--repo={}", repo.display()))
        .args(["refs", "--create", "unused", &base.v1]));
    let head = stdout(
        ostree()
            .arg(format!("--repo={}", repo.display()))
            .args(["rev-parse", REF]),
    );
    (repo, head.trim().to_string())
}

fn upgrade_bench() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, head) = upgrade_repo(dir.path());
    let http = HttpServer::start(&repo, None);
    let rounds = 5;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let s = TestSysroot::at_v1();
        s.set_remote(&http.url(), &[]);
        let t = Instant::now();
        run(s.cli().arg("upgrade"));
        ours.push(t.elapsed());
        assert_eq!(s.deployments()[0].0, head);

        let s = TestSysroot::at_v1();
        s.set_remote(&http.url(), &[]);
        let t = Instant::now();
        run(s.repo_cmd().args(["pull", REMOTE, REF]));
        run(ostree()
            .args(["admin", "deploy", "--os", OSNAME])
            .arg(format!("--sysroot={}", s.path.display()))
            .arg(format!("{REMOTE}:{REF}")));
        floor.push(t.elapsed());
    }
    let (ours, floor) = (stats(ours), stats(floor));
    row(
        "upgrade, 4 MiB over HTTP (median of 5)",
        &ms(ours.median),
        "`ostree pull` + `ostree admin deploy`",
        &ms(floor.median),
    );
    println!(
        "{:<44} {:>13.1}%",
        "  overhead",
        (ours.median.as_secs_f64() / floor.median.as_secs_f64() - 1.0) * 100.0
    );
}

/// The floor of any layering, done with the stock tools: the same work as
/// `apt-ostree install` without its resolver, sandbox or daemon. A hard-link
/// checkout of `base` is the lower layer of an overlay; `dpkg --install`
/// runs for real on the merged tree (its database in the image's
/// /usr/share/dpkg/database, maintainer scripts chrooted, triggers); the
/// commit is the base tree plus the upper layer (`--tree=ref --tree=dir`);
/// then `ostree admin deploy`, and the scratch directories are removed.
/// Returns how long it took.
fn layering_floor(s: &TestSysroot, base: &str, deb: &std::path::Path) -> Duration {
    let dir = s.path.join("ostree/repo/tmp/bench-floor");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| dir.join(d));
    let t = Instant::now();
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    run(s.repo_cmd().args(["checkout", "-H", base]).arg(&lower));
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ))
        .arg(&merged));
    let installed = Command::new("dpkg")
        .arg(format!("--root={}", merged.display()))
        .arg(format!(
            "--admindir={}/usr/share/dpkg/database",
            merged.display()
        ))
        .arg("--install")
        .arg(deb)
        .output();
    run(Command::new("umount").arg(&merged));
    let installed = installed.expect("running dpkg");
    assert!(
        installed.status.success(),
        "the floor's dpkg --install failed: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let commit = stdout(
        s.repo_cmd()
            .args(["commit", "--branch", "bench/layered"])
            .arg(format!("--tree=ref={base}"))
            .arg(format!("--tree=dir={}", upper.display())),
    );
    run(ostree()
        .args(["admin", "deploy", "--os", OSNAME])
        .arg(format!("--sysroot={}", s.path.display()))
        .arg(commit.trim()));
    // Its scratch removed, as apt-ostree removes its checkout.
    std::fs::remove_dir_all(&dir).unwrap();
    t.elapsed()
}
