//! The FAQ as data: status code → entry (name, meaning, advice, remediation).
//!
//! The built-in catalog is `config/catalog.yaml`, compiled into the binary. A config file's
//! `catalog:` section overrides fields of built-in entries or adds codes. Everything user-facing
//! that speaks of a status code (metric labels, `remedy_faq_info`, alert text, runbooks, the
//! dashboard) is generated from one [`Catalog`], so the texts can never drift apart.

use std::collections::BTreeMap;

/// The remediation label of remedy's own 503 at a source's `max_in_flight`: the FAQ's "try
/// again later" is about the API, not about remedy's own limit.
pub const IN_FLIGHT_KEY: &str = "raise_max_in_flight";

/// The remediation label of remedy's own 503 when the system gave it no file descriptor for
/// the upstream connection: its own limit, never the API's failure.
pub const DESCRIPTORS_KEY: &str = "raise_file_descriptor_limit";

/// The remediation label of what remedy answers when it cannot take a call upstream at all:
/// its alert is `RemedyUpstreamUnreachable`.
pub const UNREACHABLE_KEY: &str = "check_upstream_reachability";

use serde::{Deserialize, Serialize};

const BUILTIN: &str = include_str!("../config/catalog.yaml");

/// `remediation` label value for 1xx–3xx responses.
pub const REMEDIATION_NONE: &str = "none";
/// `remediation` label value for a 4xx/5xx code the catalog does not name.
pub const REMEDIATION_UNLISTED: &str = "unlisted";

/// Which side of the API call a code usually points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Client,
    Server,
}

/// One status code of the FAQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub code: u16,
    /// The reason phrase, e.g. `Too Many Requests`.
    pub name: String,
    /// What the code usually means for a connector.
    pub meaning: String,
    /// The advised actions, each one sentence, in the FAQ's words.
    pub advice: Vec<String>,
    /// The stable key of the advised action; the `remediation` label value.
    pub remediation: String,
    /// The alert that fires for this remediation key.
    pub alert: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
}

impl Entry {
    /// The advice as one paragraph, every sentence word for word.
    pub fn advice_text(&self) -> String {
        self.advice.join(" ")
    }
}

/// A config file's change to the catalog: every field but `code` is optional when the code
/// is already catalogued; a new code must give `name`, `meaning`, `advice` and `remediation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryOverride {
    pub code: u16,
    pub name: Option<String>,
    pub meaning: Option<String>,
    pub advice: Option<Vec<String>>,
    pub remediation: Option<String>,
    /// Alert name for a new remediation key; derived from the key when absent
    /// (`resolve_conflict` → `ConnectorResolveConflict`).
    pub alert: Option<String>,
    pub side: Option<Side>,
}

/// Why an override cannot be applied. The config module adds the key path and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("code {0} is outside 400–599: only error responses carry a remediation")]
    CodeOutOfRange(u16),
    #[error("code {code} is not in the built-in catalog, so `{field}` is required")]
    MissingField { code: u16, field: &'static str },
    #[error(
        "remediation key {0:?} must match [a-z][a-z0-9_]* (it becomes a Prometheus label value)"
    )]
    BadRemediation(String),
    #[error("remediation key {0:?} is reserved")]
    ReservedRemediation(String),
    #[error("alert name {0:?} must match [A-Za-z][A-Za-z0-9]*")]
    BadAlertName(String),
    #[error("advice must hold at least one sentence")]
    EmptyAdvice,
    #[error(
        "remediation {remediation:?} is alerted as {existing:?} by other codes, not {requested:?}"
    )]
    AlertNameConflict {
        remediation: String,
        existing: String,
        requested: String,
    },
}

/// A remediation key with the codes that share it: one alert, one runbook section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remediation<'a> {
    pub key: &'a str,
    pub alert: &'a str,
    pub entries: Vec<&'a Entry>,
}

impl Remediation<'_> {
    pub fn codes(&self) -> Vec<u16> {
        self.entries.iter().map(|e| e.code).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    entries: BTreeMap<u16, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    codes: Vec<Entry>,
}

