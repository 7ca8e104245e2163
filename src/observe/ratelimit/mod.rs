//! The quota an API reports, in whichever rate-limit dialect it speaks, read into one
//! [`Window`]: remaining, limit, share used and seconds to reset.
//!
//! Dialects: the IETF draft in its three forms (`RateLimit-Limit`/`-Remaining`/`-Reset`;
//! `RateLimit: limit=, remaining=, reset=`; `RateLimit-Policy` + `RateLimit` structured lists,
//! the policy remembered per source), `X-RateLimit-*` (GitHub's `-Used` and `-Resource`,
//! Intercom, Jira, Pipedrive, Zoom), `X-Rate-Limit-*` (X, Zendesk), HubSpot's burst, secondly
//! and daily windows, Shopify's `used/limit`, Salesforce's `api-usage=used/limit`, Meta's JSON
//! usage headers and `Retry-After` on a 429. Where several windows are reported, the one
//! nearest exhaustion wins.
//!
//! A response's reading is taken whole or not at all: a value that does not parse, a number
//! beyond 2^53, a remaining count above its limit, or a reset or `Retry-After` more than ten
//! years away refuses all that the response says of its quota, with a debug log line, so that
//! the gauges never mix one response's fields with another's.
//!
//! Responses without any of these names cost one byte comparison per header; the integer
//! forms are read without allocating.

use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderMap;
use http::header::HeaderValue;

mod values;

pub use values::retry_after;
use values::{
    MAX_WAIT, MetaUsage, dictionary_form, number, param, policy_quota, reset, split_item,
    used_slash_limit,
};

/// What `remedy explain 429` adds: the headers read and the gauges and alert they feed.
pub const EXPLAIN: &str = "\
Before the 429s: remedy reads the quota each response states, in these dialects:
  - IETF draft: RateLimit-Limit, -Remaining, -Reset; RateLimit: limit=, remaining=, reset=;
    RateLimit-Policy with RateLimit (also Beta-RateLimit), the policy remembered per source
  - X-RateLimit-Limit, -Remaining, -Reset, -Used, -Resource (GitHub, Intercom, Jira,
    Pipedrive, Zoom); X-Rate-Limit-Limit, -Remaining, -Reset and X-Rate-Limit (X, Zendesk)
  - X-HubSpot-RateLimit-Max, -Remaining, -Secondly(-Remaining), -Daily(-Remaining)
  - X-Shopify-Shop-Api-Call-Limit (used/limit), Sforce-Limit-Info (api-usage=used/limit)
  - X-App-Usage, X-Business-Use-Case-Usage, X-Ad-Account-Usage, X-FB-Ads-Insights-Throttle
    (Meta: JSON percentages)
  - Retry-After (seconds or a date) on a 429
The window nearest exhaustion sets, per source, remedy_upstream_ratelimit_remaining,
remedy_upstream_ratelimit_limit, remedy_upstream_ratelimit_used_ratio and
remedy_upstream_ratelimit_reset_seconds. ConnectorNearRateLimit fires while the used ratio is
at or above 0.9 (alerts.overrides.ConnectorNearRateLimit.threshold), before the first 429.
";

/// One quota window as of a response. Each field is what the API stated or what follows
/// from it; `None` when the dialect does not say.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Window {
    /// Requests (or quota units) left.
    pub remaining: Option<f64>,
    /// The size of the quota.
    pub limit: Option<f64>,
    /// Share of the quota used, 0 to 1.
    pub used_ratio: Option<f64>,
    /// Seconds until the quota is restored.
    pub reset_seconds: Option<f64>,
}

impl Window {
    /// Fills in the share used from remaining and limit, and clamps it to [0, 1]. A quota of
    /// 0 is all used: the gauge must say so rather than keep the share an earlier answer gave.
    fn settle(mut self) -> Self {
        if self.used_ratio.is_none()
            && let Some(l) = self.limit
        {
            if l > 0.0
                && let Some(r) = self.remaining
            {
                self.used_ratio = Some(1.0 - r / l);
            } else if l == 0.0 {
                self.used_ratio = Some(1.0);
            }
        }
        if self.remaining.is_none()
            && let (Some(u), Some(l)) = (self.used_ratio, self.limit)
        {
            self.remaining = Some((l * (1.0 - u)).max(0.0));
        }
        self.used_ratio = self.used_ratio.map(|u| u.clamp(0.0, 1.0));
        self
    }

    fn is_empty(&self) -> bool {
        self.remaining.is_none() && self.limit.is_none() && self.used_ratio.is_none()
    }

