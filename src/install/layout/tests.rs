use super::*;

/// lsblk's tree for a root on LVM on LUKS on the third partition of vdb,
/// as `--inverse --json --output NAME,TYPE,FSTYPE,UUID` prints it.
const LVM_ON_LUKS: &str = r#"{
   "blockdevices": [
      {"name":"vg--os-root", "type":"lvm", "fstype":"ext4", "uuid":"8e1c0a4e-7b1f-4f7e-9c57-0d7d3a1b2c3d",
         "children": [
            {"name":"luks-5f3a", "type":"crypt", "fstype":"LVM2_member", "uuid":"Q3x1-aaaa",
               "children": [
                  {"name":"vdb3", "type":"part", "fstype":"crypto_LUKS", "uuid":"5f3a9d2e-1111-4222-8333-944455556666",
                     "children": [
                        {"name":"vdb", "type":"disk", "fstype":null, "uuid":null}
                     ]
                  }
               ]
            }
         ]
      }
   ]
}"#;

#[test]
fn lvm_on_luks_is_opened_then_activated_then_mounted() {
    let layout = Layout::parse(LVM_ON_LUKS).unwrap();
    assert_eq!(layout.stack, ["lvm", "crypt", "part", "disk"]);
    assert!(layout.encrypted());
    assert_eq!(layout.disks, ["/dev/vdb"]);
    assert_eq!(
        root_kargs(&layout, "8e1c0a4e-7b1f-4f7e-9c57-0d7d3a1b2c3d", None).unwrap(),
        [
            "rd.luks.uuid=5f3a9d2e-1111-4222-8333-944455556666",
            // The same container for initramfs-tools' cryptroot.
            "cryptopts=target=luks-5f3a9d2e-1111-4222-8333-944455556666,\
             source=UUID=5f3a9d2e-1111-4222-8333-944455556666,luks",
            // The volume group "vg-os": LVM doubles the dash in the dm name.
            "rd.lvm.lv=vg-os/root",
            "root=UUID=8e1c0a4e-7b1f-4f7e-9c57-0d7d3a1b2c3d",
        ]
    );
}

#[test]
fn a_raid1_names_its_array_once_and_both_disks() {
    let json = r#"{"blockdevices":[
        {"name":"md0","type":"raid1","fstype":"ext4","uuid":"aaaa","children":[
            {"name":"vda2","type":"part","fstype":"linux_raid_member","uuid":"0e9f1d2c:aa01","children":[
                {"name":"vda","type":"disk","fstype":null,"uuid":null}]},
            {"name":"vdb2","type":"part","fstype":"linux_raid_member","uuid":"0e9f1d2c:aa01","children":[
                {"name":"vdb","type":"disk","fstype":null,"uuid":null}]}
        ]}]}"#;
    let layout = Layout::parse(json).unwrap();
    assert!(!layout.encrypted());
    assert_eq!(layout.disks, ["/dev/vda", "/dev/vdb"]);
    assert_eq!(
        root_kargs(&layout, "aaaa", None).unwrap(),
        ["rd.md.uuid=0e9f1d2c:aa01", "root=UUID=aaaa"]
    );
}

#[test]
fn a_plain_partition_needs_only_root_and_a_btrfs_subvolume_its_flags() {
    let json = r#"{"blockdevices":[{"name":"nvme0n1p2","type":"part","fstype":"btrfs","uuid":"bbbb",
        "children":[{"name":"nvme0n1","type":"disk","fstype":null,"uuid":null}]}]}"#;
    let layout = Layout::parse(json).unwrap();
    assert_eq!(layout.stack, ["part", "disk"]);
    assert_eq!(layout.disks, ["/dev/nvme0n1"]);
    assert_eq!(
        root_kargs(&layout, "bbbb", Some("/")).unwrap(),
        ["root=UUID=bbbb"]
    );
    assert_eq!(
        root_kargs(&layout, "bbbb", Some("/@root")).unwrap(),
        ["root=UUID=bbbb", "rootflags=subvol=@root"]
    );
}

#[test]
fn device_mapper_names_split_as_lvm_makes_them() {
    assert_eq!(
        lvm_names("vg0-root"),
        Some(("vg0".to_string(), "root".to_string()))
    );
    assert_eq!(
        lvm_names("my--vg-my--lv"),
        Some(("my-vg".to_string(), "my-lv".to_string()))
    );
    // Not LVM's: no single dash, or an empty half.
    assert_eq!(lvm_names("luks--x"), None);
    assert_eq!(lvm_names("-root"), None);
}

#[test]
fn nonsense_from_lsblk_is_an_error() {
    assert!(Layout::parse("nonsense").is_err());
    assert!(Layout::parse(r#"{"blockdevices":[]}"#).is_err());
}

#[test]
fn a_crafted_luks_uuid_is_refused_not_put_on_the_command_line() {
    // A header whose "UUID" would add options to cryptopts= and an
    // argument of its own.
    let crafted = LVM_ON_LUKS.replace(
        "5f3a9d2e-1111-4222-8333-944455556666",
        "5f3a,keyscript=/bin/sh init=/bin/sh",
    );
    let err = Layout::parse(&crafted).unwrap_err();
    let refusal = err.downcast_ref::<LayoutError>().expect("a LayoutError");
    assert!(
        matches!(refusal, LayoutError::UnsafeUuid { device, .. } if device == "vdb3"),
        "{refusal}"
    );
    assert!(
        err.to_string().contains("keyscript"),
        "names the value: {err}"
    );
}

#[test]
fn a_root_uuid_or_subvolume_that_would_add_options_is_refused() {
    let layout = Layout::parse(LVM_ON_LUKS).unwrap();
    assert!(matches!(
        root_kargs(&layout, "8e1c rw init=/bin/sh", None),
        Err(LayoutError::UnsafeUuid { .. })
    ));
    assert!(matches!(
        root_kargs(&layout, "", None),
        Err(LayoutError::UnsafeUuid { .. })
    ));
    assert!(matches!(
        root_kargs(&layout, "bbbb", Some("/@root,subvolid=5")),
        Err(LayoutError::UnsafeSubvolume(s)) if s == "@root,subvolid=5"
    ));
}
