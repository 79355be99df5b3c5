//! A flow's probes (`[[flows.NAME.probes]]`): HTTP requests, or programs run once per iteration.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::model::*;
use super::raw::*;
use super::*;
use crate::error::Result;

/// What a probe's rate may be (the spec's `rate`, `test --probe-rate`).
pub const RATE_RANGE: &str =
    "rate is requests (or iterations) per second, above 0 and at most 1000";

/// Whether `hz` is a rate a probe may run at: above 0 and at most 1000.
pub fn is_rate(hz: f64) -> bool {
    hz > 0.0 && hz <= 1000.0
}

/// The keys only an HTTP probe takes, with their spans when set.
fn http_keys(r: &RawProbe) -> Vec<(&'static str, usize)> {
    let mut keys = Vec::new();
    let mut add = |key, span: Option<std::ops::Range<usize>>| {
        if let Some(span) = span {
            keys.push((key, span.start));
        }
    };
    add("url", r.url.as_ref().map(Spanned::span));
    add("method", r.method.as_ref().map(Spanned::span));
    add("headers", r.headers.values().next().map(Spanned::span));
    add("body", r.body.as_ref().map(Spanned::span));
    add("expect", r.expect.as_ref().map(Spanned::span));
    keys
}

impl Loader<'_> {
    /// One probe of a flow whose machine is `machine`.
    pub(super) fn probe(
        &self,
        r: &RawProbe,
        machine: &Machine,
        vars: &BTreeMap<String, Var>,
        secrets: &BTreeMap<String, SecretSpec>,
    ) -> Result<FlowProbe> {
        self.check_name(&r.name, "probe")?;
        let program = match r.kind.as_ref().map(|k| (k.get_ref().as_str(), k)) {
            None | Some(("http", _)) => false,
            Some(("program", _)) => true,
            Some((other, k)) => {
                return self.err(
                    k.span().start,
                    format!("unknown probe kind `{other}`; allowed: http (default), program"),
                );
            }
        };
        let kind = if program {
            self.program_probe(r, machine, vars)?
        } else {
            self.http_probe(r, machine, vars, secrets)?
        };
        let rate_hz = match &r.rate {
            None => 1.0,
            Some(rate) if is_rate(*rate.get_ref()) => *rate.get_ref(),
            Some(rate) => return self.err(rate.span().start, RATE_RANGE),
        };
        let default_timeout = Duration::from_secs(if program { 300 } else { 5 });
        Ok(FlowProbe {
            name: r.name.get_ref().clone(),
            kind,
            rate_hz,
            timeout: self.duration(r.timeout.as_ref(), default_timeout)?,
            max_in_flight: match &r.max_in_flight {
                None => None,
                Some(n) if (1..=1000).contains(n.get_ref()) => Some(*n.get_ref() as usize),
                Some(n) => {
                    return self.err(n.span().start, "max_in_flight is from 1 to 1000");
                }
            },
            machine: machine.name.clone(),
            budget: self.budget(
                r.max_failed_requests.as_ref(),
                r.max_down_time.as_ref(),
                r.min_uptime_pct.as_ref(),
            )?,
        })
    }

    fn program_probe(
        &self,
        r: &RawProbe,
        machine: &Machine,
        vars: &BTreeMap<String, Var>,
    ) -> Result<ProbeKind> {
        if let Some((key, at)) = http_keys(r).first() {
            return self.err(
                *at,
                format!(
                    "`{key}` is a key of HTTP probes; a program probe runs `command` (one iteration per run, one JSON line on stdout)"
                ),
            );
        }
        let Some(command) = &r.command else {
            return self.err(
                r.name.span().start,
                "a program probe needs command = \"...\" (run in the machine root once per iteration)",
            );
        };
        if command.get_ref().trim().is_empty() {
            return self.err(command.span().start, "the command is empty");
        }
        self.check_placeholders(
            command,
            &Scope {
                vars,
                ports: Some(&machine.ports),
                probe_secrets: None,
            },
        )?;
        Ok(ProbeKind::Program {
            command: command.get_ref().clone(),
        })
    }

    fn http_probe(
        &self,
        r: &RawProbe,
        machine: &Machine,
        vars: &BTreeMap<String, Var>,
        secrets: &BTreeMap<String, SecretSpec>,
    ) -> Result<ProbeKind> {
        if let Some(command) = &r.command {
            return self.err(
                command.span().start,
                "`command` is a key of program probes: add kind = \"program\", or give an HTTP probe a url",
            );
        }
        let Some(url) = &r.url else {
            return self.err(
                r.name.span().start,
                "an HTTP probe needs url = \"http://...\" (or kind = \"program\" with a command)",
            );
        };
        let scope = Scope {
            vars,
            ports: Some(&machine.ports),
            probe_secrets: Some(secrets),
        };
        self.check_placeholders(url, &scope)?;
        if !["http://", "https://"]
            .iter()
            .any(|s| url.get_ref().starts_with(s))
        {
            return self.err(
                url.span().start,
                "a probe URL starts with http:// or https://",
            );
        }
        for value in r.headers.values() {
            self.check_placeholders(value, &scope)?;
        }
        if let Some(body) = &r.body {
            self.check_placeholders(body, &scope)?;
        }
        let method = r
            .method
            .as_ref()
            .map_or("GET".to_string(), |m| m.get_ref().to_uppercase());
        if !["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"].contains(&method.as_str()) {
            return self.err(
                r.method.as_ref().unwrap().span().start,
                "method is one of GET, POST, PUT, DELETE, HEAD, PATCH",
            );
        }
        let expect = match &r.expect {
            None => 200,
            Some(s) if (100..=599).contains(s.get_ref()) => *s.get_ref() as u16,
            Some(s) => {
                return self.err(s.span().start, "expect is an HTTP status code (100-599)");
            }
        };
        Ok(ProbeKind::Http(HttpRequest {
            method,
            url: url.get_ref().clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
            body: r.body.as_ref().map(|b| b.get_ref().clone()),
            expect,
        }))
    }
}
