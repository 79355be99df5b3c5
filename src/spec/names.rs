//! The one rule for names: environments, machines, stages, services, flows, phases, probes,
//! vars, secrets, ports and links. A name becomes a folder (state, runs), part of an entry's
//! folder name (`<key>-<env>-<machine>-<stage>`, which must fit in 255 bytes) and of an
//! environment variable (`ENVBUILD_VAR_NAME`), so it is never a path and never needs quoting.

/// Longest name: an entry folder's name is 64 + 3 + three names, at most 255 bytes.
pub const MAX_LEN: usize = 60;

/// What a valid name looks like, for error messages.
pub const RULE: &str =
    "use lowercase letters, digits, `-` and `_`, starting with a letter, at most 60 characters";

pub fn is_valid(name: &str) -> bool {
    name.len() <= MAX_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The environment variable part of a name: upper case, `-` as `_` (`db-host` -> `DB_HOST`).
/// Two names with the same one would share a variable; the loader refuses that.
pub fn env_suffix(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_words() {
        for good in ["a", "aio-lite", "keystone_2", &"x".repeat(MAX_LEN)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            "../evil",
            "a/b",
            "A",
            "1st",
            "-x",
            "a.b",
            "a b",
            "é",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert_eq!(env_suffix("db-host"), "DB_HOST");
    }
}
