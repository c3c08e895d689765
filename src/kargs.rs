//! Editing kernel command lines, with rpm-ostree's semantics.
//!
//! Deletions apply first (`delete`, then `delete-if-present`), then
//! replacements, then appends (`append`, then `append-if-missing`). `append`
//! adds `KEY[=VALUE]` at the end (keys may repeat, as `console=` does) unless
//! that very argument is there already. `append-if-missing` adds it only when
//! the key is absent. `delete` takes `KEY=VALUE` (that exact argument) or
//! `KEY` (the key, when it has one value); `delete-if-present` the same, every
//! value of a bare KEY, and no error when absent. `replace` takes `KEY=NEW`
//! (a key with one value) or `KEY=OLD=NEW`. Anything else is a typed error
//! naming the argument: nothing half-applies.

use crate::error::Error;

/// A requested change of the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KargsChange {
    pub append: Vec<String>,
    pub delete: Vec<String>,
    pub replace: Vec<String>,
    pub append_if_missing: Vec<String>,
    pub delete_if_present: Vec<String>,
}

fn invalid(argument: &str, reason: &str) -> Error {
    Error::InvalidKernelArgument {
        argument: argument.to_string(),
        reason: reason.to_string(),
    }
}

/// Reject what no kernel command line may contain.
pub fn validate(argument: &str) -> Result<(), Error> {
    if argument.is_empty() {
        return Err(invalid(argument, "empty argument"));
    }
    if argument.chars().any(|c| c.is_control()) {
        return Err(invalid(
            argument,
            "contains a newline, NUL or other control character",
        ));
    }
    if argument.chars().any(char::is_whitespace) && !argument.contains('"') {
        return Err(invalid(argument, "contains whitespace (quote the value)"));
    }
    if argument.starts_with('=') {
        return Err(invalid(argument, "has no key"));
    }
    if argument.starts_with("ostree=") {
        return Err(invalid(argument, "ostree= is managed by ostree itself"));
    }
    Ok(())
}

/// Split a kernel command line as the kernel does: on spaces, except inside
/// double quotes (`foo="a b"` is one argument). libostree splits the same way
/// since 2023, but Debian 12's libostree splits on every space.
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

fn key(argument: &str) -> &str {
    argument.split_once('=').map_or(argument, |(k, _)| k)
}

