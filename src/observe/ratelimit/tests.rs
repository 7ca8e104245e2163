//! One table per dialect, with the header values of the vendors' documented examples; each
//! names the page it comes from.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

/// 2026-03-02T15:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_463_600)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn read_with(pairs: &[(&str, &str)], status: u16, style: ResetStyle, p: &Policies) -> Window {
    read(&headers(pairs), status, now, style, p, "test")
        .window
        .unwrap_or_else(|| panic!("no window in {pairs:?}"))
}

fn read_one(pairs: &[(&str, &str)]) -> Window {
    read_with(pairs, 200, ResetStyle::Guess, &Policies::default())
}

fn w(remaining: f64, limit: f64, used_ratio: f64, reset_seconds: Option<f64>) -> Window {
    Window {
        remaining: Some(remaining),
        limit: Some(limit),
        used_ratio: Some(used_ratio),
        reset_seconds,
    }
}

fn assert_close(got: Window, want: Window) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-9,
        (a, b) => a == b,
    };
    assert!(
        close(got.remaining, want.remaining)
            && close(got.limit, want.limit)
            && close(got.used_ratio, want.used_ratio)
            && close(got.reset_seconds, want.reset_seconds),
        "got {got:?}, want {want:?}"
    );
}

#[test]
fn a_response_without_quota_headers_reads_as_none() {
    let h = headers(&[
        ("content-type", "application/json"),
        ("x-request-id", "abc"),
        ("server", "nginx"),
    ]);
    assert_eq!(
        read(&h, 200, now, ResetStyle::Guess, &Policies::default(), "t"),
        Observed::default()
    );
}

#[test]
fn ietf_draft_06_fields() {
    // draft-ietf-httpapi-ratelimit-headers-06, section 5 examples.
    assert_close(
        read_one(&[
            ("ratelimit-limit", "100"),
            ("ratelimit-remaining", "50"),
            ("ratelimit-reset", "50"),
        ]),
        w(50.0, 100.0, 0.5, Some(50.0)),
    );
    // "RateLimit-Limit: 10, 10;w=1, 50;w=60": the limit leads the policy list.
    assert_close(
        read_one(&[
            ("ratelimit-limit", "10, 10;w=1, 50;w=60"),
            ("ratelimit-remaining", "1"),
        ]),
        w(1.0, 10.0, 0.9, None),
    );
    // Klaviyo, https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling: reset in
    // seconds.
    assert_close(
        read_one(&[
            ("RateLimit-Limit", "700"),
            ("RateLimit-Remaining", "699"),
            ("RateLimit-Reset", "53"),
        ]),
        w(699.0, 700.0, 1.0 - 699.0 / 700.0, Some(53.0)),
    );
}

#[test]
fn ietf_draft_07_dictionary() {
    // draft-ietf-httpapi-ratelimit-headers-07: "RateLimit: limit=100, remaining=50, reset=5".
    assert_close(
        read_one(&[
            ("ratelimit", "limit=100, remaining=50, reset=5"),
            ("ratelimit-policy", "100;w=10"),
        ]),
        w(50.0, 100.0, 0.5, Some(5.0)),
    );
}

#[test]
fn ietf_structured_lists_remember_the_policy() {
    // Cloudflare, https://developers.cloudflare.com/fundamentals/api/reference/limits/ and
    // draft-ietf-httpapi-ratelimit-headers-08 on.
    let p = Policies::default();
    assert_close(
        read_with(
            &[
                (
                    "ratelimit-policy",
                    "\"burst\";q=100;w=60, \"daily\";q=1000;w=86400",
                ),
                ("ratelimit", "\"burst\";r=50;t=30"),
            ],
            200,
            ResetStyle::Guess,
            &p,
        ),
        w(50.0, 100.0, 0.5, Some(30.0)),
    );
    // A later response carries only RateLimit: the remembered policy gives the quota.
    assert_close(
        read_with(
            &[("ratelimit", "\"daily\";r=100;t=3600")],
            200,
            ResetStyle::Guess,
            &p,
        ),
        w(100.0, 1000.0, 0.9, Some(3600.0)),
    );
}

