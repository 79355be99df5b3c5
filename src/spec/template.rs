//! `{{ name }}` placeholders in steps, env values, templates and service commands.
//!
//! Deliberately tiny: a placeholder is a dotted name, nothing else. Logic belongs in the scripts a
//! stage runs, not in the spec, and a small language is one whose every use can be validated.

/// One `{{ name }}` found in a text: the name and the byte offset of the opening braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub name: String,
    pub offset: usize,
}

/// A malformed placeholder: what is wrong and where (byte offset in the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// Lists the placeholders of `text`, or the first malformed one.
pub fn placeholders(text: &str) -> Result<Vec<Placeholder>, TemplateError> {
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{") {
        let start = rest + open;
        let Some(close) = text[start + 2..].find("}}") else {
            return Err(TemplateError {
                offset: start,
                message: "`{{` is never closed by `}}`".into(),
            });
        };
        let name = text[start + 2..start + 2 + close].trim();
        let valid = !name.is_empty()
            && name.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !valid {
            return Err(TemplateError {
                offset: start,
                message: format!(
                    "`{{{{{name}}}}}` is not a placeholder: write `{{{{ name }}}}` with a var name"
                ),
            });
        }
        found.push(Placeholder {
            name: name.to_string(),
            offset: start,
        });
        rest = start + 2 + close + 2;
    }
    Ok(found)
}

/// Replaces every placeholder with `lookup(name)`. Callers validate names first, so a name the
/// lookup does not know is a bug in the caller, reported as an empty string never happening.
pub fn render(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for placeholder in placeholders(text)? {
        out.push_str(&text[rest..placeholder.offset]);
        let value = lookup(&placeholder.name).ok_or_else(|| TemplateError {
            offset: placeholder.offset,
            message: format!("`{}` is not defined here", placeholder.name),
        })?;
        out.push_str(&value);
        let close = text[placeholder.offset..]
            .find("}}")
            .expect("placeholder was parsed")
            + 2;
        rest = placeholder.offset + close;
    }
    out.push_str(&text[rest..]);
    Ok(out)
}

/// What runtime placeholders (service commands, hooks, readiness checks, flow commands,
/// `[cloud] auth_url`) name: vars, `ports.NAME`, and where the machine is (`root`, `run`).
pub struct RuntimeValues<'a> {
    pub vars: &'a std::collections::BTreeMap<String, String>,
    pub ports: &'a std::collections::BTreeMap<String, u16>,
    /// None where no machine folder is involved (`creds`): `root` and `run` then name nothing.
    pub dirs: Option<(&'a std::path::Path, &'a std::path::Path)>,
}

impl RuntimeValues<'_> {
    pub fn get(&self, name: &str) -> Option<String> {
        match (name, self.dirs) {
            ("root", Some((root, _))) => Some(root.display().to_string()),
            ("run", Some((_, run))) => Some(run.display().to_string()),
            _ => match name.strip_prefix("ports.") {
                Some(port) => self.ports.get(port).map(u16::to_string),
                None => self.vars.get(name).cloned(),
            },
        }
    }

    pub fn render(&self, text: &str) -> Result<String, TemplateError> {
        render(text, |name| self.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_names_and_offsets() {
        let found =
            placeholders("pip install keystone=={{ keystone_version }} {{ports.api1}}").unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "keystone_version");
        assert_eq!(found[0].offset, 22);
        assert_eq!(found[1].name, "ports.api1");
    }

    #[test]
    fn rejects_unclosed_and_empty() {
        assert_eq!(placeholders("a {{ b").unwrap_err().offset, 2);
        assert!(placeholders("{{ }}").is_err());
        assert!(placeholders("{{ a b }}").is_err());
    }

    #[test]
    fn runtime_values_name_vars_ports_and_dirs() {
        let vars = std::collections::BTreeMap::from([("v".to_string(), "1".to_string())]);
        let ports = std::collections::BTreeMap::from([("public".to_string(), 5000u16)]);
        let (root, run) = (
            std::path::Path::new("/m/root"),
            std::path::Path::new("/m/run"),
        );
        let values = RuntimeValues {
            vars: &vars,
            ports: &ports,
            dirs: Some((root, run)),
        };
        assert_eq!(
            values
                .render("{{ v }} :{{ ports.public }} {{ root }} {{ run }}")
                .unwrap(),
            "1 :5000 /m/root /m/run"
        );
        let no_dirs = RuntimeValues {
            vars: &vars,
            ports: &ports,
            dirs: None,
        };
        assert!(no_dirs.render("{{ root }}").is_err());
        assert!(values.render("{{ ports.other }}").is_err());
    }

    #[test]
    fn renders_and_reports_unknown() {
        let lookup = |n: &str| (n == "v").then(|| "1.2".to_string());
        assert_eq!(
            render("x={{v}}; y={{ v }}", lookup).unwrap(),
            "x=1.2; y=1.2"
        );
        assert_eq!(render("{{ w }}", lookup).unwrap_err().offset, 0);
        assert_eq!(
            render("no placeholders", lookup).unwrap(),
            "no placeholders"
        );
    }
}