impl Default for Catalog {
    /// The FAQ as shipped.
    fn default() -> Self {
        Catalog::builtin()
    }
}

impl Catalog {
    /// The FAQ as shipped.
    pub fn builtin() -> Self {
        let file: CatalogFile =
            serde_yaml::from_str(BUILTIN).expect("config/catalog.yaml is valid (checked by tests)");
        Self {
            entries: file.codes.into_iter().map(|e| (e.code, e)).collect(),
        }
    }

    /// The built-in catalog with `overrides` applied in order.
    pub fn with_overrides(overrides: &[EntryOverride]) -> Result<Self, (usize, CatalogError)> {
        let mut catalog = Self::builtin();
        for (i, o) in overrides.iter().enumerate() {
            catalog.apply(o).map_err(|e| (i, e))?;
        }
        Ok(catalog)
    }

    fn apply(&mut self, o: &EntryOverride) -> Result<(), CatalogError> {
        if !(400..=599).contains(&o.code) {
            return Err(CatalogError::CodeOutOfRange(o.code));
        }
        if let Some(r) = &o.remediation {
            check_remediation_key(r)?;
        }
        if let Some(a) = &o.alert {
            check_alert_name(a)?;
        }
        if o.advice.as_ref().is_some_and(|a| a.is_empty()) {
            return Err(CatalogError::EmptyAdvice);
        }
        let entry = match self.entries.remove(&o.code) {
            Some(mut e) => {
                if let Some(v) = &o.name {
                    e.name.clone_from(v);
                }
                if let Some(v) = &o.meaning {
                    e.meaning.clone_from(v);
                }
                if let Some(v) = &o.advice {
                    e.advice.clone_from(v);
                }
                if let Some(v) = &o.remediation
                    && *v != e.remediation
                {
                    e.remediation.clone_from(v);
                    e.alert = self.alert_for(v).unwrap_or_else(|| default_alert_name(v));
                }
                if let Some(v) = o.side {
                    e.side = Some(v);
                }
                if let Some(v) = &o.alert {
                    e.alert.clone_from(v);
                }
                e
            }
            None => {
                let missing = |field| CatalogError::MissingField {
                    code: o.code,
                    field,
                };
                let remediation = o.remediation.clone().ok_or(missing("remediation"))?;
                let alert = o
                    .alert
                    .clone()
                    .or_else(|| self.alert_for(&remediation))
                    .unwrap_or_else(|| default_alert_name(&remediation));
                Entry {
                    code: o.code,
                    name: o.name.clone().ok_or(missing("name"))?,
                    meaning: o.meaning.clone().ok_or(missing("meaning"))?,
                    advice: o.advice.clone().ok_or(missing("advice"))?,
                    remediation,
                    alert,
                    side: o.side.or(Some(if o.code >= 500 {
                        Side::Server
                    } else {
                        Side::Client
                    })),
                }
            }
        };
        if let Some(existing) = self.alert_for(&entry.remediation)
            && existing != entry.alert
        {
            return Err(CatalogError::AlertNameConflict {
                remediation: entry.remediation,
                existing,
                requested: entry.alert,
            });
        }
        self.entries.insert(entry.code, entry);
        Ok(())
    }

    fn alert_for(&self, remediation: &str) -> Option<String> {
        self.entries
            .values()
            .find(|e| e.remediation == remediation)
            .map(|e| e.alert.clone())
    }

    pub fn get(&self, code: u16) -> Option<&Entry> {
        self.entries.get(&code)
    }

    pub fn entries(&self) -> impl ExactSizeIterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `remediation` label value for a status code.
    pub fn remediation_label(&self, code: u16) -> &str {
        match self.entries.get(&code) {
            Some(e) => &e.remediation,
            None if code >= 400 => REMEDIATION_UNLISTED,
            None => REMEDIATION_NONE,
        }
    }