#[test]
fn ietf_ratelimit_without_any_policy_gives_remaining_and_reset() {
    let got = read_one(&[("ratelimit", "\"default\";r=50;t=30")]);
    assert_eq!(
        got,
        Window {
            remaining: Some(50.0),
            reset_seconds: Some(30.0),
            ..Window::default()
        }
    );
}

#[test]
fn jira_beta_headers_and_iso_reset() {
    // Jira, https://developer.atlassian.com/cloud/jira/platform/rate-limiting/ and the beta
    // headers reported at https://community.developer.atlassian.com/t/2026-point-based-rate-limits/97828
    let p = Policies::default();
    assert_close(
        read_with(
            &[
                (
                    "beta-ratelimit-policy",
                    "\"tenant-app-quota\";q=100100;w=3600",
                ),
                ("beta-ratelimit", "\"tenant-app-quota\";r=17842;t=2107"),
            ],
            200,
            ResetStyle::Guess,
            &p,
        ),
        w(17842.0, 100100.0, 1.0 - 17842.0 / 100100.0, Some(2107.0)),
    );
    // On a 429: X-RateLimit-Reset is an ISO timestamp without seconds.
    assert_close(
        read_one(&[
            ("x-ratelimit-limit", "350"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "2026-03-02T15:04Z"),
        ]),
        w(0.0, 350.0, 1.0, Some(240.0)),
    );
}

#[test]
fn github_epoch_reset_and_used() {
    // https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    let reset = (1_772_463_600 + 1200).to_string();
    let h = [
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4987"),
        ("x-ratelimit-used", "13"),
        ("x-ratelimit-reset", reset.as_str()),
        ("x-ratelimit-resource", "core"),
    ];
    assert_close(read_one(&h), w(4987.0, 5000.0, 13.0 / 5000.0, Some(1200.0)));
}

#[test]
fn pipedrive_seconds_from_now_and_known_vendors_beat_the_guess() {
    // https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting: reset in seconds.
    let h = [
        ("x-ratelimit-limit", "80"),
        ("x-ratelimit-remaining", "79"),
        ("x-ratelimit-reset", "2"),
    ];
    assert_close(read_one(&h), w(79.0, 80.0, 1.0 / 80.0, Some(2.0)));
    // A vendor known to send epoch seconds is read so whatever the size.
    let at = (1_772_463_600 + 60).to_string();
    let epoch = read_with(
        &[("x-rate-limit-remaining", "1"), ("x-rate-limit-reset", &at)],
        200,
        ResetStyle::for_host("api.x.com"),
        &Policies::default(),
    );
    assert_eq!(epoch.reset_seconds, Some(60.0));
    // A vendor known to send seconds from now: a day is a day, where the guess would read a
    // number of that size as seconds too; one past 10^9 would be 31 years, which no window
    // lasts, so that response's reading is refused rather than taken as an epoch time.
    let pipedrive = ResetStyle::for_host("mycompany.pipedrive.com");
    let delta = read_with(
        &[
            ("x-ratelimit-remaining", "1"),
            ("x-ratelimit-reset", "86400"),
        ],
        200,
        pipedrive,
        &Policies::default(),
    );
    assert_eq!(delta.reset_seconds, Some(86_400.0));
    let far = [
        ("x-ratelimit-remaining", "1"),
        ("x-ratelimit-reset", "1500000000"),
    ];
    let refused = read(
        &headers(&far),
        200,
        now,
        pipedrive,
        &Policies::default(),
        "t",
    );
    assert_eq!(refused, Observed::default());
    assert_eq!(ResetStyle::for_host("api.github.com"), ResetStyle::Epoch);
    assert_eq!(ResetStyle::for_host("notgithub.com"), ResetStyle::Guess);
    assert_eq!(ResetStyle::for_host("a.klaviyo.com"), ResetStyle::Delta);
}