    /// How near exhaustion: the share used, or 1 for nothing left when the limit is
    /// unknown; windows that say neither rank last.
    fn rank(&self) -> f64 {
        match (self.used_ratio, self.remaining) {
            (Some(u), _) => u,
            (None, Some(r)) if r <= 0.0 => 1.0,
            _ => -1.0,
        }
    }
}

/// How a source's API states `X-RateLimit-Reset` and `X-Rate-Limit-Reset`, when its vendor
/// is known from the upstream's host; otherwise the value's size decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStyle {
    /// Seconds from now, or an epoch time in seconds or milliseconds, by size.
    Guess,
    /// UTC epoch seconds (GitHub, X, Intercom).
    Epoch,
    /// Seconds from now (Pipedrive, Klaviyo).
    Delta,
}

impl ResetStyle {
    /// The style of the vendor that serves `host`.
    pub fn for_host(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let under = |domain: &str| {
            host == domain
                || host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.'))
        };
        if ["github.com", "x.com", "twitter.com", "intercom.io"]
            .iter()
            .any(|d| under(d))
        {
            ResetStyle::Epoch
        } else if ["pipedrive.com", "klaviyo.com"].iter().any(|d| under(d)) {
            ResetStyle::Delta
        } else {
            ResetStyle::Guess
        }
    }
}

/// What a source remembers between responses: the IETF `RateLimit-Policy` it last saw, so
/// a later `RateLimit` without its policy still yields a share used. Kept as the header's
/// text; replaced (one allocation) only when the API announces a different policy.
#[derive(Debug, Default)]
pub struct Policies(Mutex<Option<Box<str>>>);

impl Policies {
    fn remember(&self, policy: &str) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.as_deref() != Some(policy) {
            *held = Some(policy.into());
        }
    }

    /// The quota of the policy named `name` ("" for an unnamed one).
    fn quota(&self, name: &str) -> Option<f64> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        policy_quota(held.as_deref()?, name)
    }
}

/// The header names read: the slots of [`N`], then Meta's usage headers.
const NAMES: [&str; SLOTS + META] = [
    "ratelimit",
    "ratelimit-policy",
    "beta-ratelimit",
    "beta-ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "x-rate-limit",
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-daily",
    "x-hubspot-ratelimit-daily-remaining",
    "x-hubspot-ratelimit-secondly",
    "x-hubspot-ratelimit-secondly-remaining",
    "x-shopify-shop-api-call-limit",
    "sforce-limit-info",
    "retry-after",
    // Meta's usage headers, read together: keep them last.
    "x-app-usage",
    "x-business-use-case-usage",
    "x-ad-account-usage",
    "x-fb-ads-insights-throttle",
];
const SLOTS: usize = N::RetryAfter as usize + 1;
const META: usize = 4;

/// Longer than every name read.
const MAX_LEN: usize = 40;
/// Per name length, the indices (plus one) of the names of that length: a header whose length
/// no name has is passed over after one load.
const BY_LEN: [[u8; 3]; MAX_LEN] = {
    let mut t = [[0u8; 3]; MAX_LEN];
    let mut i = 0;
    while i < NAMES.len() {
        let row = &mut t[NAMES[i].len()];
        let mut j = 0;
        while row[j] != 0 {
            j += 1;
        }
        row[j] = i as u8 + 1;
        i += 1;
    }
    t
};

/// The index in [`NAMES`] of `name`, if it is read.
fn slot_of(name: &str) -> Option<usize> {
    let row = BY_LEN.get(name.len())?;
    row.iter()
        .take_while(|i| **i != 0)
        .map(|i| usize::from(*i) - 1)
        .find(|i| NAMES[*i] == name)
}

#[derive(Clone, Copy)]
#[repr(usize)]
enum N {
    Rl,
    RlPolicy,
    BetaRl,
    BetaRlPolicy,
    RlLimit,
    RlRemaining,
    RlReset,
    XLimit,
    XRemaining,
    XReset,
    XUsed,
    XResource,
    XdLimit,
    XdRemaining,
    XdReset,
    XdZendesk,
    HsMax,
    HsRemaining,
    HsDaily,
    HsDailyRemaining,
    HsSecondly,
    HsSecondlyRemaining,
    Shopify,
    Sforce,
    RetryAfter,
}

