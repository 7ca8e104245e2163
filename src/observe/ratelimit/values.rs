//! How the dialects write their values: numbers and lists, `used/limit`, resets as dates,
//! epoch times or seconds, IETF structured fields and dictionaries, and Meta's usage JSON.
//! Each is a pure function of the text; a value that does not parse is `None`.

use std::time::SystemTime;

use super::{ResetStyle, Window};

#[derive(Default)]
pub(super) struct MetaUsage {
    pub(super) percent: Option<f64>,
    pub(super) reset_seconds: Option<f64>,
}

impl MetaUsage {
    /// Walks one usage header's JSON into what was found so far.
    pub(super) fn read(&mut self, json: &[u8]) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(json);
        serde::de::DeserializeSeed::deserialize(
            UsageVisitor {
                usage: self,
                key: Key::Other,
            },
            &mut de,
        )
        .and_then(|()| de.end())
    }

    fn number(&mut self, key: Key, n: f64) {
        if !n.is_finite() || n < 0.0 {
            return;
        }
        match key {
            Key::Percent => self.percent = Some(self.percent.map_or(n, |p| p.max(n))),
            Key::RegainMinutes => self.reset(n * 60.0),
            Key::ResetSeconds => self.reset(n),
            Key::Other => {}
        }
    }

    fn reset(&mut self, secs: f64) {
        if !secs.is_finite() {
            return;
        }
        self.reset_seconds = Some(self.reset_seconds.map_or(secs, |r| r.max(secs)));
    }
}

