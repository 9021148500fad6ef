//! Shell-style wildcard matching, shared by the flags that take patterns
//! (`--grpc-method`, `--iface`, `--ignore-header`): `*` stands for any run
//! of characters (none included), `?` for exactly one; every other byte
//! matches itself (header names ASCII case-insensitively). No character
//! classes or alternatives: the names these flags match (method paths,
//! interface names, header names) need none. Greedy with backtracking to
//! the last star: linear in practice, O(pattern × text) at worst.

/// Whether `pattern` has a wildcard (otherwise it matches only itself).
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Whether `text` matches `pattern`.
pub fn glob(pattern: &str, text: &str) -> bool {
    matches_by(pattern.as_bytes(), text.as_bytes(), |p, t| p == t)
}

/// Whether `text` matches `pattern`, letters compared ASCII
/// case-insensitively (header names).
pub fn glob_ignore_ascii_case(pattern: &str, text: &str) -> bool {
    matches_by(pattern.as_bytes(), text.as_bytes(), |p, t| {
        p.eq_ignore_ascii_case(&t)
    })
}

/// The matcher, with `same` deciding whether a pattern byte that is no
/// wildcard matches a text byte.
fn matches_by(p: &[u8], t: &[u8], same: impl Fn(u8, u8) -> bool) -> bool {
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        match p.get(i) {
            Some(b'*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == b'?' || same(c, t[j]) => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p.get(i..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_any_run() {
        for (pattern, text, matches) in [
            ("*", "", true),
            ("*", "/a/b", true),
            ("/a/*", "/a/b", true),
            ("/a/*", "/b/a", false),
            ("*Get", "/x.S/Get", true),
            ("*Get", "/x.S/GetAll", false),
            ("/x.*/Get*", "/x.S/GetAll", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("**", "a", true),
        ] {
            assert_eq!(glob(pattern, text), matches, "{pattern} on {text}");
        }
    }

    #[test]
    fn case_matters_unless_ignored() {
        assert!(!glob("x-b3-*", "X-B3-TraceId"));
        assert!(glob_ignore_ascii_case("x-b3-*", "X-B3-TraceId"));
        assert!(glob_ignore_ascii_case("date", "Date"));
        assert!(!glob_ignore_ascii_case("date", "dates"));
        assert!(glob_ignore_ascii_case("*-id", "X-Request-Id"));
    }

    #[test]
    fn question_marks_match_exactly_one() {
        for (pattern, text, matches) in [
            ("veth?", "veth0", true),
            ("veth?", "veth", false),
            ("veth?", "veth10", false),
            ("veth??*", "veth10", true),
            ("?", "", false),
            ("*?", "a", true),
            ("eth?.*", "eth0.100", true),
        ] {
            assert_eq!(glob(pattern, text), matches, "{pattern} on {text}");
        }
    }

    #[test]
    fn only_wildcards_make_a_pattern() {
        assert!(is_pattern("veth*"));
        assert!(is_pattern("eth?"));
        assert!(!is_pattern("eth0"));
    }
}
