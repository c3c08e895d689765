//! Cockpit in a real browser for the page's test and its benchmark:
//! Debian's cockpit-ws on 127.0.0.1, local accounts, and headless Chromium
//! driven by Selenium (tests/cockpit/browser.py).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{run, wait_until};

/// Where apt-ostreed listens on a real system: the page knows only this path.
pub const SOCKET: &str = "/run/apt-ostree/org.aptostree.Sysroot";

/// A local account for the browser to log in as; removed when dropped.
pub struct Account {
    pub name: String,
    pub password: String,
}

/// Where an administrator's `shutdown` is: a stand-in that records its
/// arguments, first in sudo's PATH, since the test must not restart the machine.
pub fn shutdown_stand_in(name: &str) -> PathBuf {
    PathBuf::from(format!("/home/{name}/.aotest-bin"))
}

impl Account {
    pub fn new(name: &str, admin: bool) -> Account {
        let _ = Command::new("userdel").args(["-r", name]).output();
        let mut useradd = Command::new("useradd");
        useradd.args(["--create-home", "--shell", "/bin/bash"]);
        if admin {
            useradd.args(["--groups", "sudo"]);
            let bin = shutdown_stand_in(name);
            std::fs::write(
                format!("/etc/sudoers.d/{name}"),
                format!(
                    "Defaults:{name} secure_path=\"{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\n\
                     {name} ALL=(ALL) NOPASSWD: ALL\n",
                    bin.display()
                ),
            )
            .unwrap();
        }
        run(useradd.arg(name));
        let password = format!("Pw-{}-{}", name, std::process::id());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success());
        // The page, as the package installs it, in the account's own
        // Cockpit packages (~/.local/share/cockpit): the machine's
        // /usr/share/cockpit stays as it is.
        let pages = PathBuf::from(format!("/home/{name}/.local/share/cockpit/apt-ostree"));
        std::fs::create_dir_all(&pages).unwrap();
        for entry in std::fs::read_dir("cockpit").unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), pages.join(entry.file_name())).unwrap();
        }
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{name}:{name}"))
            .arg(format!("/home/{name}/.local")));
        if admin {
            use std::os::unix::fs::PermissionsExt;
            let bin = shutdown_stand_in(name);
            std::fs::create_dir_all(&bin).unwrap();
            let script = bin.join("shutdown");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\nprintf '%s\\n' \"$(id -u)\" \"$@\" > {}/shutdown.args\n",
                    bin.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Account {
            name: name.to_string(),
            password,
        }
    }
}

impl Account {
    /// Add `file` to the account's copy of the page's package (the
    /// benchmark's baseline page).
    pub fn add_page(&self, file: &Path) {
        let dir = format!("/home/{}/.local/share/cockpit/apt-ostree", self.name);
        std::fs::copy(file, Path::new(&dir).join(file.file_name().unwrap())).unwrap();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // A login leaves the user's session bus and bridge running.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
        let _ = std::fs::remove_file(format!("/etc/sudoers.d/{}", self.name));
    }
}

/// cockpit-ws on 127.0.0.1, without TLS (as behind a local proxy).
pub struct CockpitWs {
    child: Child,
    pub port: u16,
}

impl CockpitWs {
    pub fn start() -> CockpitWs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/lib/cockpit/cockpit-ws")
            .args(["--no-tls", "--address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cockpit-ws (package cockpit-ws; scripts/setup installs it)");
        assert!(wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        CockpitWs { child, port }
    }
}

impl Drop for CockpitWs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Play `scenario` in the browser as `account`; what the page showed.
pub fn browse(ws: &CockpitWs, account: &Account, scenario: &str) -> serde_json::Value {
    browse_with(ws, account, scenario, "")
}

pub fn browse_with(
    ws: &CockpitWs,
    account: &Account,
    scenario: &str,
    argument: &str,
) -> serde_json::Value {
    browse_page(ws, account, "index.html", scenario, argument)
}

/// Play `scenario` on `page` (a file in the account's apt-ostree package
/// directory, with a query string if it takes one).
pub fn browse_page(
    ws: &CockpitWs,
    account: &Account,
    page: &str,
    scenario: &str,
    argument: &str,
) -> serde_json::Value {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../cockpit-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("/usr/bin/python3")
        .arg("tests/cockpit/browser.py")
        .arg(format!(
            "http://127.0.0.1:{}/cockpit/@localhost/apt-ostree/{page}",
            ws.port
        ))
        .args([&account.name, &account.password, scenario])
        .arg(shots.join(format!("{scenario}.png")))
        .arg(argument)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{scenario}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
