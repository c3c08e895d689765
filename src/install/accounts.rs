//! The account tables of a converted machine: the machine's entries as
//! they are (its files are owned by their ids, its passwords stay), the
//! image's added for names the machine lacks. An added entry whose id the
//! machine already gives to another name gets a free id instead, and the
//! new /etc's files follow it (a system user must not share a uid with
//! another: sshd's privilege separation with resolved's, say).

use std::collections::{BTreeMap, BTreeSet};

/// One table merged, and the image's ids that changed (old -> new).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    pub renumbered: BTreeMap<u32, u32>,
    pub notes: Vec<String>,
}

/// For an image entry (its fields), another field to change: which, and to what.
pub type Remap<'a> = &'a dyn Fn(&[String]) -> Option<(usize, u32)>;

fn entries(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn id_of(fields: &[String], at: usize) -> Option<u32> {
    fields.get(at).and_then(|f| f.parse().ok())
}

/// Merge `image` into `mine`: by name (the first field); `id_field` holds
/// the numeric id (2 in passwd and group; none in shadow and gshadow).
/// `remap` gives each image entry's other id field (`gid_field`) its new
/// value: the primary group of a passwd entry, found by the group's name.
pub fn merge(mine: &str, image: &str, id_field: Option<usize>, remap: Remap) -> Merged {
    let mine = entries(mine);
    let names: BTreeSet<&str> = mine.iter().map(|e| e[0].as_str()).collect();
    let image = entries(image);
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    if let Some(at) = id_field {
        taken.extend(mine.iter().chain(&image).filter_map(|e| id_of(e, at)));
    }
    let mut merged = Merged::default();
    for e in &mine {
        merged.text.push_str(&e.join(":"));
        merged.text.push('\n');
    }
    let mine_ids: BTreeMap<u32, &str> = id_field
        .map(|at| {
            mine.iter()
                .filter_map(|e| id_of(e, at).map(|i| (i, e[0].as_str())))
                .collect()
        })
        .unwrap_or_default();
    for mut e in image {
        if names.contains(e[0].as_str()) {
            continue;
        }
        if let Some(at) = id_field {
            if let Some(other) = id_of(&e, at).and_then(|i| mine_ids.get(&i).map(|o| (i, *o))) {
                // A free id in the range of the one it had.
                let (old, owner) = other;
                let range = if old < 1000 { 100..1000 } else { 1000..60000 };
                if let Some(new) = range.clone().find(|i| !taken.contains(i)) {
                    taken.insert(new);
                    merged.renumbered.insert(old, new);
                    merged.notes.push(format!(
                        "the image's {} had id {old}, which is this machine's {owner}: it gets {new}",
                        e[0]
                    ));
                    e[at] = new.to_string();
                }
            }
        }
        if let Some((at, value)) = remap(&e) {
            e[at] = value.to_string();
        }
        merged.text.push_str(&e.join(":"));
        merged.text.push('\n');
    }
    merged
}

/// The id (the third field) each name has in a table.
pub fn gid_by_name(group_table: &str) -> BTreeMap<String, u32> {
    entries(group_table)
        .into_iter()
        .filter_map(|e| id_of(&e, 2).map(|g| (e[0].clone(), g)))
        .collect()
}

/// The ids (passwd: uids; group: gids) an image's table gives that the
/// merged table gives the same names differently (old -> new).
pub fn id_changes(image_table: &str, merged_table: &str) -> BTreeMap<u32, u32> {
    let merged = gid_by_name(merged_table);
    entries(image_table)
        .into_iter()
        .filter_map(|e| {
            let old = id_of(&e, 2)?;
            let new = *merged.get(&e[0])?;
            (old != new).then_some((old, new))
        })
        .collect()
}

/// The name of each gid in a group table.
pub fn name_by_gid(group_table: &str) -> BTreeMap<u32, String> {
    entries(group_table)
        .into_iter()
        .filter_map(|e| id_of(&e, 2).map(|g| (g, e[0].clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_entry_on_a_taken_id_gets_a_free_one_and_its_group_follows() {
        let mine_group = "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\nssh:x:101:\n";
        let image_group = "root:x:0:\nsudo:x:27:\nsystemd-resolve:x:101:\npolkitd:x:990:\n";
        let groups = merge(mine_group, image_group, Some(2), &|_| None);
        assert_eq!(
            groups.text,
            "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\nssh:x:101:\nsystemd-resolve:x:100:\npolkitd:x:990:\n"
        );
        assert_eq!(groups.renumbered, BTreeMap::from([(101, 100)]));

        let image_names = name_by_gid(image_group);
        let merged_gids = gid_by_name(&groups.text);
        let mine_passwd =
            "root:x:0:0::/root:/bin/bash\nsshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n";
        let image_passwd =
            "root:x:0:0::/root:/bin/sh\nsystemd-resolve:x:101:101::/:/usr/sbin/nologin\n";
        let users = merge(mine_passwd, image_passwd, Some(2), &|e| {
            let gid = id_of(e, 3)?;
            let name = image_names.get(&gid)?;
            merged_gids.get(name).map(|g| (3, *g))
        });
        assert_eq!(
            users.text,
            "root:x:0:0::/root:/bin/bash\nsshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n\
             systemd-resolve:x:100:100::/:/usr/sbin/nologin\n"
        );
        assert_eq!(users.renumbered, BTreeMap::from([(101, 100)]));
        assert!(
            users.notes[0].contains("this machine's sshd"),
            "{:?}",
            users.notes
        );
    }

    #[test]
    fn shadow_merges_by_name_only() {
        let merged = merge(
            "root:$6$a:19000::::::\nalice:$6$b:19000::::::\n",
            "root:*:20000::::::\npolkitd:!*:20000::::::\n",
            None,
            &|_| None,
        );
        assert_eq!(
            merged.text,
            "root:$6$a:19000::::::\nalice:$6$b:19000::::::\npolkitd:!*:20000::::::\n"
        );
        assert!(merged.renumbered.is_empty());
    }
}
