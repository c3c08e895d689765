//! `scripts/bench`: each figure next to its baseline, measured in the same run
//! on the same sysroot. Not a test: it asserts nothing, it reports.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use apt_ostree::protocol::sysroot::{VarlinkClient, VarlinkClientInterface};
use common::*;

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p99: at(0.99),
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
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let s = TestSysroot::with_two_deployments();
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
}
