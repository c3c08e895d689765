//! The Cockpit page's load: the time from the page's start to the
//! deployments drawn (one GetStatus over a Cockpit channel), against a page
//! in the same Cockpit that shows them the stock way, `ostree admin status`
//! spawned through the bridge with the same administrative access.

use std::path::Path;
use std::time::Duration;

use crate::common::cockpit::{browse_page, Account, CockpitWs, SOCKET};
use crate::common::*;
use crate::{ms, ratio_row, row, stats, Stats};

/// Loads of each page, after a first one that starts the session's bridges.
const LOADS: usize = 20;

fn page_loads(ws: &CockpitWs, admin: &Account, page: &str) -> Stats {
    let shown = browse_page(ws, admin, page, "admin-load", &LOADS.to_string());
    let samples = shown["loads_ms"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}: no loads: {shown}"))
        .iter()
        .map(|v| Duration::from_secs_f64(v.as_f64().unwrap() / 1000.0))
        .collect();
    stats(samples)
}

pub fn bench() {
    let sysroot = TestSysroot::with_two_deployments();
    let _daemon = ActivatedDaemon::start_at(&sysroot.path, 300, Path::new(SOCKET));
    let ws = CockpitWs::start();
    let admin = Account::new("aobench-admin", true);
    admin.add_page(Path::new("tests/cockpit/floor.html"));
    admin.add_page(Path::new("tests/cockpit/floor.js"));
    let ours = page_loads(&ws, &admin, "index.html");
    let floor = page_loads(
        &ws,
        &admin,
        &format!("floor.html?sysroot={}", sysroot.path.display()),
    );
    row(
        "Cockpit page: deployments shown (median)",
        &ms(ours.median),
        "page with `ostree admin status`",
        &ms(floor.median),
    );
    row(
        "Cockpit page: deployments shown (slowest)",
        &ms(ours.max),
        "target",
        "< 300 ms",
    );
    ratio_row(&ours, &floor);
}