#[test]
fn a_reset_given_as_an_http_date_is_read_as_a_date() {
    // The IETF draft's appendix lists HTTP-dates among the forms X-RateLimit-Reset takes.
    let got = read_one(&[
        ("x-ratelimit-remaining", "3"),
        ("x-ratelimit-reset", "Mon, 02 Mar 2026 15:02:00 GMT"),
    ]);
    assert_eq!(got.reset_seconds, Some(120.0));
}

#[test]
fn epoch_milliseconds_are_told_from_seconds_by_size() {
    let ms = ((1_772_463_600u64 + 90) * 1000).to_string();
    let got = read_one(&[("x-ratelimit-remaining", "3"), ("x-ratelimit-reset", &ms)]);
    assert_eq!(got.reset_seconds, Some(90.0));
}

#[test]
fn intercom_and_x_epoch_resets() {
    // https://developers.intercom.com/docs/references/2.17/rest-api/errors/rate-limiting
    let reset = (1_772_463_600 + 10).to_string();
    assert_close(
        read_one(&[
            ("X-RateLimit-Limit", "166"),
            ("X-RateLimit-Remaining", "100"),
            ("X-RateLimit-Reset", &reset),
        ]),
        w(100.0, 166.0, 1.0 - 100.0 / 166.0, Some(10.0)),
    );
    // https://docs.x.com/fundamentals/rate-limits
    let reset = (1_772_463_600 + 900).to_string();
    assert_close(
        read_one(&[
            ("x-rate-limit-limit", "900"),
            ("x-rate-limit-remaining", "847"),
            ("x-rate-limit-reset", &reset),
        ]),
        w(847.0, 900.0, 53.0 / 900.0, Some(900.0)),
    );
}

#[test]
fn zendesk_per_minute_limit() {
    // https://developer.zendesk.com/api-reference/introduction/rate-limits/
    assert_close(
        read_one(&[("X-Rate-Limit", "700"), ("X-Rate-Limit-Remaining", "699")]),
        w(699.0, 700.0, 1.0 / 700.0, None),
    );
}

#[test]
fn hubspot_burst_and_daily_windows_follow_the_nearer() {
    // https://developers.hubspot.com/docs/api/usage-details: Interval-Milliseconds is the
    // window's length, never a reset.
    let burst_near = read_one(&[
        ("X-HubSpot-RateLimit-Daily", "250000"),
        ("X-HubSpot-RateLimit-Daily-Remaining", "200000"),
        ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
        ("X-HubSpot-RateLimit-Max", "100"),
        ("X-HubSpot-RateLimit-Remaining", "5"),
        ("X-HubSpot-RateLimit-Secondly", "10"),
        ("X-HubSpot-RateLimit-Secondly-Remaining", "9"),
    ]);
    assert_close(burst_near, w(5.0, 100.0, 0.95, None));
    let daily_near = read_one(&[
        ("X-HubSpot-RateLimit-Daily", "250000"),
        ("X-HubSpot-RateLimit-Daily-Remaining", "1000"),
        ("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"),
        ("X-HubSpot-RateLimit-Max", "100"),
        ("X-HubSpot-RateLimit-Remaining", "99"),
    ]);
    assert_close(daily_near, w(1000.0, 250000.0, 0.996, None));
}

#[test]
fn shopify_and_salesforce_used_of_limit() {
    // https://shopify.dev/docs/api/admin-rest/usage/rate-limits
    assert_close(
        read_one(&[("X-Shopify-Shop-Api-Call-Limit", "32/40")]),
        w(8.0, 40.0, 0.8, None),
    );
    // https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
    assert_close(
        read_one(&[("Sforce-Limit-Info", "api-usage=18/5000")]),
        w(4982.0, 5000.0, 18.0 / 5000.0, None),
    );
}

