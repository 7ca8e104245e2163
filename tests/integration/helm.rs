//! The chart and the image, checked with the real tools: helm lint and template,
//! kubernetes-validate, the operator resources' schemas, promtool, remedy check-config,
//! hadolint and yamllint. The tools come from scripts/install-tools.

use std::path::{Path, PathBuf};

use crate::support::tools::{must, root, run};

fn examples() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("helm/remedy/examples"))
        .unwrap()
        .map(|e| {
            format!(
                "helm/remedy/examples/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3);
    files
}

/// `helm template` for a Kubernetes version, with the operator's API available.
fn template(kube: &str, values: &[&str]) -> String {
    let mut args = vec![
        "template",
        "t",
        "helm/remedy",
        "--kube-version",
        kube,
        "--api-versions",
        "monitoring.coreos.com/v1",
    ];
    for v in values {
        args.extend(["-f", v]);
    }
    must("helm", &args)
}

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn chart_lints_strictly_with_default_and_every_example_values() {
    must("helm", &["lint", "--strict", "helm/remedy"]);
    for f in examples() {
        must("helm", &["lint", "--strict", "helm/remedy", "-f", &f]);
    }
}

#[test]
fn rendered_manifests_validate_for_kubernetes_1_28_and_1_30() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("1.28.0", "helm/remedy/examples/classic-sidecar.yaml"),
        ("1.30.0", "helm/remedy/examples/classic-sidecar.yaml"),
        ("1.30.0", "helm/remedy/examples/native-sidecar.yaml"),
        ("1.30.0", "helm/remedy/examples/servicemonitor.yaml"),
        ("1.30.0", "helm/remedy/examples/intercept.yaml"),
    ];
    for (kube, values) in cases {
        let text = template(kube, &[values]);
        let path = write(dir.path(), "rendered.yaml", &text);
        must(
            "kubernetes-validate",
            &["--strict", "-k", kube, "--quiet", path.to_str().unwrap()],
        );
        let docs = documents(&text);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        if values.ends_with("native-sidecar.yaml") {
            let pod = &docs.iter().find(|d| d["kind"] == "CronJob").unwrap()["spec"]["jobTemplate"]
                ["spec"]["template"]["spec"];
            assert_eq!(pod["initContainers"][0]["name"], "remedy");
            assert_eq!(pod["initContainers"][0]["restartPolicy"], "Always");
            assert_eq!(pod["containers"].as_sequence().unwrap().len(), 1);
        } else if values.ends_with("classic-sidecar.yaml") {
            let pod = &docs.iter().find(|d| d["kind"] == "CronJob").unwrap()["spec"]["jobTemplate"]
                ["spec"]["template"]["spec"];
            assert!(pod["initContainers"].is_null());
            assert_eq!(pod["containers"][0]["name"], "remedy");
        }
        assert!(
            kinds.contains(&"ConfigMap") && kinds.contains(&"PrometheusRule"),
            "{kinds:?}"
        );
    }
}

#[test]
fn native_sidecar_on_an_old_cluster_is_refused_with_the_reason() {
    let (ok, out) = run(
        "helm",
        &[
            "template",
            "t",
            "helm/remedy",
            "--kube-version",
            "1.28.0",
            "-f",
            "helm/remedy/examples/native-sidecar.yaml",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("sidecar.native needs Kubernetes 1.29 or newer"),
        "{out}"
    );
}

#[test]
fn operator_resources_match_their_schemas_and_rules_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = template("1.30.0", &["helm/remedy/examples/native-sidecar.yaml"]);
    text.push_str("\n---\n");
    text.push_str(&template(
        "1.30.0",
        &["helm/remedy/examples/servicemonitor.yaml"],
    ));
    let mut checked = Vec::new();
    for (i, doc) in documents(&text).into_iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or("").to_owned();
        let schema = match kind.as_str() {
            "PodMonitor" => "podmonitor",
            "ServiceMonitor" => "servicemonitor",
            "PrometheusRule" => "prometheusrule",
            _ => continue,
        };
        let json = serde_json::to_string(&doc).unwrap();
        let path = write(dir.path(), &format!("doc{i}.json"), &json);
        must(
            "check-jsonschema",
            &[
                "--schemafile",
                &format!("tests/schemas/{schema}.schema.json"),
                path.to_str().unwrap(),
            ],
        );
        if kind == "PrometheusRule" {
            let rules = serde_yaml::to_string(&doc["spec"]).unwrap();
            let path = write(dir.path(), &format!("rules{i}.yaml"), &rules);
            let out = must("promtool", &["check", "rules", path.to_str().unwrap()]);
            assert!(out.contains("SUCCESS: 36 rules found"), "{out}");
        }
        checked.push(kind);
    }
    for kind in ["PodMonitor", "ServiceMonitor", "PrometheusRule"] {
        assert!(
            checked.iter().any(|k| k == kind),
            "no {kind} rendered: {checked:?}"
        );
    }
}

