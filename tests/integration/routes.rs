//! Which call failed: a source's declared endpoints (`routes`) count each response by the
//! template its path matches, or `other`, so the `route` label stays bounded whatever ids the
//! connector sends, with Python `requests` as the connector.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::{Answer, Config, Remedy, Scrape, Upstream, send, source};

const ROUTES: &str = r#"["/v1/reports/{report_id}", "/act_{account}/insights", "/v1beta/properties/{property}:runReport"]"#;

fn reports(api: &Upstream, routes: &str) -> Config {
    Config::new().source(
        source("reports", api.url())
            .prefix("/api")
            .set("routes", routes),
    )
}

/// The route series of source `reports`: (route, code) -> count.
fn by_route(s: &Scrape) -> BTreeMap<(String, String), f64> {
    s.text
        .lines()
        .filter(|l| l.starts_with("remedy_upstream_route_responses_total{"))
        .filter(|l| l.contains("source=\"reports\""))
        .map(|l| {
            let label = |name: &str| {
                let at = l.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                l[at..at + l[at..].find('"').unwrap()].to_owned()
            };
            let value: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            ((label("route"), label("code")), value)
        })
        .collect()
}

/// 10,000 calls with random ids, some to paths no template names and some answered 404: each
/// is counted once under its template or `other`, never under its path, so the series stay at
/// most the templates and `other` for each code.
#[test]
fn ten_thousand_random_ids_are_counted_by_route_in_bounded_series() {
    let api = Upstream::builder()
        .route("/gone", Answer::status(404))
        .http();
    let remedy = Remedy::start(reports(&api, ROUTES));
    let program = format!(
        r#"
import json, random, requests
random.seed(7)
base = "http://{proxy}/api"
templates = [
    ("/v1/reports/{{report_id}}", lambda i: f"/v1/reports/r{{i}}"),
    ("/act_{{account}}/insights", lambda i: f"/act_{{i}}/insights"),
    ("/v1beta/properties/{{property}}:runReport", lambda i: f"/v1beta/properties/{{i}}:runReport"),
    ("other", lambda i: f"/v2/things/{{i}}/more"),
    ("/v1/reports/{{report_id}}", lambda i: "/v1/reports/gone"),
]
counts = {{}}
with requests.Session() as s:
    for n in range(10000):
        route, path = random.choice(templates)
        r = s.get(base + path(random.randrange(10**12)))
        key = route + " " + str(r.status_code)
        counts[key] = counts.get(key, 0) + 1
print(json.dumps(counts))
"#,
        proxy = remedy.proxy
    );
    let out = Command::new("python3")
        .args(["-c", &program])
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("python3 with requests: run the tests through scripts/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).unwrap();
    remedy.wait_in_flight("reports", 0.0);
    let s = remedy.scrape();
    let counted = by_route(&s);
    let expected: BTreeMap<(String, String), f64> = sent
        .iter()
        .map(|(k, v)| {
            let (route, code) = k.rsplit_once(' ').unwrap();
            ((route.to_owned(), code.to_owned()), *v)
        })
        .collect();
    assert_eq!(counted, expected, "{}", s.text);
    assert_eq!(counted.values().sum::<f64>(), 10_000.0);
    // Three templates and other, two codes at most: never a series per id.
    assert!(counted.len() <= 4 * 2, "{counted:?}");
    // The 404s carry the FAQ's key for 404, as the source's own counter does.
    let gone = expected[&("/v1/reports/{report_id}".to_owned(), "404".to_owned())];
    let line = format!(
        "remedy_upstream_route_responses_total{{code=\"404\",remediation=\"check_resource_availability\",route=\"/v1/reports/{{report_id}}\",source=\"reports\"}} {gone}"
    );
    assert!(s.text.contains(&line), "{line}\n{}", s.text);
}

/// A path remedy refuses (an encoded slash, a dot segment) is never forwarded, so never
/// counted under a route; one that only looks like a template's is `other`.
#[test]
fn encoded_slashes_and_dot_segments_never_count_as_a_route() {
    let api = Upstream::http();
    let remedy = Remedy::start(reports(&api, ROUTES));
    for path in [
        "/api/v1/reports/a%2Fb",
        "/api/v1/reports/../reports/1",
        "/api/v1/reports/%2e%2e",
    ] {
        let out = Command::new("curl")
            .args([
                "-s",
                "--path-as-is",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://{}{path}", remedy.proxy))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "400", "{path}");
    }
    assert_eq!(send(remedy.proxy, "/api/v1/reports/1/2").status, 200);
    let s = remedy.scrape();
    let counted = by_route(&s);
    let other = ("other".to_owned(), "200".to_owned());
    assert_eq!(counted, BTreeMap::from([(other, 1.0)]), "{}", s.text);
    assert_eq!(api.hits(), 1);
}

/// A reload changes the routes: calls after it count under the new templates. A source
/// without routes exports no route series at all.
#[test]
fn a_reload_changes_the_routes_and_a_source_without_routes_pays_nothing() {
    let api = Upstream::http();
    let remedy = Remedy::start(reports(&api, r#"["/v1/reports/{report_id}"]"#));
    send(remedy.proxy, "/api/v2/exports/9");
    remedy.rewrite_config(reports(&api, r#"["/v2/exports/{export_id}"]"#));
    remedy.signal("HUP");
    remedy.wait_log("config reloaded");
    send(remedy.proxy, "/api/v2/exports/10");
    let counted = by_route(&remedy.scrape());
    let count = |route: &str| counted.get(&(route.to_owned(), "200".to_owned())).copied();
    assert_eq!(count("other"), Some(1.0), "{counted:?}");
    assert_eq!(count("/v2/exports/{export_id}"), Some(1.0), "{counted:?}");
    let plain = Remedy::start(Config::new().source(source("plain", api.url()).prefix("/api")));
    send(plain.proxy, "/api/v1/reports/1");
    let s = plain.scrape();
    assert_eq!(s.responses("plain", 200, "none", "upstream"), 1.0);
    assert!(
        !s.text.contains("remedy_upstream_route_responses_total{"),
        "{}",
        s.text
    );
}

/// Every template list in docs/routes.md is one remedy takes.
#[test]
fn the_documented_templates_are_valid() {
    let doc =
        std::fs::read_to_string(crate::support::tools::root().join("docs/routes.md")).unwrap();
    let mut lists = 0;
    for block in doc.split("```yaml").skip(1) {
        let yaml = &block[..block.find("```").unwrap()];
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let routes = match value.get("routes") {
            Some(r) => r,
            None => &value["sources"][0]["routes"],
        };
        let routes: Vec<String> = serde_yaml::from_value(routes.clone()).unwrap();
        assert!(!routes.is_empty(), "{yaml}");
        if let Err((i, why)) = remedy::endpoints::Endpoints::new(&routes) {
            panic!("{}: {why}", routes[i]);
        }
        lists += 1;
    }
    assert_eq!(lists, 8);
}

/// The per-request debug line names the route, never the path and its ids.
#[test]
fn the_debug_line_names_the_route_not_the_path() {
    let api = Upstream::http();
    let remedy = Remedy::start_with_env(reports(&api, ROUTES), &[("REMEDY_LOG", "debug")]);
    send(remedy.proxy, "/api/v1/reports/customer-4711");
    remedy.wait_log("\"message\":\"proxied\"");
    let logs = remedy.logs();
    assert!(
        logs.contains("\"route\":\"/v1/reports/{report_id}\""),
        "{logs}"
    );
    assert!(!logs.contains("customer-4711"), "{logs}");
}