/// Apply `change` to `current`.
pub fn edit(current: &[String], change: &KargsChange) -> Result<Vec<String>, Error> {
    let KargsChange {
        append,
        delete,
        replace,
        append_if_missing,
        delete_if_present,
    } = change;
    for a in append
        .iter()
        .chain(delete)
        .chain(replace)
        .chain(append_if_missing)
        .chain(delete_if_present)
    {
        validate(a)?;
    }
    let mut args: Vec<String> = current.to_vec();
    for d in delete {
        if d.contains('=') {
            let pos = args
                .iter()
                .position(|a| a == d)
                .ok_or_else(|| invalid(d, "not present"))?;
            args.remove(pos);
        } else {
            let matching: Vec<usize> = (0..args.len()).filter(|&i| key(&args[i]) == d).collect();
            match matching.as_slice() {
                [] => return Err(invalid(d, "not present")),
                [i] => {
                    args.remove(*i);
                }
                _ => {
                    return Err(invalid(
                        d,
                        "has several values; name the one to delete as KEY=VALUE",
                    ))
                }
            }
        }
    }
    for d in delete_if_present {
        if d.contains('=') {
            if let Some(pos) = args.iter().position(|a| a == d) {
                args.remove(pos);
            }
        } else {
            args.retain(|a| key(a) != d);
        }
    }
    for r in replace {
        let Some((k, rest)) = r.split_once('=') else {
            return Err(invalid(r, "expected KEY=VALUE or KEY=OLD=NEW"));
        };
        let matching: Vec<usize> = (0..args.len()).filter(|&i| key(&args[i]) == k).collect();
        // KEY=OLD=NEW names the argument KEY=OLD; when there is no such
        // argument, a value may itself contain '=' (root=UUID=...): KEY=VALUE.
        let old_new = rest.split_once('=').and_then(|(old, new)| {
            let wanted = format!("{k}={old}");
            matching
                .iter()
                .copied()
                .find(|&i| args[i] == wanted)
                .map(|i| (i, new))
        });
        let (index, new_value) = match (old_new, matching.as_slice()) {
            (Some(found), _) => found,
            (None, [i]) => (*i, rest),
            (None, []) => return Err(invalid(r, "not present")),
            (None, _) => return Err(invalid(r, "has several values; use KEY=OLD=NEW")),
        };
        args[index] = format!("{k}={new_value}");
    }
    for a in append {
        if !args.contains(a) {
            args.push(a.clone());
        }
    }
    for a in append_if_missing {
        if !args.iter().any(|x| key(x) == key(a)) {
            args.push(a.clone());
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// The change of the older three-list form.
    fn change(append: &[&str], delete: &[&str], replace: &[&str]) -> KargsChange {
        KargsChange {
            append: v(append),
            delete: v(delete),
            replace: v(replace),
            ..Default::default()
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(
            split_command_line(r#" quiet  foo="a b" console=ttyS0 "#),
            v(&["quiet", r#"foo="a b""#, "console=ttyS0"])
        );
    }

    #[test]
    fn deletes_then_replaces_then_appends() {
        let current = v(&["root=UUID=1", "quiet", "console=tty0", "console=ttyS0"]);
        let out = edit(
            &current,
            &change(&["splash"], &["quiet", "console=tty0"], &["root=UUID=2"]),
        )
        .unwrap();
        assert_eq!(out, v(&["root=UUID=2", "console=ttyS0", "splash"]));
        let out = edit(&current, &change(&[], &[], &["console=ttyS0=ttyS1"])).unwrap();
        assert_eq!(out[3], "console=ttyS1");
    }

    /// Regression: appending an argument that was there duplicated it.
    #[test]
    fn appends_never_duplicate_and_the_if_variants_never_fail() {
        let current = v(&["quiet", "console=tty0"]);
        let out = edit(&current, &change(&["quiet", "console=ttyS0"], &[], &[])).unwrap();
        assert_eq!(out, v(&["quiet", "console=tty0", "console=ttyS0"]));
        let out = edit(
            &current,
            &KargsChange {
                append_if_missing: v(&["console=ttyS1", "splash"]),
                delete_if_present: v(&["absent", "quiet", "console=ttyX"]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out, v(&["console=tty0", "splash"]));
        let out = edit(
            &v(&["console=tty0", "console=ttyS0"]),
            &KargsChange {
                delete_if_present: v(&["console"]),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn refuses_nonsense_and_changes_nothing() {
        let current = v(&["quiet", "console=tty0", "console=ttyS0"]);
        for (append, delete, replace) in [
            (v(&["a\nb"]), v(&[]), v(&[])),
            (v(&["a\0b"]), v(&[]), v(&[])),
            (v(&[""]), v(&[]), v(&[])),
            (v(&["=x"]), v(&[]), v(&[])),
            (v(&["ostree=/x"]), v(&[]), v(&[])),
            (v(&[]), v(&["absent"]), v(&[])),
            (v(&[]), v(&["console"]), v(&[])),
            (v(&[]), v(&[]), v(&["console=x"])),
            (v(&[]), v(&[]), v(&["nokey"])),
            (v(&[]), v(&[]), v(&["absent=a=b"])),
        ] {
            let c = KargsChange {
                append,
                delete,
                replace,
                ..Default::default()
            };
            let e = edit(&current, &c).unwrap_err();
            assert!(matches!(e, Error::InvalidKernelArgument { .. }), "{e}");
        }
    }
}