#[test]
fn rendered_remedy_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for values in [
        None,
        Some("helm/remedy/examples/servicemonitor.yaml"),
        Some("helm/remedy/examples/intercept.yaml"),
    ] {
        let text = template("1.30.0", values.as_slice());
        let cm = documents(&text)
            .into_iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["remedy.yaml"].is_string())
            .expect("the remedy.yaml ConfigMap");
        let path = write(
            dir.path(),
            "remedy.yaml",
            cm["data"]["remedy.yaml"].as_str().unwrap(),
        );
        let out = must(
            crate::support::launcher::binary(),
            &["check-config", "--config", path.to_str().unwrap()],
        );
        assert!(out.contains("valid"), "{out}");
    }
}

/// `helm template` of the chart with `--set values`.
fn template_with(values: &str) -> String {
    must("helm", &["template", "t", "helm/remedy", "--set", values])
}

/// The manifests for Kubernetes 1.30 with `examples/NAME.yaml`, looked up by kind.
fn example(name: &str) -> impl Fn(&str) -> serde_yaml::Value {
    let docs = documents(&template(
        "1.30.0",
        &[&format!("helm/remedy/examples/{name}.yaml")],
    ));
    move |kind| docs.iter().find(|d| d["kind"] == kind).unwrap().clone()
}