/// The first value of each name read, and Meta's usage headers.
#[derive(Default)]
struct Found<'a> {
    slots: [Option<&'a HeaderValue>; SLOTS],
    meta: [Option<&'a HeaderValue>; META],
}

impl<'a> Found<'a> {
    fn collect(headers: &'a HeaderMap) -> Option<Self> {
        let mut found: Option<Found<'a>> = None;
        for (name, value) in headers {
            let Some(slot) = slot_of(name.as_str()) else {
                continue;
            };
            let f = found.get_or_insert_with(Found::default);
            let cell = match slot.checked_sub(SLOTS) {
                Some(meta) => &mut f.meta[meta],
                None => &mut f.slots[slot],
            };
            cell.get_or_insert(value);
        }
        found
    }

    fn get(&self, n: N) -> Option<&'a HeaderValue> {
        self.slots[n as usize]
    }
}

/// What one response said of its quota.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observed {
    /// `Retry-After`, in seconds, whatever the status.
    pub retry_after: Option<f64>,
    /// The window nearest exhaustion, when the response states any.
    pub window: Option<Window>,
}

/// Reads every dialect in `headers` (of a response with `status`). `now` is asked only when
/// the response states a quota, so a response without any reads no clock.
pub fn read(
    headers: &HeaderMap,
    status: u16,
    now: impl FnOnce() -> SystemTime,
    style: ResetStyle,
    policies: &Policies,
    source: &str,
) -> Observed {
    let Some(found) = Found::collect(headers) else {
        return Observed::default();
    };
    let now = now();
    let mut r = Reading {
        found,
        now,
        source,
        best: None,
        refused: false,
    };
    r.ietf(policies);
    r.ietf_fields();
    r.x_ratelimit(style);
    r.x_rate_limit(style);
    r.hubspot();
    r.used_of_limit();
    r.meta();
    let retry = r.value(N::RetryAfter, |s| retry_after(s, now));
    if status == 429
        && let Some(secs) = retry
    {
        r.consider(Window {
            remaining: Some(0.0),
            used_ratio: Some(1.0),
            reset_seconds: Some(secs),
            ..Window::default()
        });
    }
    if r.refused {
        return Observed::default();
    }
    Observed {
        retry_after: retry,
        window: r.best,
    }
}

struct Reading<'a> {
    found: Found<'a>,
    now: SystemTime,
    source: &'a str,
    best: Option<Window>,
    /// A value was refused: the response's whole reading is.
    refused: bool,
}