/// What a key of Meta's usage JSON holds.
#[derive(Clone, Copy)]
enum Key {
    /// A percentage of a limit: `call_count`, `total_time`, `total_cputime`,
    /// `acc_id_util_pct`, `app_id_util_pct`.
    Percent,
    /// `estimated_time_to_regain_access`, in minutes.
    RegainMinutes,
    /// `reset_time_duration`, in seconds.
    ResetSeconds,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match k {
                    "call_count" | "total_time" | "total_cputime" | "acc_id_util_pct"
                    | "app_id_util_pct" => Key::Percent,
                    "estimated_time_to_regain_access" => Key::RegainMinutes,
                    "reset_time_duration" => Key::ResetSeconds,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Walks Meta's usage JSON in place, without building it: every number under a key of
/// interest, at any depth, goes into the [`MetaUsage`].
struct UsageVisitor<'u> {
    usage: &'u mut MetaUsage,
    key: Key,
}

impl<'de> serde::de::DeserializeSeed<'de> for UsageVisitor<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UsageVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            map.next_value_seed(UsageVisitor {
                usage: &mut *self.usage,
                key,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(UsageVisitor {
                usage: &mut *self.usage,
                key: Key::Other,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.usage.number(self.key, n as f64);
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.usage.number(self.key, n as f64);
        Ok(())
    }
    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        self.usage.number(self.key, n);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The largest quota value taken: beyond 2^53 a float no longer holds every integer, and no
/// API counts that high.
pub(super) const MAX_VALUE: f64 = 9_007_199_254_740_992.0;

/// The furthest a reset or a `Retry-After` is taken to be: beyond it, a value is a mistake
/// (a date in the year 9999, milliseconds read as seconds), not a quota.
pub(super) const MAX_WAIT: f64 = 10.0 * 365.25 * 24.0 * 3600.0;

/// A number from 0 to [`MAX_VALUE`]; the leading one of a list (`10, 10;w=1` reads as 10),
/// and the IETF parameter form `r=7;w=60`.
pub(super) fn number(s: &str) -> Option<f64> {
    let s = s.strip_prefix("r=").unwrap_or(s);
    let s = s.split([',', ';']).next()?.trim();
    let n = match s.parse::<u64>() {
        Ok(n) => n as f64,
        Err(_) => s.parse::<f64>().ok()?,
    };
    (n.is_finite() && (0.0..=MAX_VALUE).contains(&n)).then_some(n)
}

/// `32/40` as (32, 40).
pub(super) fn used_slash_limit(s: &str) -> Option<(f64, f64)> {
    let (used, limit) = s.trim().split_once('/')?;
    Some((number(used)?, number(limit)?))
}

/// A reset as seconds from `now`: an ISO date (Jira's `2026-03-02T15:04Z`), an HTTP-date, or
/// a number read as `style` says. Times in the past are 0; more than [`MAX_WAIT`] away, none.
pub(super) fn reset(s: &str, style: ResetStyle, now: SystemTime) -> Option<f64> {
    reset_any(s, style, now).filter(|secs| *secs <= MAX_WAIT)
}

fn reset_any(s: &str, style: ResetStyle, now: SystemTime) -> Option<f64> {
    if !s.starts_with(|c: char| c.is_ascii_digit()) || s.contains('T') {
        let at = iso_date(s).or_else(|| httpdate::parse_http_date(s).ok())?;
        return Some(seconds_until(at, now));
    }
    let n = number(s)?;
    let epoch = |secs: f64| {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (secs - now).max(0.0)
    };
    Some(match style {
        ResetStyle::Delta => n,
        ResetStyle::Epoch => epoch(n),
        // The IETF draft's appendix: resets are sent as seconds, epoch seconds and epoch
        // milliseconds. No window lasts 30 years, so the size tells them apart.
        ResetStyle::Guess if n > 1e12 => epoch(n / 1000.0),
        ResetStyle::Guess if n > 1e9 => epoch(n),
        ResetStyle::Guess => n,
    })
}

/// `Retry-After` as seconds from now: delay-seconds, an HTTP-date, or (Zoom's daily limit) an
/// ISO date; none when it is more than [`MAX_WAIT`] away.
pub fn retry_after(s: &str, now: SystemTime) -> Option<f64> {
    retry_after_any(s, now).filter(|secs| *secs <= MAX_WAIT)
}

fn retry_after_any(s: &str, now: SystemTime) -> Option<f64> {
    if let Ok(secs) = s.parse::<u64>() {
        return Some(secs as f64);
    }
    if let Ok(at) = httpdate::parse_http_date(s) {
        return Some(seconds_until(at, now));
    }
    Some(seconds_until(iso_date(s)?, now))
}

pub(super) fn seconds_until(at: SystemTime, now: SystemTime) -> f64 {
    at.duration_since(now).map_or(0.0, |d| d.as_secs() as f64)
}

/// An ISO 8601 UTC time, with or without seconds: `2026-03-02T15:04Z`,
/// `2020-05-31T00:00:00Z`, `2020-05-31T00:00:00.5Z`.
pub(super) fn iso_date(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    if s.len() == "2026-03-02T15:04".len() {
        // Without seconds: humantime wants them.
        let mut full = [0u8; 19];
        full[..16].copy_from_slice(s.as_bytes());
        full[16..].copy_from_slice(b":00");
        return humantime::parse_rfc3339_weak(std::str::from_utf8(&full).ok()?).ok();
    }
    humantime::parse_rfc3339_weak(s).ok()
}

/// `-07`'s dictionary: `limit=100, remaining=50, reset=5`.
pub(super) fn dictionary_form(s: &str) -> Option<Window> {
    let mut w = Window::default();
    for member in s.split(',') {
        let (k, v) = member.trim().split_once('=')?;
        let n = Some(number(v)?);
        match k.trim() {
            "limit" => w.limit = n,
            "remaining" => w.remaining = n,
            "reset" => w.reset_seconds = n,
            _ => return None,
        }
    }
    (!w.is_empty()).then_some(w)
}

/// A structured-field list item, `"burst";r=50;t=30`, as its name (unquoted; "" when the
/// item is a bare quota, as in `100;w=10`) and its parameters.
pub(super) fn split_item(item: &str) -> (&str, &str) {
    let item = item.trim();
    let (name, params) = item.split_once(';').unwrap_or((item, ""));
    let name = name.trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(if number(name).is_some() { "" } else { name });
    (name, params)
}

/// The numeric parameter `key` of `;`-separated parameters.
pub(super) fn param(params: &str, key: &str) -> Option<f64> {
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == key).then(|| number(v)).flatten()
    })
}

/// The quota `q` of the policy `name` in a `RateLimit-Policy` value; an unnamed policy
/// (`100;w=10`) gives its leading number.
pub(super) fn policy_quota(policy: &str, name: &str) -> Option<f64> {
    policy.split(',').find_map(|item| {
        let (n, params) = split_item(item);
        if n != name {
            return None;
        }
        param(params, "q").or_else(|| number(item.trim()))
    })
}