#[test]
fn meta_takes_the_highest_percentage_of_all_objects() {
    // https://developers.facebook.com/docs/graph-api/overview/rate-limiting/
    assert_close(
        read_one(&[(
            "x-app-usage",
            r#"{"call_count":28,"total_time":25,"total_cputime":25}"#,
        )]),
        w(72.0, 100.0, 0.28, None),
    );
    // https://developers.facebook.com/docs/marketing-api/overview/rate-limiting: nested per
    // business object, time to regain access in minutes.
    let buc = r#"{"66782684":[{"type":"ads_management","call_count":95,"total_cputime":20,"total_time":20,"estimated_time_to_regain_access":0,"ads_api_access_tier":"standard_access"}],"10153848260347724":[{"type":"ads_insights","call_count":45,"total_cputime":40,"total_time":96,"estimated_time_to_regain_access":3}]}"#;
    assert_close(
        read_one(&[
            ("x-business-use-case-usage", buc),
            (
                "x-ad-account-usage",
                r#"{"acc_id_util_pct":9.67,"reset_time_duration":100,"ads_api_access_tier":"standard_access"}"#,
            ),
        ]),
        w(4.0, 100.0, 0.96, Some(180.0)),
    );
}

/// A quota of 0 states that all of it is used, in every dialect that states a limit: the share
/// is 1, never left unsaid (the gauge would keep an earlier answer's share).
#[test]
fn a_quota_of_zero_is_all_used() {
    for pairs in [
        &[("x-ratelimit-limit", "0"), ("x-ratelimit-remaining", "0")][..],
        &[("ratelimit-limit", "0"), ("ratelimit-remaining", "0")][..],
        &[("x-ratelimit-limit", "0"), ("x-ratelimit-used", "0")][..],
        &[("x-shopify-shop-api-call-limit", "0/0")][..],
    ] {
        let got = read_one(pairs);
        assert_eq!(
            (got.limit, got.used_ratio),
            (Some(0.0), Some(1.0)),
            "{pairs:?}"
        );
    }
}

#[test]
fn retry_after_on_a_429_is_an_exhausted_window() {
    // RFC 9110 section 10.2.3: delay-seconds or an HTTP-date.
    let p = Policies::default();
    let secs = read_with(&[("retry-after", "120")], 429, ResetStyle::Guess, &p);
    assert_eq!((secs.remaining, secs.used_ratio), (Some(0.0), Some(1.0)));
    assert_eq!(secs.reset_seconds, Some(120.0));
    let date = read_with(
        &[("retry-after", "Mon, 02 Mar 2026 15:01:30 GMT")],
        429,
        ResetStyle::Guess,
        &p,
    );
    assert_eq!(date.reset_seconds, Some(90.0));
    // Zoom's daily limit: an ISO date.
    let iso = read_with(
        &[("retry-after", "2026-03-03T00:00:00Z")],
        429,
        ResetStyle::Guess,
        &p,
    );
    assert_eq!(iso.reset_seconds, Some(9.0 * 3600.0));
    // On another status, Retry-After is no quota.
    let h = headers(&[("retry-after", "120")]);
    let on_503 = read(&h, 503, now, ResetStyle::Guess, &p, "t");
    assert_eq!((on_503.retry_after, on_503.window), (Some(120.0), None));
}

