use super::*;

fn machine() -> Machine {
    Machine {
        os_id: "debian".into(),
        os_version: "13".into(),
        root: Mount {
            target: "/".into(),
            source: "/dev/vda2".into(),
            fstype: "ext4".into(),
            uuid: Some("1111".into()),
            options: "rw,relatime".into(),
        },
        boot: None,
        root_stack: vec!["part".into(), "disk".into()],
        firmware: Firmware::Uefi {
            esp: Some("/dev/vda1".into()),
        },
        free: 8 << 30,
        has_ostree: false,
        boot_loader_dir: false,
    }
}

#[test]
fn a_plain_debian_13_on_ext4_can_be_converted() {
    assert_eq!(refusals(&machine(), 2 << 30), vec![]);
    // Debian 12 with a /boot partition of its own, booted through BIOS.
    let mut m = machine();
    m.os_version = "12".into();
    m.firmware = Firmware::Bios;
    m.boot = Some(Mount {
        target: "/boot".into(),
        source: "/dev/vda1".into(),
        fstype: "ext4".into(),
        uuid: None,
        options: String::new(),
    });
    assert_eq!(refusals(&m, 2 << 30), vec![]);
}

#[test]
fn each_layout_it_cannot_handle_is_refused_and_says_what_to_do() {
    type Change = Box<dyn Fn(&mut Machine)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|m| m.os_id = "ubuntu".into()),
            "converts Debian 13 or 12",
        ),
        (
            Box::new(|m| m.os_version = "11".into()),
            "converts Debian 13 or 12",
        ),
        (Box::new(|m| m.has_ostree = true), "apt-ostree rebase"),
        (
            Box::new(|m| m.root.fstype = "btrfs".into()),
            "install-os to-filesystem",
        ),
        (Box::new(|m| m.root.fstype = "zfs".into()), "ext4 and xfs"),
        (
            Box::new(|m| {
                m.root_stack = vec!["lvm".into(), "crypt".into(), "part".into(), "disk".into()]
            }),
            "lvm on crypt on part on disk",
        ),
        (
            Box::new(|m| m.os_version = "12".into()),
            "Debian 12 does not",
        ),
        (
            Box::new(|m| m.boot_loader_dir = true),
            "/boot/loader is a directory",
        ),
        (
            Box::new(|m| m.firmware = Firmware::Uefi { esp: None }),
            "no EFI System partition",
        ),
        (Box::new(|m| m.free = 100 << 20), "100 MiB free"),
        (
            Box::new(|m| {
                m.boot = Some(Mount {
                    target: "/boot".into(),
                    source: "/dev/vda1".into(),
                    fstype: "vfat".into(),
                    uuid: None,
                    options: String::new(),
                })
            }),
            "/boot is vfat",
        ),
    ];
    for (change, expected) in cases {
        let mut m = machine();
        change(&mut m);
        let found = refusals(&m, 2 << 30);
        assert_eq!(found.len(), 1, "{expected}: {found:?}");
        let text = found[0].to_string();
        assert!(text.contains(expected), "{expected}: {text}");
    }
}

#[test]
fn the_root_is_found_as_before_and_the_old_boot_arguments_are_dropped() {
    let kept = kargs_to_keep(
        "BOOT_IMAGE=/boot/vmlinuz-6.12 root=UUID=1111 ro quiet console=ttyS0,115200 \
         rd.lvm.lv=vg/root rootflags=noatime initrd=/initrd.img",
    );
    assert_eq!(
        kept,
        [
            "root=UUID=1111",
            "console=ttyS0,115200",
            "rd.lvm.lv=vg/root",
            "rootflags=noatime",
        ]
    );
    let image = ["quiet".to_string(), "console=tty0".to_string()];
    let extra = ["mitigations=off".to_string(), "quiet".to_string()];
    assert_eq!(
        deployment_kargs(&kept, &image, &extra),
        [
            "root=UUID=1111",
            "rd.lvm.lv=vg/root",
            "rootflags=noatime",
            "quiet",
            "console=tty0",
            "rw",
            "mitigations=off"
        ]
    );
    // The machine's console where the image names none.
    assert_eq!(
        deployment_kargs(&kept, &[], &[]),
        [
            "root=UUID=1111",
            "rd.lvm.lv=vg/root",
            "rootflags=noatime",
            "console=ttyS0,115200",
            "rw"
        ]
    );
}

#[test]
fn os_release_is_read() {
    let text = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nID=debian\n";
    assert_eq!(os_release_field(text, "ID").as_deref(), Some("debian"));
    assert_eq!(os_release_field(text, "VERSION_ID").as_deref(), Some("13"));
    assert_eq!(os_release_field(text, "VERSION"), None);
}
