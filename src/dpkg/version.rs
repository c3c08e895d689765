//! Debian version ordering, as `dpkg --compare-versions` defines it
//! (deb-version(7)): epoch, then upstream version, then revision, each part
//! compared by alternating non-digit runs (where `~` sorts before everything,
//! even the end of the string, and letters sort before other characters) and
//! numeric runs.

use std::cmp::Ordering;

fn split(version: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match version.split_once(':') {
        Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => {
            (e.parse().unwrap_or(0), rest)
        }
        _ => (0, version),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

fn char_order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = char_order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let bc = char_order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Numeric run, compared by value (leading zeros ignored).
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (na, nb) = (&a[si..i], &b[sj..j]);
        let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Compare two Debian version strings.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    /// Each line: A OP B, checked against what `dpkg --compare-versions` says.
    #[test]
    fn matches_dpkg_on_fixture() {
        for line in include_str!("../../tests/fixtures/versions.txt").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let expected = match f[1] {
                "<<" => Less,
                "=" => Equal,
                ">>" => Greater,
                op => panic!("bad op {op}"),
            };
            assert_eq!(dpkg_compare(f[0], f[2]), expected, "dpkg disagrees: {line}");
            assert_eq!(compare_versions(f[0], f[2]), expected, "{line}");
            assert_eq!(compare_versions(f[2], f[0]), expected.reverse(), "{line}");
        }
    }

    /// What `dpkg --compare-versions` says of `a` and `b`.
    fn dpkg_compare(a: &str, b: &str) -> Ordering {
        let holds = |op: &str| {
            std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .expect("dpkg runs")
                .success()
        };
        if holds("lt") {
            Less
        } else if holds("eq") {
            Equal
        } else {
            Greater
        }
    }

    /// Every pair of versions the fixture names, in both orders, as dpkg orders them.
    #[test]
    fn matches_dpkg_on_every_pair() {
        let mut versions: Vec<&str> = include_str!("../../tests/fixtures/versions.txt")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .flat_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                [f[0], f[2]]
            })
            .collect();
        versions.sort();
        versions.dedup();
        for (i, a) in versions.iter().enumerate() {
            for b in &versions[i + 1..] {
                assert_eq!(compare_versions(a, b), dpkg_compare(a, b), "{a} vs {b}");
            }
        }
    }
}