/// A response's reading is taken whole or not at all: one value remedy cannot take refuses all
/// that the response says of its quota, so the gauges never mix two responses' fields.
#[test]
fn one_value_remedy_cannot_take_refuses_the_whole_reading() {
    let fine = [
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4000"),
    ];
    assert_close(read_one(&fine), w(4000.0, 5000.0, 0.2, None));
    let nine_thousand =
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_000));
    for bad in [
        ("ratelimit-limit", "lots"),
        ("ratelimit", "\"x\";r=oops"),
        ("x-app-usage", "{not json"),
        ("x-ratelimit-reset", "soon"),
        ("x-rate-limit-remaining", "-3"),
        ("x-shopify-shop-api-call-limit", "32/forty"),
        // Beyond 2^53, and not a finite number at all.
        (
            "ratelimit-remaining",
            "1000000000000000000000000000000000000000",
        ),
        ("x-rate-limit-limit", "inf"),
        // In the year 9999, or 31 years away.
        ("retry-after", nine_thousand.as_str()),
        ("ratelimit-reset", "999999999"),
    ] {
        let mut pairs = fine.to_vec();
        pairs.push(bad);
        let got = read(
            &headers(&pairs),
            429,
            now,
            ResetStyle::Guess,
            &Policies::default(),
            "t",
        );
        assert_eq!(got, Observed::default(), "{bad:?}");
    }
    // Remaining above its own limit: not a quota either.
    let above = [("x-ratelimit-limit", "10"), ("x-ratelimit-remaining", "11")];
    let got = read(
        &headers(&above),
        200,
        now,
        ResetStyle::Guess,
        &Policies::default(),
        "t",
    );
    assert_eq!(got, Observed::default());
    // At the edges: 2^53 and ten years are taken.
    let edge = [
        ("ratelimit-limit", "9007199254740992"),
        ("ratelimit-remaining", "9007199254740992"),
        ("ratelimit-reset", "315000000"),
    ];
    assert_close(
        read_one(&edge),
        w(
            9_007_199_254_740_992.0,
            9_007_199_254_740_992.0,
            0.0,
            Some(315_000_000.0),
        ),
    );
}

#[test]
fn retry_after_reads_both_forms() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(retry_after("120", now), Some(120.0));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    assert_eq!(retry_after(&later, now), Some(90.0));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
    assert_eq!(retry_after(&past, now), Some(0.0));
    assert_eq!(retry_after("soon", now), None);
}

#[test]
fn numbers_read_plain_listed_and_structured() {
    assert_eq!(number("42"), Some(42.0));
    assert_eq!(number("10, 10;w=1"), Some(10.0));
    assert_eq!(number("r=7;w=60"), Some(7.0));
    assert_eq!(number("0.5"), Some(0.5));
    assert_eq!(number("-1"), None);
    assert_eq!(number("1e400"), None);
    assert_eq!(number("x"), None);
}

proptest! {
    /// Whatever a header holds, reading never panics and what it yields is in range.
    #[test]
    fn any_value_of_any_dialect_reads_in_range(
        name in proptest::sample::select(NAMES.to_vec()),
        value in "[ -~]{0,60}",
        other in proptest::sample::select(NAMES.to_vec()),
        other_value in "[0-9a-z=;,\"/:.{}-]{0,40}",
        status in proptest::sample::select(vec![200u16, 429, 503]),
    ) {
        let mut h = HeaderMap::new();
        h.append(HeaderName::from_static(name), HeaderValue::from_str(&value).unwrap());
        h.append(HeaderName::from_static(other), HeaderValue::from_str(&other_value).unwrap());
        let seen = read(&h, status, now, ResetStyle::Guess, &Policies::default(), "t");
        if let Some(w) = seen.window {
            for v in [w.remaining, w.limit, w.reset_seconds].into_iter().flatten() {
                prop_assert!(v.is_finite() && (0.0..=values::MAX_VALUE).contains(&v), "{w:?}");
            }
            prop_assert!(w.reset_seconds.is_none_or(|s| s <= MAX_WAIT), "{w:?}");
            if let (Some(r), Some(l)) = (w.remaining, w.limit) {
                prop_assert!(r <= l, "{w:?}");
            }
            if let Some(u) = w.used_ratio {
                prop_assert!((0.0..=1.0).contains(&u), "{w:?}");
            }
        }
    }
}

#[test]
fn explain_names_every_gauge() {
    for (name, _) in crate::metrics::QUOTA_GAUGES {
        assert!(EXPLAIN.contains(name), "{name}");
    }
}

#[test]
fn every_name_is_found_by_its_length_and_no_other_is() {
    for (i, name) in NAMES.iter().enumerate() {
        assert_eq!(slot_of(name), Some(i), "{name}");
    }
    for other in ["x-request-id", "x-rate-limits", "server", "ratelimit-", ""] {
        assert_eq!(slot_of(other), None, "{other}");
    }
}