    /// Remediation keys in order of their lowest code, each with its codes.
    pub fn remediations(&self) -> Vec<Remediation<'_>> {
        let mut out: Vec<Remediation<'_>> = Vec::new();
        for e in self.entries.values() {
            match out.iter_mut().find(|r| r.key == e.remediation) {
                Some(r) => r.entries.push(e),
                None => out.push(Remediation {
                    key: &e.remediation,
                    alert: &e.alert,
                    entries: vec![e],
                }),
            }
        }
        out
    }
}

/// `remedy explain CODE`: meaning and advised action, or what remedy counts it as.
pub fn explain(catalog: &Catalog, code: u16) -> Option<String> {
    if !(100..=999).contains(&code) {
        return None;
    }
    Some(match catalog.get(code) {
        Some(e) => {
            let mut s = format!(
                "{} {}\n\nMeaning: {}\n\nAdvised action:\n",
                e.code, e.name, e.meaning
            );
            for a in &e.advice {
                s.push_str(&format!("  - {a}\n"));
            }
            s.push_str(&format!(
                "\nremediation=\"{}\", class=\"{}\", alert {}\n",
                e.remediation,
                class_label(code),
                e.alert
            ));
            if code == 429 {
                s.push('\n');
                s.push_str(crate::observe::ratelimit::EXPLAIN);
            }
            s
        }
        None => format!(
            "{code} is not in the FAQ catalog: remedy counts it as class=\"{}\", remediation=\"{}\".\n",
            class_label(code),
            catalog.remediation_label(code)
        ),
    })
}

/// `remedy explain WHAT`: an HTTP status code, or a gRPC status name, which is explained as the
/// HTTP status it stands for.
pub fn explain_any(catalog: &Catalog, what: &str) -> Option<String> {
    if let Ok(code) = what.trim().parse::<u16>() {
        return explain(catalog, code);
    }
    let status = crate::observe::grpc::Status::named(what.trim())?;
    if status.is_ok() {
        return Some(
            "OK is gRPC status 0: the call succeeded, and remedy counts it as the HTTP 200 the \
             connector received (remediation=\"none\").\n"
                .to_owned(),
        );
    }
    let http = status.http_status();
    let mut s = format!(
        "{name} is gRPC status {n}: a call that ends with it is HTTP 200 to the connector, with \
         the status in its trailers. remedy counts it as the HTTP status {http} that Google's \
         API design guide gives it: remedy_upstream_responses_total{{code=\"200\", \
         remediation=\"{key}\"}} and remedy_upstream_api_errors_total{{api_code=\"{name}\", \
         code=\"{http}\"}}.\n\n",
        name = status.name(),
        n = status.0,
        key = catalog.remediation_label(http),
    );
    s.push_str(&explain(catalog, http)?);
    Some(s)
}

/// `class` label value for a status code: its first digit, as for the five classes HTTP
/// defines, so that a status beyond them (LinkedIn's 999, say) is a class of its own.
pub fn class_label(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        600..=699 => "6xx",
        700..=799 => "7xx",
        800..=899 => "8xx",
        900..=999 => "9xx",
        _ => "5xx",
    }
}

fn check_remediation_key(key: &str) -> Result<(), CatalogError> {
    if key == REMEDIATION_NONE || key == REMEDIATION_UNLISTED {
        return Err(CatalogError::ReservedRemediation(key.to_owned()));
    }
    if is_label_safe(key) {
        Ok(())
    } else {
        Err(CatalogError::BadRemediation(key.to_owned()))
    }
}

fn check_alert_name(name: &str) -> Result<(), CatalogError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(CatalogError::BadAlertName(name.to_owned()))
    }
}

