//! Which interfaces a capture follows, from the `--iface` flags: each is a
//! plain name or a pattern ([`crate::glob`]: `*`, `?`).
//!
//! A plain name is held to what a single `--iface NAME` always meant: it
//! must exist when the capture starts, and its removal stops the capture.
//! A pattern may match nothing at start and matches come and go freely.

use crate::glob::{glob, is_pattern};

/// The interfaces to follow: at least one name or pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceSelector {
    names: Vec<String>,
    patterns: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("give at least one interface with --iface NAME or --iface 'PATTERN*'")]
    Empty,
    #[error(
        "'{0}' is not a valid interface name or pattern: at most 15 characters, no '/', space or NUL (wildcards: * and ?, e.g. 'veth*')"
    )]
    Invalid(String),
}

/// The kernel's limit on an interface name, in bytes (IFNAMSIZ - 1).
const MAX_NAME: usize = 15;

impl IfaceSelector {
    /// From the `--iface` values, in order; duplicates are kept once.
    pub fn new<S: AsRef<str>>(flags: &[S]) -> Result<Self, SelectorError> {
        let mut sel = Self {
            names: Vec::new(),
            patterns: Vec::new(),
        };
        for flag in flags {
            let flag = flag.as_ref();
            check(flag)?;
            let list = if is_pattern(flag) {
                &mut sel.patterns
            } else {
                &mut sel.names
            };
            if !list.iter().any(|f| f == flag) {
                list.push(flag.to_owned());
            }
        }
        if sel.names.is_empty() && sel.patterns.is_empty() {
            return Err(SelectorError::Empty);
        }
        Ok(sel)
    }

    /// Whether the interface called `name` is one to follow.
    pub fn matches(&self, name: &str) -> bool {
        self.is_named(name) || self.patterns.iter().any(|p| glob(p, name))
    }

    /// Whether `name` was given as a plain name (see the module doc).
    pub fn is_named(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// The plain names, in the order given.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The flags joined with `,`, for logs and summaries.
    pub fn describe(&self) -> String {
        self.names
            .iter()
            .chain(&self.patterns)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A flag value that could name (or, with wildcards, match) an interface.
fn check(flag: &str) -> Result<(), SelectorError> {
    if flag.is_empty() || flag.len() > MAX_NAME || flag.contains(['/', ' ', '\0']) {
        return Err(SelectorError::Invalid(flag.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns_are_told_apart() {
        let sel = IfaceSelector::new(&["eth0", "veth*", "tun?", "eth0"]).unwrap();
        assert_eq!(sel.names(), ["eth0"]);
        assert_eq!(sel.patterns(), ["veth*", "tun?"]);
        assert_eq!(sel.describe(), "eth0,veth*,tun?");
        for (name, follows) in [
            ("eth0", true),
            ("eth01", false),
            ("veth", true),
            ("vethab12", true),
            ("tun0", true),
            ("tun10", false),
            ("lo", false),
        ] {
            assert_eq!(sel.matches(name), follows, "{name}");
        }
        assert!(sel.is_named("eth0"));
        assert!(!sel.is_named("veth0"));
    }

    #[test]
    fn invalid_values_and_no_value_are_refused() {
        for bad in ["", "a/b", "a b", "waytoolonginterface*"] {
            let err = IfaceSelector::new(&[bad]).unwrap_err();
            assert!(matches!(err, SelectorError::Invalid(_)), "{bad}");
            assert!(err.to_string().contains("veth*"), "{err}");
        }
        let none: [&str; 0] = [];
        assert!(matches!(
            IfaceSelector::new(&none),
            Err(SelectorError::Empty)
        ));
    }
}