#[test]
fn example_cronjob_waits_for_its_final_scrape_and_names_its_extract() {
    let find = example("native-sidecar");
    let pod = &find("CronJob")["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["extract"], "example-connector");
    assert_eq!(
        find("PodMonitor")["spec"]["podTargetLabels"],
        serde_yaml::from_str::<serde_yaml::Value>("[extract]").unwrap()
    );
    // A 15s scrape interval: remedy waits at most 30s for its final scrape, and the pod's
    // grace period covers the 30s drain, that wait and a margin.
    let config: serde_yaml::Value =
        serde_yaml::from_str(find("ConfigMap")["data"]["remedy.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["shutdown"]["linger"], "30s");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 70);

    // Without an interval of its own the wait follows the slowest enabled monitor.
    let text = template_with(
        "exampleConnector.enabled=true,serviceMonitor.enabled=true,serviceMonitor.interval=1m",
    );
    assert!(text.contains("linger: 120s"), "{text}");
    assert!(
        text.contains("terminationGracePeriodSeconds: 160"),
        "{text}"
    );
}

/// One value turns interception on: remedy writes its CA files to an emptyDir that the
/// connector mounts read-only at the path its CA variables name, and the connector's proxy
/// variables point at remedy.
#[test]
fn intercept_value_shares_the_ca_files_and_sets_the_connector_env() {
    let find = example("intercept");
    let pod = find("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone();
    let config: serde_yaml::Value =
        serde_yaml::from_str(find("ConfigMap")["data"]["remedy.yaml"].as_str().unwrap()).unwrap();
    let intercept = &config["proxy"]["intercept"];
    assert_eq!(intercept["enabled"], true);
    assert_eq!(intercept["tunnel"][0], "oauth2.googleapis.com");
    let ca_dir = intercept["ca_dir"].as_str().unwrap().to_owned();

    let mount = |container: &serde_yaml::Value| {
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "remedy-ca")
            .cloned()
            .expect("the CA volume is mounted")
    };
    let sidecar = &pod["initContainers"][0];
    assert_eq!(mount(sidecar)["mountPath"].as_str(), Some(ca_dir.as_str()));
    assert!(mount(sidecar)["readOnly"].is_null(), "remedy writes there");
    let connector = &pod["containers"][0];
    assert_eq!(
        mount(connector)["mountPath"].as_str(),
        Some(ca_dir.as_str())
    );
    assert_eq!(mount(connector)["readOnly"], true);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "remedy-ca")
        .cloned()
        .unwrap();
    assert!(volume["emptyDir"].is_mapping(), "{volume:?}");

    let env: std::collections::HashMap<String, String> = connector["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let bundle = format!("{ca_dir}/bundle.pem");
    for name in ["HTTPS_PROXY", "https_proxy"] {
        assert_eq!(env[name], "http://127.0.0.1:8780", "{name}");
    }
    for name in ["NO_PROXY", "no_proxy"] {
        for entry in ["localhost", "127.0.0.1", "::1", ".svc", ".cluster.local"] {
            assert!(env[name].split(',').any(|e| e == entry), "{name}: {entry}");
        }
    }
    for name in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    ] {
        assert_eq!(env[name], bundle, "{name}");
    }
    assert_eq!(env["NODE_EXTRA_CA_CERTS"], format!("{ca_dir}/ca.pem"));
    assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
    // The startup probe gates the connector on /-/ready, which waits for the files.
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/-/ready");

    // A user's CA comes from a Secret, mounted beside the config.
    let text = template_with(
        "intercept.enabled=true,intercept.caSecret=remedy-ca,exampleConnector.enabled=true",
    );
    assert!(
        text.contains("ca_cert_file: /etc/remedy-ca/tls.crt"),
        "{text}"
    );
    assert!(text.contains("secretName: remedy-ca"), "{text}");
}

#[test]
fn values_schema_rejects_wrong_types_and_unknown_keys() {
    for (set, want) in [
        ("sidecar.proxyPort=abc", "Invalid type"),
        (
            "sidecar.bogus=1",
            "Additional property bogus is not allowed",
        ),
        ("sources[0].name=Bad-Name", "Does not match pattern"),
        ("podMonitor.interval=30sec", "Does not match pattern"),
    ] {
        let (ok, out) = run("helm", &["template", "t", "helm/remedy", "--set", set]);
        assert!(!ok, "{set} was accepted");
        assert!(out.contains(want), "{set}: {out}");
    }
}

#[test]
fn chart_rules_and_dashboard_are_what_the_binary_generates() {
    let gen_rules = must(
        crate::support::launcher::binary(),
        &["rules", "--format", "prometheusrule"],
    );
    let dash = must(crate::support::launcher::binary(), &["dashboard"]);
    crate::support::tools::assert_golden("helm/remedy/files/prometheusrule.yaml", &gen_rules);
    crate::support::tools::assert_golden("helm/remedy/files/remedy-dashboard.json", &dash);
    // The rendered PrometheusRule carries exactly the generated groups.
    let rendered = documents(&template("1.30.0", &[]))
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .unwrap();
    let generated: serde_yaml::Value = serde_yaml::from_str(&gen_rules).unwrap();
    assert_eq!(rendered["spec"], generated["spec"]);
    let dash_cm = documents(&template("1.30.0", &[]))
        .into_iter()
        .find(|d| d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap with the grafana_dashboard label");
    let json: serde_json::Value =
        serde_json::from_str(dash_cm["data"]["remedy-dashboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "remedy-connectors");
}

#[test]
fn dockerfile_passes_hadolint_and_yaml_passes_yamllint() {
    must("hadolint", &["Dockerfile"]);
    must("yamllint", &["-s", "."]);
}

#[test]
fn dockerfile_builds_the_binary_the_way_the_tests_do() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let script = std::fs::read_to_string(root().join("scripts/test")).unwrap();
    let build = std::fs::read_to_string(root().join("scripts/build")).unwrap();
    // Both build through scripts/build, so the image's binary has the same profile-guided
    // optimisation as the tested and benchmarked one.
    assert!(dockerfile.contains("COPY pgo ./pgo"));
    assert!(dockerfile.contains("scripts/build"));
    assert!(script.contains("\nscripts/build\n"));
    assert!(build.contains("-Cprofile-use=$PWD/pgo/remedy.profdata"));
    assert!(build.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("ENTRYPOINT [\"remedy\"]"));
    assert!(dockerfile.contains("CMD [\"run\", \"--config\", \"/etc/remedy/remedy.yaml\"]"));
}