impl Reading<'_> {
    /// Keeps `w` if it is nearer exhaustion than the best so far; of two equally near, the
    /// one that takes longer to reset.
    fn consider(&mut self, w: Window) {
        let above = matches!((w.remaining, w.limit), (Some(r), Some(l)) if r > l);
        let far = w.reset_seconds.is_some_and(|s| s > MAX_WAIT);
        if above || far {
            tracing::debug!(
                source = self.source,
                window = ?w,
                "ignored a response's rate-limit headers: remaining above the limit, or a \
                 reset more than ten years away"
            );
            self.refused = true;
            return;
        }
        let w = w.settle();
        if w.is_empty() {
            return;
        }
        let better = match &self.best {
            None => true,
            Some(b) => {
                w.rank() > b.rank()
                    || (w.rank() == b.rank()
                        && w.reset_seconds.unwrap_or(0.0) > b.reset_seconds.unwrap_or(0.0))
            }
        };
        if better {
            self.best = Some(w);
        }
    }

    /// The header in slot `n`, read by `parse`; a value that does not parse (or is out of
    /// range) refuses the reading.
    fn value<T>(&mut self, n: N, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let v = self.found.get(n)?;
        let parsed = v.to_str().ok().map(str::trim).and_then(parse);
        if parsed.is_none() {
            self.malformed(NAMES[n as usize], v);
        }
        parsed
    }

    fn malformed(&mut self, name: &str, v: &HeaderValue) {
        tracing::debug!(
            source = self.source,
            header = name,
            value = ?v,
            "ignored a response's rate-limit headers: a value is not a number from 0 to 2^53, \
             or a reset within ten years"
        );
        self.refused = true;
    }

    fn number(&mut self, n: N) -> Option<f64> {
        self.value(n, number)
    }

    /// IETF -07 (`RateLimit: limit=, remaining=, reset=`) and -08 on (`RateLimit` and
    /// `RateLimit-Policy` lists of named policies), also with Jira's `Beta-` prefix.
    fn ietf(&mut self, policies: &Policies) {
        for (list, policy) in [(N::Rl, N::RlPolicy), (N::BetaRl, N::BetaRlPolicy)] {
            if let Some(p) = self.found.get(policy).and_then(|v| v.to_str().ok()) {
                policies.remember(p.trim());
            }
            let Some(v) = self.found.get(list) else {
                continue;
            };
            let Ok(text) = v.to_str() else {
                self.malformed(NAMES[list as usize], v);
                continue;
            };
            if let Some(w) = dictionary_form(text) {
                self.consider(w);
                continue;
            }
            let mut any = false;
            for item in text.split(',') {
                let (name, params) = split_item(item);
                let Some(remaining) = param(params, "r") else {
                    continue;
                };
                any = true;
                self.consider(Window {
                    remaining: Some(remaining),
                    limit: policies.quota(name),
                    reset_seconds: param(params, "t"),
                    ..Window::default()
                });
            }
            if !any {
                self.malformed(NAMES[list as usize], v);
            }
        }
    }

    /// IETF up to -06, Klaviyo, Zendesk: `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds).
    fn ietf_fields(&mut self) {
        let w = Window {
            remaining: self.number(N::RlRemaining),
            limit: self.number(N::RlLimit),
            reset_seconds: self.number(N::RlReset),
            ..Window::default()
        };
        self.consider(w);
    }

    /// `X-RateLimit-*`: GitHub (with `-Used`; `-Resource` marks its epoch reset), Intercom,
    /// Jira (an ISO reset), Pipedrive (seconds), Zoom.
    fn x_ratelimit(&mut self, style: ResetStyle) {
        let limit = self.number(N::XLimit);
        let style = if self.found.get(N::XResource).is_some() {
            ResetStyle::Epoch
        } else {
            style
        };
        let now = self.now;
        let w = Window {
            remaining: self.number(N::XRemaining),
            limit,
            used_ratio: self
                .number(N::XUsed)
                .zip(limit)
                .filter(|(_, l)| *l > 0.0)
                .map(|(u, l)| u / l),
            reset_seconds: self.value(N::XReset, |s| reset(s, style, now)),
        };
        self.consider(w);
    }

    /// `X-Rate-Limit-*` (X, epoch reset) and Zendesk's `X-Rate-Limit` with `-Remaining`.
    fn x_rate_limit(&mut self, style: ResetStyle) {
        let now = self.now;
        let w = Window {
            remaining: self.number(N::XdRemaining),
            limit: self
                .number(N::XdLimit)
                .or_else(|| self.number(N::XdZendesk)),
            reset_seconds: self.value(N::XdReset, |s| reset(s, style, now)),
            ..Window::default()
        };
        self.consider(w);
    }

    /// HubSpot: a burst window (`-Max`, `-Remaining`; `-Interval-Milliseconds` is the
    /// window's length, not a time to reset), and the secondly and daily windows.
    fn hubspot(&mut self) {
        for (limit, remaining) in [
            (N::HsMax, N::HsRemaining),
            (N::HsSecondly, N::HsSecondlyRemaining),
            (N::HsDaily, N::HsDailyRemaining),
        ] {
            let w = Window {
                remaining: self.number(remaining),
                limit: self.number(limit),
                ..Window::default()
            };
            self.consider(w);
        }
    }

    /// Shopify's `X-Shopify-Shop-Api-Call-Limit: 32/40` and Salesforce's
    /// `Sforce-Limit-Info: api-usage=18/5000`: used of limit.
    fn used_of_limit(&mut self) {
        let shopify = self.value(N::Shopify, used_slash_limit);
        let salesforce = self.value(N::Sforce, |s| {
            s.split(';')
                .find_map(|part| part.trim().strip_prefix("api-usage="))
                .and_then(used_slash_limit)
        });
        for (used, limit) in shopify.into_iter().chain(salesforce) {
            self.consider(Window {
                remaining: Some((limit - used).max(0.0)),
                limit: Some(limit),
                used_ratio: (limit > 0.0).then(|| used / limit),
                ..Window::default()
            });
        }
    }

    /// Meta's usage headers: JSON percentages of the app's, the business use case's or the
    /// ad account's limit. The highest percentage of all objects and types is the share
    /// used; `estimated_time_to_regain_access` is in minutes, `reset_time_duration` in
    /// seconds. Read as a quota of 100 percentage points.
    fn meta(&mut self) {
        let mut usage = MetaUsage::default();
        let meta = self.found.meta;
        for (i, v) in meta.iter().enumerate() {
            let Some(v) = v else { continue };
            if usage.read(v.as_bytes()).is_err() {
                self.malformed(NAMES[SLOTS + i], v);
            }
        }
        if let Some(pct) = usage.percent {
            self.consider(Window {
                remaining: Some((100.0 - pct).max(0.0)),
                limit: Some(100.0),
                used_ratio: Some(pct / 100.0),
                reset_seconds: usage.reset_seconds,
            });
        }
    }
}

#[cfg(test)]
mod tests;
