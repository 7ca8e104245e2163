//! Logs name what happened and never a secret, even at debug level.

use crate::support::{Config, Remedy, Upstream, request, source};

#[test]
fn no_secret_reaches_the_logs_at_debug_level() {
    let mut u = Upstream::builder().statuses(&[401]).http();
    let config = Config::new()
        .source(source("api", u.url()).prefix("/api"))
        .source(source("down", "http://127.0.0.1:1").prefix("/down"));
    let remedy = Remedy::start_with_env(config, &[("REMEDY_LOG", "debug")]);
    let secrets = [
        ("Authorization", "Bearer sk-live-AUTHSECRET"),
        ("Proxy-Authorization", "Basic UFJPWFlTRUNSRVQ="),
        ("Cookie", "session=COOKIESECRET"),
    ];
    for path in [
        "/api/401?token=QUERYSECRET&page=2",
        "/down/x?api_key=KEYSECRET",
        "/nowhere?password=PWSECRET",
        "/api/y?jwt=JWTSECRET&client_assertion=ASSERTSECRET&page=3",
    ] {
        request(remedy.proxy, "GET", path, &secrets, b"");
    }
    u.stop();
    remedy.wait_log("\"message\":\"proxied\"");
    remedy.wait_log("token=REDACTED&page=2");
    remedy.wait_log("upstream unreachable");
    remedy.wait_log("/down/x?api_key=REDACTED");
    remedy.wait_log("password=REDACTED");
    remedy.wait_log("jwt=REDACTED&client_assertion=REDACTED&page=3");
    let logs = remedy.logs();
    for secret in [
        "AUTHSECRET",
        "UFJPWFlTRUNSRVQ",
        "COOKIESECRET",
        "QUERYSECRET",
        "KEYSECRET",
        "PWSECRET",
        "JWTSECRET",
        "ASSERTSECRET",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}