/// `[a-z][a-z0-9_]*`: safe as a Prometheus label value, a YAML key and a Markdown anchor.
pub fn is_label_safe(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `resolve_conflict` → `ConnectorResolveConflict`.
fn default_alert_name(remediation: &str) -> String {
    let mut name = String::from("Connector");
    for word in remediation.split('_').filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name
}

// remedy's own alerts: their names and texts, and the texts of the FAQ's remediation keys
// that the rules, the runbook and the dashboard all use.

pub const UNMATCHED_ALERT: &str = "RemedyUnmatchedRequests";

pub const UNREACHABLE_ALERT: &str = "RemedyUpstreamUnreachable";

pub const RELOAD_ALERT: &str = "RemedyConfigReloadFailed";

pub const IN_FLIGHT_ALERT: &str = "RemedyInFlightLimitReached";

pub const DESCRIPTORS_ALERT: &str = "RemedyOutOfFileDescriptors";

pub const NEAR_RATE_LIMIT_ALERT: &str = "ConnectorNearRateLimit";

pub const HANDSHAKES_ALERT: &str = "RemedyInterceptHandshakesFailing";

/// The remediation key of the FAQ's 429, whose advice `ConnectorNearRateLimit` carries.
pub const RATE_LIMIT_KEY: &str = "reduce_concurrency";

/// remedy's own alerts, each with a remediation key of its own.
pub const OWN_ALERTS: &[&str] = &[
    UNMATCHED_ALERT,
    UNREACHABLE_ALERT,
    IN_FLIGHT_ALERT,
    DESCRIPTORS_ALERT,
    RELOAD_ALERT,
    HANDSHAKES_ALERT,
];

/// The alerts that are not one per remediation key; their names are the keys of
/// `alerts.overrides` besides the remediation keys.
pub const NAMED_ALERTS: &[&str] = &[
    UNMATCHED_ALERT,
    UNREACHABLE_ALERT,
    IN_FLIGHT_ALERT,
    DESCRIPTORS_ALERT,
    RELOAD_ALERT,
    HANDSHAKES_ALERT,
    NEAR_RATE_LIMIT_ALERT,
];

/// Text of remedy's own alerts: (remediation key, meaning, advised action).
pub fn own_alert_text(alert: &str) -> (&'static str, &'static str, &'static str) {
    match alert {
        UNMATCHED_ALERT => (
            "add_source",
            "The connector sends requests that no configured source matches. remedy answers them 404 and never forwards them, so the connector's calls fail.",
            "Add a source whose match.path_prefix or match.hosts covers these requests, or point the connector at an existing source's prefix. remedy's debug log names each refused path.",
        ),
        UNREACHABLE_ALERT => (
            UNREACHABLE_KEY,
            "remedy cannot reach the upstream API: connections are refused, reset, time out, fail TLS or DNS, or the API answers with what remedy cannot pass on (a malformed status line, a head over the source's limits). remedy answers 502 or 504 itself (origin=\"proxy\").",
            "Check egress from the pod (NetworkPolicy, DNS, proxy settings), the source's upstream URL and ca_file, and the timeouts. remedy_upstream_request_errors_total gives the kind of failure; remedy's warn log gives the cause. For kind=\"protocol\", raise the source's max_response_headers or max_response_header_bytes if the API's heads are that large; a malformed status line is the API's to fix.",
        ),
        IN_FLIGHT_ALERT => (
            IN_FLIGHT_KEY,
            "remedy answered 503 itself (origin=\"proxy\", remediation=\"raise_max_in_flight\") because the source already had max_in_flight requests in flight. The API never saw these requests.",
            "Raise the source's max_in_flight in remedy's config, or reduce the connector's concurrency (fewer parallel requests, or fewer runs at once). remedy_upstream_requests_in_flight shows how close the source runs to its cap.",
        ),
        DESCRIPTORS_ALERT => (
            DESCRIPTORS_KEY,
            "remedy answered 503 itself (origin=\"proxy\", remediation=\"raise_file_descriptor_limit\") because the system gave it no file descriptor for the connection to the upstream: remedy ran out of its own, and the API never saw these requests.",
            "Raise the pod's open-files limit (the container runtime's LimitNOFILE; remedy raises its soft limit to the hard one at start and logs both), or lower proxy.max_connections. remedy's start-up log and remedy check-config say how many descriptors proxy.max_connections needs; process_open_fds and process_max_fds show how close remedy runs.",
        ),
        HANDSHAKES_ALERT => (
            "trust_remedy_ca",
            "The connector's TLS handshakes with remedy fail inside the CONNECT tunnels that proxy.intercept opens: the connector does not trust remedy's CA, or asks for another host than its CONNECT named. Its calls are neither made nor counted.",
            "Give the connector remedy's CA, from proxy.intercept.ca_dir, in the variable its HTTP stack reads: REQUESTS_CA_BUNDLE=bundle.pem for Python requests (Airbyte CDK, dlt), SSL_CERT_FILE=bundle.pem for httpx, Go and OpenSSL-based clients, CURL_CA_BUNDLE=bundle.pem for curl, NODE_EXTRA_CA_CERTS=ca.pem for Node, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=bundle.pem for gRPC, a truststore with ca.pem imported for Java; the chart's remedy.connectorEnv and remedy.connectorVolumeMounts set them. A client that pins certificates, or an API that wants a client certificate, belongs in proxy.intercept.tunnel. remedy's warn log names the host and the handshake's error.",
        ),
        _ => (
            "fix_config",
            "The last reload of remedy's config failed; remedy keeps serving with the previous config.",
            "Run remedy check-config on the file (or read remedy's error log, which names the key and line), fix it, and reload again.",
        ),
    }
}

/// `401 Unauthorized`, `500 Internal Server Error, 502 Bad Gateway or 503 Service Unavailable`.
pub fn codes_phrase(r: &Remediation<'_>) -> String {
    let names: Vec<String> = r
        .entries
        .iter()
        .map(|e| format!("{} {}", e.code, e.name))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The FAQ's meaning for the key's codes; prefixed by code when several share the key.
pub fn meaning_text(r: &Remediation<'_>) -> String {
    if r.entries.len() == 1 {
        return r.entries[0].meaning.clone();
    }
    r.entries
        .iter()
        .map(|e| format!("{} {}: {}", e.code, e.name, e.meaning))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The FAQ's advice sentences for the key's codes, word for word, each once.
pub fn advice_sentences<'a>(r: &Remediation<'a>) -> Vec<&'a str> {
    let mut sentences: Vec<&str> = Vec::new();
    for e in &r.entries {
        for a in &e.advice {
            if !sentences.contains(&a.as_str()) {
                sentences.push(a);
            }
        }
    }
    sentences
}

/// The FAQ's advised action for the key as one paragraph.
pub fn advice_text(r: &Remediation<'_>) -> String {
    advice_sentences(r).join(" ")
}

/// What `ConnectorNearRateLimit` means.
pub const NEAR_RATE_LIMIT_MEANING: &str = "The API reports in its rate-limit headers that the source's quota is nearly used up (remedy_upstream_ratelimit_used_ratio). Once it is, the API answers 429 Too Many Requests and the extract is throttled.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_holds_the_faq_codes() {
        let c = Catalog::builtin();
        let codes: Vec<u16> = c.entries().map(|e| e.code).collect();
        assert_eq!(codes, [400, 401, 403, 404, 414, 429, 500, 502, 503, 504]);
        assert_eq!(c.remediation_label(429), "reduce_concurrency");
        assert_eq!(c.get(503).unwrap().alert, "UpstreamServerErrors");
    }

    #[test]
    fn remediation_label_covers_every_class() {
        let c = Catalog::builtin();
        for (code, want) in [
            (101, "none"),
            (200, "none"),
            (304, "none"),
            (401, "check_credentials"),
            (418, "unlisted"),
            (502, "retry_later"),
            (599, "unlisted"),
        ] {
            assert_eq!(c.remediation_label(code), want, "code {code}");
        }
    }

    #[test]
    fn remediations_group_codes_that_share_a_key() {
        let c = Catalog::builtin();
        let rs = c.remediations();
        assert_eq!(rs.len(), 8);
        let retry = rs.iter().find(|r| r.key == "retry_later").unwrap();
        assert_eq!(retry.codes(), [500, 502, 503]);
        assert_eq!(retry.alert, "UpstreamServerErrors");
    }

    #[test]
    fn override_changes_advice_and_keeps_the_rest() {
        let c = Catalog::with_overrides(&[EntryOverride {
            code: 429,
            advice: Some(vec!["Spread the schedules.".into()]),
            ..Default::default()
        }])
        .unwrap();
        let e = c.get(429).unwrap();
        assert_eq!(e.advice, ["Spread the schedules."]);
        assert_eq!(e.remediation, "reduce_concurrency");
        assert_eq!(e.alert, "ConnectorRateLimited");
    }

    #[test]
    fn new_code_gets_a_derived_alert_name() {
        let c = Catalog::with_overrides(&[EntryOverride {
            code: 409,
            name: Some("Conflict".into()),
            meaning: Some("m".into()),
            advice: Some(vec!["a".into()]),
            remediation: Some("resolve_conflict".into()),
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(c.get(409).unwrap().alert, "ConnectorResolveConflict");
        assert_eq!(c.get(409).unwrap().side, Some(Side::Client));
        assert_eq!(c.remediations().len(), 9);
    }

    #[test]
    fn new_code_joining_a_key_takes_its_alert() {
        let c = Catalog::with_overrides(&[EntryOverride {
            code: 408,
            name: Some("Request Timeout".into()),
            meaning: Some("m".into()),
            advice: Some(vec!["a".into()]),
            remediation: Some("retry_later".into()),
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(c.get(408).unwrap().alert, "UpstreamServerErrors");
    }

    #[test]
    fn bad_overrides_are_refused() {
        let cases: Vec<(EntryOverride, CatalogError)> = vec![
            (
                EntryOverride {
                    code: 302,
                    ..Default::default()
                },
                CatalogError::CodeOutOfRange(302),
            ),
            (
                EntryOverride {
                    code: 409,
                    name: Some("Conflict".into()),
                    ..Default::default()
                },
                CatalogError::MissingField {
                    code: 409,
                    field: "remediation",
                },
            ),
            (
                EntryOverride {
                    code: 401,
                    remediation: Some("Check-Creds".into()),
                    ..Default::default()
                },
                CatalogError::BadRemediation("Check-Creds".into()),
            ),
            (
                EntryOverride {
                    code: 401,
                    remediation: Some("unlisted".into()),
                    ..Default::default()
                },
                CatalogError::ReservedRemediation("unlisted".into()),
            ),
            (
                EntryOverride {
                    code: 401,
                    advice: Some(vec![]),
                    ..Default::default()
                },
                CatalogError::EmptyAdvice,
            ),
            (
                EntryOverride {
                    code: 500,
                    alert: Some("Other".into()),
                    ..Default::default()
                },
                CatalogError::AlertNameConflict {
                    remediation: "retry_later".into(),
                    existing: "UpstreamServerErrors".into(),
                    requested: "Other".into(),
                },
            ),
        ];
        for (o, want) in cases {
            assert_eq!(Catalog::with_overrides(&[o]).unwrap_err(), (0, want));
        }
    }

    #[test]
    fn builtin_matches_the_faq_word_for_word() {
        let faq = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/faq/api-error-faq.yaml"),
        );
        // The FAQ lives beside the repository in development and CI; a packaged crate has only
        // its own copy, which the other tests cover.
        let Ok(faq) = faq else { return };
        let faq: serde_yaml::Value = serde_yaml::from_str(&faq).unwrap();
        let c = Catalog::builtin();
        for code in faq["codes"].as_sequence().unwrap() {
            let e = c.get(code["code"].as_u64().unwrap() as u16).unwrap();
            assert_eq!(code["meaning"].as_str().unwrap(), e.meaning);
            assert_eq!(code["remediation"].as_str().unwrap(), e.remediation);
            let advice: Vec<&str> = code["advice"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(advice, e.advice);
        }
    }
}
