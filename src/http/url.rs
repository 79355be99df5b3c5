//! `http://` and `https://` URLs: what envbuild sends requests to, parsed once and refused
//! when they could smuggle anything into a request (a line break, a space, a control byte).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// `scheme://host[:port][/path][?query]`, without credentials or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// Begins with `/`, or is empty (the root); kept as given.
    pub path: String,
    /// After the `?`, when there is one.
    pub query: Option<String>,
}

/// Why a text is not a URL envbuild can send requests to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a URL envbuild can use: {reason}")]
pub struct UrlError {
    /// The text, with control characters escaped.
    pub url: String,
    pub reason: &'static str,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let bad = |reason| UrlError {
            url: text.escape_debug().to_string(),
            reason,
        };
        // Nothing below 0x21 (controls, space) or above 0x7e (DEL, non-ASCII) goes on a request
        // line: a CR or LF there would end the line and start a header of the URL's choosing.
        if text.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(bad(
                "it holds a space, a line break, a control character or a non-ASCII character (percent-encode them)",
            ));
        }
        let (scheme, rest) = match text.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            _ => return Err(bad("it does not start with http:// or https://")),
        };
        if rest.contains('#') {
            return Err(bad("it has a #fragment, which is never sent"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query.to_string())),
            None => (rest, None),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad("it carries credentials, which are not supported"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("its IPv6 address has no closing `]`"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad("its bracketed host is not an IPv6 address"));
                }
                match after {
                    "" => (host, None),
                    _ => (
                        host,
                        Some(after.strip_prefix(':').ok_or_else(|| {
                            bad("something other than :PORT follows its IPv6 address")
                        })?),
                    ),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        if !authority.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(bad(
                "its host holds characters other than letters, digits, `-`, `.` and `_`",
            ));
        }
        let port = match port {
            None => scheme.default_port(),
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| bad("its port is not a number from 1 to 65535"))?,
        };
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
            path: path.to_string(),
            query,
        })
    }

    /// The URL of `relative` below this one's path (one `/` between them), without a query.
    pub fn join(&self, relative: &str) -> Url {
        Url {
            path: format!("{}/{relative}", self.path.trim_end_matches('/')),
            query: None,
            ..self.clone()
        }
    }

    /// What the request line names: the path (at least `/`) and the query.
    pub fn target(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }

    /// `host[:port]` as the `Host` header says it: the port only when it is not the default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )?;
        match &self.query {
            Some(query) => write!(f, "?{query}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_their_parts() {
        let url = Url::parse("http://127.0.0.1:8080/cache/").unwrap();
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port, url.path.as_str()),
            (Scheme::Http, "127.0.0.1", 8080, "/cache/")
        );
        assert_eq!(
            url.join("v1/x.sig").to_string(),
            "http://127.0.0.1:8080/cache/v1/x.sig"
        );
        let url = Url::parse("HTTPS://[::1]:9201/es?refresh=true").unwrap();
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port),
            (Scheme::Https, "::1", 9201)
        );
        assert_eq!(url.target(), "/es?refresh=true");
        assert_eq!(url.authority(), "[::1]:9201");
        assert_eq!(url.to_string(), "https://[::1]:9201/es?refresh=true");
        let url = Url::parse("https://cache.local").unwrap();
        assert_eq!(
            (url.port, url.target(), url.authority()),
            (443, "/".into(), "cache.local".into())
        );
        assert_eq!(Url::parse("http://[::1]").unwrap().port, 80);
    }

    #[test]
    fn urls_that_could_inject_or_mislead_are_refused_with_the_reason() {
        for (text, reason) in [
            ("ftp://x/", "does not start with http"),
            ("x:80/", "does not start with http"),
            ("http://", "no host"),
            ("http://:80/", "no host"),
            ("http://u:p@x/", "credentials"),
            ("http://x:port/", "port"),
            ("http://x:0/", "port"),
            ("http://x:+80/", "port"),
            ("http://x:70000/", "port"),
            ("http://[::1/", "closing `]`"),
            ("http://[nothost]/", "not an IPv6"),
            ("http://[::1]x/", "other than :PORT"),
            ("http://x/a#b", "fragment"),
            ("http://x/a b", "space"),
            ("http://x/a\r\nX-Injected: 1", "line break"),
            ("http://x/\u{7f}", "control"),
            ("http://x/é", "non-ASCII"),
            ("http://x\ty/", "control"),
            ("http://a,b/", "host holds"),
        ] {
            let err = Url::parse(text).unwrap_err();
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
