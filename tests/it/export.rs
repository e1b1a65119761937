//! `shop export k8s|compose`: the output passes the real validators (`kubernetes-validate
//! --strict`, the compose specification's JSON schema) and has the structure the README
//! promises. `.ci/deps.sh` installs the validators.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

use crate::support::BIN;

fn shop(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env_remove("SHOP_STACK")
        .env_remove("SHOP_STATE_DIR")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn shipped_stack() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stack.yaml")
}

/// Every YAML document in `text`, as JSON values for easy indexing.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

/// Runs a validator; a missing one fails the test with what to do.
fn run_validator(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// `kubernetes-validate --strict` on `file`; fails the test on any error it reports.
fn validate_k8s(file: &Path) {
    let file = file.to_str().unwrap();
    let out = run_validator("kubernetes-validate", &["--strict", "--quiet", file])
        .or_else(|| run_validator("python3", &["-m", "kubernetes_validate", "--strict", "--quiet", file]))
        .expect("python3 runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!report.contains("No module named"), "kubernetes-validate is not installed; run .ci/deps.sh\n{report}");
    assert!(out.status.success() && !report.contains("ERROR"), "kubernetes-validate rejected {file}:\n{report}");
}

/// The compose specification's JSON schema (draft-07) on `file`, loaded as YAML.
fn validate_compose(file: &Path) {
    let schema = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/compose-spec.json");
    let script = r#"
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
doc = yaml.safe_load(open(sys.argv[2]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)) + ": " + e.message)
sys.exit(1 if errors else 0)
"#;
    let out = run_validator("python3", &["-c", script, schema.to_str().unwrap(), file.to_str().unwrap()])
        .expect("python3 runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!report.contains("No module named"), "jsonschema or pyyaml is not installed; run .ci/deps.sh\n{report}");
    assert!(out.status.success(), "the compose schema rejected {}:\n{report}", file.display());
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} `{name}` in the manifests"))
}

fn names_of(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter().filter(|d| d["kind"] == kind).map(|d| d["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

/// The value a container's env var gets, following `configMapKeyRef` into the ConfigMap.
fn env_value(docs: &[Value], container: &Value, var: &str) -> Option<String> {
    let entry = container["env"].as_array()?.iter().find(|e| e["name"] == var)?;
    if let Some(v) = entry["value"].as_str() {
        return Some(v.to_string());
    }
    let key = &entry["valueFrom"]["configMapKeyRef"];
    let config = find(docs, "ConfigMap", key["name"].as_str()?);
    config["data"][key["key"].as_str()?].as_str().map(str::to_string)
}

/// The first `n` strings of a list, e.g. a container's args.
fn strings(list: &Value, n: usize) -> Vec<&str> {
    list.as_array().unwrap().iter().take(n).map(|v| v.as_str().unwrap()).collect()
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn secret_of(text: &str) -> String {
    let docs = documents(text);
    let secret = docs.iter().find(|d| d["kind"] == "Secret").expect("a Secret");
    secret["stringData"]["SHOP_SECRET"].as_str().expect("the secret's value").to_string()
}

#[test]
fn the_shipped_stack_exports_kubernetes_manifests_that_validate_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s.yaml");
    let stack = shipped_stack();
    let out = shop(dir.path(), &["-f", stack.to_str().unwrap(), "export", "k8s", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "with -o, stdout stays empty");
    validate_k8s(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    let docs = documents(&text);

    let sqlite = ["user", "inventory", "payment", "notification", "order"];
    assert_eq!(names_of(&docs, "StatefulSet"), sqlite);
    for name in sqlite {
        let set = find(&docs, "StatefulSet", name);
        assert_eq!(set["spec"]["serviceName"], name);
        assert_eq!(set["spec"]["replicas"], 1);
        let claim = &set["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data", "{set:#}");
        assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
        let c = container(set);
        assert_eq!(c["volumeMounts"][0], serde_json::json!({"name": "data", "mountPath": "/data"}));
        assert_eq!(strings(&c["args"], 4), ["serve", name, "--port", "8080"]);
        assert_eq!(c["image"], format!("shop:{}", env!("CARGO_PKG_VERSION")));
        // Probes from the stack's health settings: 200ms rounds up to 1 s, 10s start period.
        assert_eq!(c["livenessProbe"]["httpGet"], serde_json::json!({"path": "/healthz", "port": "http"}));
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["startupProbe"]["failureThreshold"], 10);
        assert_eq!(c["livenessProbe"]["timeoutSeconds"], 1);
        for (kind, what) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
            assert!(c["resources"][kind][what].is_string(), "{name}: no {kind}.{what}");
        }
        assert_eq!(set["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
        let service = find(&docs, "Service", name);
        assert_eq!(service["spec"]["clusterIP"], "None", "headless");
        assert_eq!(service["spec"]["selector"], set["spec"]["selector"]["matchLabels"]);
        assert_eq!(set["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"], "shop");
    }
    let gateway = find(&docs, "Deployment", "gateway");
    assert_eq!(gateway["spec"]["replicas"], 1);
    assert_eq!(names_of(&docs, "Deployment"), ["gateway"]);
    let g = container(gateway);
    assert_eq!(g["ports"][0]["containerPort"], 8080);
    assert_eq!(find(&docs, "Service", "gateway")["spec"]["ports"][0]["port"], 8080);
    assert!(find(&docs, "Service", "gateway")["spec"]["clusterIP"].is_null(), "the gateway's Service balances");
    // Discovery by the platform's names, listening on every interface inside the container.
    assert_eq!(env_value(&docs, g, "SHOP_DISCOVERY").as_deref(), Some("dns"));
    assert_eq!(env_value(&docs, g, "SHOP_BIND").as_deref(), Some("0.0.0.0"));
    let peers = env_value(&docs, g, "SHOP_PEERS").unwrap();
    for name in sqlite {
        assert!(peers.contains(&format!("{name}={name}:8080")), "{peers}");
    }
    assert_eq!(env_value(&docs, g, "SHOP_RATE_PER_SECOND").as_deref(), Some("20000"));
    let order = container(find(&docs, "StatefulSet", "order"));
    assert_eq!(env_value(&docs, order, "SHOP_SAGA_TIMEOUT").as_deref(), Some("60s"));
    // Fixtures travel in the ConfigMap and are mounted where `--fixtures` points.
    let user = container(find(&docs, "StatefulSet", "user"));
    assert!(user["args"].as_array().unwrap().contains(&"/etc/shop/fixtures/users.yaml".into()));
    let config = find(&docs, "ConfigMap", "shop-config");
    assert!(config["data"]["user.fixtures"].as_str().unwrap().contains("dev-token-alice"));
    // No registry off the laptop, and a fresh secret at every export.
    assert!(
        !text.contains("serve\n        - registry") && !names_of(&docs, "StatefulSet").contains(&"registry".into())
    );
    let again = stdout(&shop(dir.path(), &["-f", stack.to_str().unwrap(), "export", "k8s"]));
    let (first, second) = (secret_of(&text), secret_of(&again));
    assert_eq!(first.len(), 64);
    assert_ne!(first, second, "the secret is generated per export");
}

#[test]
fn the_shipped_stack_exports_a_compose_file_that_matches_the_compose_schema() {
    let dir = tempfile::tempdir().unwrap();
    let stack = shipped_stack();
    let text = stdout(&shop(dir.path(), &["-f", stack.to_str().unwrap(), "export", "compose"]));
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, &text).unwrap();
    validate_compose(&file);
    let doc = &documents(&text)[0];
    assert_eq!(doc["name"], "shop");
    let services = doc["services"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for name in ["gateway", "user", "inventory", "payment", "notification", "order"] {
        assert!(names.contains(&name), "{names:?}");
        let s = &services[name];
        assert_eq!(strings(&s["command"], 2), ["serve", name]);
        assert_eq!(s["volumes"][0], format!("{name}-data:/data"), "a named volume per database");
        assert!(doc["volumes"][format!("{name}-data")].is_object());
        assert_eq!(s["environment"]["SHOP_DISCOVERY"], "dns");
        assert_eq!(s["environment"]["SHOP_BIND"], "0.0.0.0");
        let test = s["healthcheck"]["test"].as_array().unwrap();
        assert_eq!(test.last().unwrap(), "http://127.0.0.1:8080/healthz");
        assert_eq!(s["healthcheck"]["start_period"], "10s");
    }
    assert!(!names.contains(&"registry"));
    let gateway = &services["gateway"];
    for dep in ["order", "user", "inventory"] {
        assert_eq!(gateway["depends_on"][dep]["condition"], "service_healthy");
    }
    assert_eq!(
        services["order"]["depends_on"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["inventory", "notification", "payment", "user"]
    );
    let port = &gateway["ports"][0];
    assert_eq!((port["target"].as_u64(), port["published"].as_str()), (Some(8080), Some("8080")), "{port}");
    assert_eq!(port["host_ip"], "127.0.0.1", "published where the stack binds it");
    assert!(services["payment"]["ports"].is_null(), "only the gateway is published");
    assert!(doc["configs"]["user-fixtures"]["content"].as_str().unwrap().contains("dev-token-alice"));
    assert_eq!(services["user"]["configs"][0]["target"], "/etc/shop/fixtures/users.yaml");
    // The secret: generated at export, overridable with SHOP_SECRET.
    let secret = gateway["environment"]["SHOP_SECRET"].as_str().unwrap().to_string();
    assert!(secret.starts_with("${SHOP_SECRET:-") && secret.len() == "${SHOP_SECRET:-}".len() + 64, "{secret}");
    let again = stdout(&shop(dir.path(), &["-f", stack.to_str().unwrap(), "export", "compose"]));
    assert!(!again.contains(&secret), "the secret is generated per export");
}

/// A stack that `shop up` runs and that stretches the export: replicas, custom ports, an
/// external program, a `$` that compose must not interpolate.
fn custom_stack(dir: &Path) -> PathBuf {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let text = format!(
        "name: lab
registry: {{ port: 0 }}
services:
  gateway:
    port: 0
    replicas: 2
    depends_on: [order, user, inventory]
  user:
    port: 9001
    fixtures: {users}
  inventory:
    fixtures: {products}
    env: {{ PRICE_NOTE: \"costs $5\", FLAG: \"on\", AT: \"12:30\", SEP: \"=\", DAY: \"2026-01-01\" }}
  payment: {{ replicas: 2 }}
  notification: {{ port: 9002, health: {{ interval: 2500ms, retries: 7 }} }}
  order:
    depends_on: [user, inventory, payment, notification, web]
  web:
    command: [python3, -m, http.server, \"{{port}}\", --bind, 0.0.0.0]
    port: 9300
    health: {{ path: / }}
    restart: \"no\"
",
        users = fixtures.join("users.yaml").display(),
        products = fixtures.join("products.yaml").display(),
    );
    let file = dir.join("stack.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_stack_with_replicas_an_external_command_and_custom_ports_exports_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    custom_stack(dir.path());
    let k8s_file = dir.path().join("k8s.yaml");
    let out = shop(
        dir.path(),
        &[
            "export",
            "k8s",
            "--namespace",
            "lab-ns",
            "--image",
            "reg.example/shop:7",
            "--image-for",
            "web=python:3.12-slim",
            "-o",
            "k8s.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: `services.payment` has 2 replicas"), "{stderr}");
    validate_k8s(&k8s_file);
    let docs = documents(&std::fs::read_to_string(&k8s_file).unwrap());
    assert_eq!(docs[0]["kind"], "Namespace");
    assert!(docs.iter().all(|d| d["kind"] == "Namespace" || d["metadata"]["namespace"] == "lab-ns"));

    let gateway = find(&docs, "Deployment", "gateway");
    assert_eq!(gateway["spec"]["replicas"], 2);
    assert_eq!(container(gateway)["image"], "reg.example/shop:7");
    let peers = env_value(&docs, container(gateway), "SHOP_PEERS").unwrap();
    for peer in ["user=user:9001", "notification=notification:9002", "order=order:8080", "web=web:9300"] {
        assert!(peers.split(',').any(|p| p == peer), "{peer} not in {peers}");
    }
    let user = find(&docs, "StatefulSet", "user");
    assert_eq!(strings(&container(user)["args"], 4), ["serve", "user", "--port", "9001"]);
    assert_eq!(container(user)["ports"][0]["containerPort"], 9001);
    assert_eq!(find(&docs, "Service", "user")["spec"]["ports"][0]["port"], 9001);
    let notification = container(find(&docs, "StatefulSet", "notification"));
    assert_eq!(notification["livenessProbe"]["periodSeconds"], 3, "2500ms rounds up");
    assert_eq!(notification["livenessProbe"]["failureThreshold"], 7, "health.retries");
    assert_eq!(notification["readinessProbe"]["failureThreshold"], 7, "health.retries");
    // One writer per SQLite file on Kubernetes, whatever the replicas (the warning above).
    assert_eq!(find(&docs, "StatefulSet", "payment")["spec"]["replicas"], 1);
    let inventory = container(find(&docs, "StatefulSet", "inventory"));
    assert_eq!(env_value(&docs, inventory, "PRICE_NOTE").as_deref(), Some("costs $5"));
    // Quoted, so that YAML 1.1 readers (kubectl, PyYAML) do not take it for a boolean.
    assert!(std::fs::read_to_string(&k8s_file).unwrap().contains("inventory.FLAG: 'on'"));
    // As are values YAML 1.1 reads as numbers, dates or tags (the validators read YAML 1.1).
    for (var, value) in [("AT", "12:30"), ("SEP", "="), ("DAY", "2026-01-01")] {
        assert_eq!(env_value(&docs, inventory, var).as_deref(), Some(value));
    }

    let web = find(&docs, "Deployment", "web");
    let w = container(web);
    // --image-for overrides the image of that service only.
    assert_eq!(w["image"], "python:3.12-slim");
    assert_eq!(container(find(&docs, "StatefulSet", "user"))["image"], "reg.example/shop:7");
    assert_eq!(w["command"], serde_json::json!(["python3", "-m", "http.server", "9300", "--bind", "0.0.0.0"]));
    assert!(w["args"].is_null());
    assert_eq!(env_value(&docs, w, "PORT").as_deref(), Some("9300"));
    assert_eq!(w["readinessProbe"]["httpGet"]["path"], "/");
    assert_eq!(w["livenessProbe"]["httpGet"]["path"], "/");
    let mounts = w["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["name"] != "data"), "an external program has no database");
    assert_eq!(find(&docs, "Service", "web")["spec"]["ports"][0]["port"], 9300);

    let out = shop(dir.path(), &["export", "compose", "--image-for", "web=python:3.12-slim"]);
    let text = stdout(&out);
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, &text).unwrap();
    validate_compose(&file);
    let doc = &documents(&text)[0];
    let services = &doc["services"];
    let gateway = &services["gateway"];
    assert_eq!(gateway["deploy"]["replicas"], 2);
    assert_eq!(gateway["ports"][0]["published"], "8080-8081", "a host port per replica");
    // Compose keeps the replicas, all on the service's one volume, as `shop up` does.
    assert_eq!(services["payment"]["deploy"]["replicas"], 2);
    assert_eq!(services["payment"]["volumes"][0], "payment-data:/data");
    // One command line for all of them, each named by its container's host name: two replicas
    // under one name would run each other's sagas.
    let argv = strings(&services["payment"]["command"], 99);
    let at = argv.iter().position(|a| *a == "--instance").unwrap();
    assert_eq!(argv[at + 1], "payment-{hostname}");
    let argv = strings(&services["user"]["command"], 99);
    assert_eq!(argv[argv.iter().position(|a| *a == "--instance").unwrap() + 1], "user");
    assert_eq!(services["user"]["command"][3], "9001");
    assert_eq!(services["inventory"]["environment"]["PRICE_NOTE"], "costs $$5", "no interpolation");
    assert!(text.contains("FLAG: 'on'") && text.contains("restart: 'no'"), "{text}");
    assert_eq!(services["notification"]["healthcheck"]["retries"], 7, "health.retries");
    let web = &services["web"];
    assert_eq!(web["image"], "python:3.12-slim");
    assert_eq!(web["entrypoint"], serde_json::json!(["python3", "-m", "http.server", "9300", "--bind", "0.0.0.0"]));
    assert!(web["volumes"].is_null());
    assert_eq!(web["healthcheck"]["test"][0], "CMD-SHELL");
    assert_eq!(services["order"]["depends_on"]["web"]["condition"], "service_healthy");
}

#[test]
fn bad_export_options_are_usage_errors_that_name_the_value() {
    let dir = tempfile::tempdir().unwrap();
    custom_stack(dir.path());
    let cases = [
        (&["export", "k8s", "--image-for", "shipping=x"][..], "--image-for names `shipping`, not in the stack"),
        (&["export", "compose", "--image-for", "web"][..], "--image-for `web` must be SERVICE=IMAGE"),
        (&["export", "k8s", "--namespace", "Lab_NS"][..], "namespace `Lab_NS` is not a DNS label"),
        (&["export", "compose", "-o", "./stack.yaml"][..], "cannot write the compose file to `./stack.yaml`: `"),
    ];
    // `-o -` is stdout, as kubectl and docker take it, not a file named `-`.
    let out = shop(dir.path(), &["export", "compose", "-o", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("# docker compose file"), "{}", stdout(&out));
    assert!(!dir.path().join("-").exists());
    let before = std::fs::read(dir.path().join("stack.yaml")).unwrap();
    for (args, message) in cases {
        let out = shop(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(std::fs::read(dir.path().join("stack.yaml")).unwrap(), before, "the stack file was overwritten");

    // Names the manifests cannot carry are told all at once, each where the stack file writes it.
    std::fs::write(
        dir.path().join("names.yaml"),
        "name: \"Bad Name!\"\nservices:\n  pay-: {kind: payment}\n  pay_3: {kind: payment}\n  pay-3: {kind: payment}\n",
    )
    .unwrap();
    for format in ["k8s", "compose"] {
        let out = shop(dir.path(), &["-f", "names.yaml", "export", format]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 4, "{stderr}");
        // `FILE:LINE:COL: message` as for every other mistake in a stack file, then what to do.
        assert!(lines[0].starts_with("names.yaml:1:7: stack name `Bad Name!` is not a DNS label"), "{stderr}");
        assert!(lines[1].starts_with("names.yaml:3:3: service name `pay-` is not a DNS label"), "{stderr}");
        assert!(lines[2].starts_with("names.yaml:5:3: services `pay_3` and `pay-3` both become `pay-3`"), "{stderr}");
        assert_eq!(lines[3], "error: `names.yaml` cannot be exported (3 problems); fix it and run again");
    }
}

/// The shipped stack's Kubernetes manifests, with the given extra arguments.
fn shipped_k8s(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let stack = shipped_stack();
    let mut args = vec!["-f", stack.to_str().unwrap(), "export", "k8s", "-o", "k8s.yaml"];
    args.extend(extra);
    let out = shop(dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join("k8s.yaml");
    validate_k8s(&file);
    documents(&std::fs::read_to_string(file).unwrap())
}

/// A pod as a NetworkPolicy sees it: its labels, and the port its container listens on.
struct Pod {
    name: String,
    labels: Value,
    port: u64,
}

fn pods(docs: &[Value]) -> Vec<Pod> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .map(|d| Pod {
            name: d["metadata"]["name"].as_str().unwrap().to_string(),
            labels: d["spec"]["template"]["metadata"]["labels"].clone(),
            port: container(d)["ports"][0]["containerPort"].as_u64().unwrap(),
        })
        .collect()
}

/// A label selector as Kubernetes applies it; only `matchLabels` is expected in the exports.
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(selector["matchExpressions"].is_null(), "{selector}");
    selector["matchLabels"].as_object().is_none_or(|m| m.iter().all(|(k, v)| labels[k] == *v))
}

/// Whether the NetworkPolicies let `subject` receive from (`Ingress`) or send to (`Egress`) a
/// pod labelled `peer` on TCP `port`: a pod no policy of that direction selects is open; one
/// that some policy selects is open only to what a rule of one of them admits.
fn admitted(policies: &[&Value], direction: &str, subject: &Value, peer: &Value, port: u64) -> bool {
    let (rules, peers) = if direction == "Ingress" { ("ingress", "from") } else { ("egress", "to") };
    let applying: Vec<&&Value> = policies
        .iter()
        .filter(|p| selects(&p["spec"]["podSelector"], subject))
        .filter(|p| p["spec"]["policyTypes"].as_array().unwrap().iter().any(|t| t == direction))
        .collect();
    if applying.is_empty() {
        return true;
    }
    applying.iter().flat_map(|p| p["spec"][rules].as_array().into_iter().flatten()).any(|rule| {
        let port_ok = rule["ports"]
            .as_array()
            .is_none_or(|ports| ports.iter().any(|p| p["port"] == port && p["protocol"] == "TCP"));
        let peer_ok = rule[peers].as_array().is_none_or(|list| {
            list.iter().any(|p| {
                assert!(p["namespaceSelector"].is_null() && p["ipBlock"].is_null(), "{p}");
                selects(&p["podSelector"], peer)
            })
        });
        port_ok && peer_ok
    })
}

/// Every pair of pods a connection is allowed between: both the sender's egress and the
/// receiver's ingress must admit it.
fn open_edges(docs: &[Value]) -> Vec<(String, String)> {
    let policies: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    let pods = pods(docs);
    let mut edges = Vec::new();
    for from in &pods {
        for to in &pods {
            if admitted(&policies, "Egress", &from.labels, &to.labels, to.port)
                && admitted(&policies, "Ingress", &to.labels, &from.labels, to.port)
            {
                edges.push((from.name.clone(), to.name.clone()));
            }
        }
    }
    edges.sort();
    edges
}

fn edges(list: &[(&str, &[&str])]) -> Vec<(String, String)> {
    let mut edges: Vec<(String, String)> =
        list.iter().flat_map(|(from, tos)| tos.iter().map(|to| (from.to_string(), to.to_string()))).collect();
    edges.sort();
    edges
}

#[test]
fn network_policies_admit_every_edge_of_the_dependency_graph_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let docs = shipped_k8s(dir.path(), &[]);
    let expected = edges(&[
        ("gateway", &["order", "user", "inventory"]),
        ("order", &["user", "inventory", "payment", "notification"]),
        // Not in the stack file's `depends_on`, but every charge asks the card vault.
        ("payment", &["user"]),
    ]);
    assert_eq!(open_edges(&docs), expected);
    let policies: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "NetworkPolicy").collect();
    // From outside the stack (another namespace, an ingress controller): the gateway only.
    let outsider = serde_json::json!({});
    for pod in pods(&docs) {
        let open = admitted(&policies, "Ingress", &pod.labels, &outsider, pod.port);
        assert_eq!(open, pod.name == "gateway", "{} from outside", pod.name);
        // Every pod resolves names: DNS on port 53, to wherever the cluster runs it.
        let dns = policies.iter().filter(|p| selects(&p["spec"]["podSelector"], &pod.labels)).any(|p| {
            p["spec"]["egress"].as_array().into_iter().flatten().any(|r| {
                r["to"].is_null()
                    && r["ports"].as_array().unwrap().iter().any(|p| p["port"] == 53 && p["protocol"] == "UDP")
            })
        });
        assert!(dns, "{} cannot resolve names", pod.name);
    }
    // The policies come before the pods they protect.
    let first_pod = docs.iter().position(|d| d["kind"] == "StatefulSet" || d["kind"] == "Deployment").unwrap();
    assert!(docs.iter().rposition(|d| d["kind"] == "NetworkPolicy").unwrap() < first_pod);

    // Custom ports and an external program: the edges follow the graph, on each service's port.
    let dir = tempfile::tempdir().unwrap();
    custom_stack(dir.path());
    let out = shop(dir.path(), &["export", "k8s", "-o", "k8s.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&std::fs::read_to_string(dir.path().join("k8s.yaml")).unwrap());
    let expected = edges(&[
        ("gateway", &["order", "user", "inventory"]),
        ("order", &["user", "inventory", "payment", "notification", "web"]),
        ("payment", &["user"]),
    ]);
    assert_eq!(open_edges(&docs), expected);

    // A second service of a kind is reached by whoever depends on one of that kind: clients
    // ask for the kind and are balanced over both (`SHOP_PEERS`), so the policies open both.
    let dir = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let text = format!(
        "name: two\nservices:\n  user: {{ fixtures: {u} }}\n  inventory: {{ fixtures: {p} }}\n  \
         inventory-eu: {{ kind: inventory, fixtures: {p} }}\n  payment: {{}}\n  notification: {{}}\n  \
         order: {{ depends_on: [user, inventory-eu, payment, notification] }}\n  \
         gateway: {{ depends_on: [order, user, inventory] }}\n",
        u = fixtures.join("users.yaml").display(),
        p = fixtures.join("products.yaml").display(),
    );
    std::fs::write(dir.path().join("stack.yaml"), text).unwrap();
    let out = shop(dir.path(), &["export", "k8s", "-o", "k8s.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&std::fs::read_to_string(dir.path().join("k8s.yaml")).unwrap());
    let expected = edges(&[
        ("gateway", &["order", "user", "inventory", "inventory-eu"]),
        ("order", &["user", "inventory", "inventory-eu", "payment", "notification"]),
        ("payment", &["user"]),
    ]);
    assert_eq!(open_edges(&docs), expected);

    let dir = tempfile::tempdir().unwrap();
    let docs = shipped_k8s(dir.path(), &["--no-network-policies"]);
    assert!(names_of(&docs, "NetworkPolicy").is_empty());
}

#[test]
fn exported_pods_are_restricted_and_read_the_secret_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let docs = shipped_k8s(dir.path(), &["--namespace", "shop-lab"]);
    let ns = find(&docs, "Namespace", "shop-lab");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    let workloads: Vec<&Value> =
        docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet").collect();
    assert_eq!(workloads.len(), 6);
    for w in workloads {
        let name = w["metadata"]["name"].as_str().unwrap();
        let pod = &w["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert_eq!(psc["runAsUser"], 10001, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let c = container(w);
        let csc = &c["securityContext"];
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        assert!(csc["capabilities"]["add"].is_null() && csc["privileged"].is_null(), "{name}");
        // Writable: the database's volume and a scratch `emptyDir`, nothing else.
        let mounts = c["volumeMounts"].as_array().unwrap();
        let mount = |path: &str| mounts.iter().find(|m| m["mountPath"] == path).map(|m| m["name"].as_str().unwrap());
        assert_eq!(mount("/data"), Some("data"), "{name}");
        assert_eq!(mount("/tmp"), Some("tmp"), "{name}");
        let volumes = pod["volumes"].as_array().unwrap();
        let tmp = volumes.iter().find(|v| v["name"] == "tmp").unwrap();
        assert!(tmp["emptyDir"].is_object(), "{name}");
        // The secret: a read-only file from the Secret, never an environment variable.
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().all(|e| e["name"] != "SHOP_SECRET" && e["valueFrom"]["secretKeyRef"].is_null()), "{name}");
        let file = env_value(&docs, c, "SHOP_SECRET_FILE").expect("SHOP_SECRET_FILE");
        let secret_mount = mounts.iter().find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())));
        let secret_mount = secret_mount.unwrap_or_else(|| panic!("{name}: nothing mounted at {file}"));
        assert_eq!(secret_mount["readOnly"], true);
        let volume = volumes.iter().find(|v| v["name"] == secret_mount["name"]).unwrap();
        assert_eq!(volume["secret"]["secretName"], "shop-secret", "{name}");
        let key = &volume["secret"]["items"][0];
        assert_eq!(format!("{}/{}", secret_mount["mountPath"].as_str().unwrap(), key["path"].as_str().unwrap()), file);
        assert_eq!(key["key"], "SHOP_SECRET");
    }
}

#[test]
fn the_compose_export_drops_privileges_and_keeps_the_root_filesystem_read_only() {
    let dir = tempfile::tempdir().unwrap();
    custom_stack(dir.path());
    let text = stdout(&shop(dir.path(), &["export", "compose", "--image-for", "web=python:3.12-slim"]));
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, &text).unwrap();
    validate_compose(&file);
    let doc = &documents(&text)[0];
    for (name, s) in doc["services"].as_object().unwrap() {
        assert_eq!(s["read_only"], true, "{name}");
        assert_eq!(s["cap_drop"], serde_json::json!(["ALL"]), "{name}");
        assert_eq!(s["security_opt"], serde_json::json!(["no-new-privileges:true"]), "{name}");
        assert_eq!(s["tmpfs"], serde_json::json!(["/tmp"]), "{name}");
    }
}

#[tokio::test]
async fn a_service_reads_the_stack_secret_from_the_file_shop_secret_file_names() {
    use shop::orchestrator::launcher::{wait_healthy, ServeCommand, ServiceProcess};
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    // As a mounted Secret may end: with a newline, which is not part of the secret.
    std::fs::write(&secret_file, "from-a-file\n").unwrap();
    let cmd = ServeCommand {
        binary: BIN.into(),
        kind: shop::services::Kind::Payment,
        instance: "payment".into(),
        port: 0,
        db: dir.path().join("payment.db"),
        registry: String::new(),
        fixtures: None,
        env: vec![
            ("SHOP_DISCOVERY".into(), "dns".into()),
            ("SHOP_SECRET_FILE".into(), secret_file.to_str().unwrap().into()),
        ],
        log: Some(dir.path().join("payment.log")),
    };
    let proc = ServiceProcess::spawn(&cmd, std::time::Duration::from_secs(20)).unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_healthy(&http, proc.address, "/healthz", std::time::Duration::from_secs(10)).await.unwrap();
    let faults = format!("http://{}/admin/faults", proc.address);
    let status = |secret: Option<&'static str>| {
        let mut req = http.get(&faults);
        if let Some(s) = secret {
            req = req.header("x-shop-secret", s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Some("from-a-file")).await, 200);
    assert_eq!(status(Some("wrong")).await, 401);
    assert_eq!(status(None).await, 401);
}

#[test]
fn what_a_container_cannot_give_as_asked_is_a_warning_or_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let stack = |products: &Path, otlp: &str| {
        format!(
            "telemetry: {{ otlp: '{otlp}' }}\nservices:\n  user: {{ fixtures: {} }}\n  inventory: {{ fixtures: {} }}\n  \
             payment: {{}}\n  notification: {{}}\n  order: {{}}\n  gateway: {{}}\n",
            fixtures.join("users.yaml").display(),
            products.display()
        )
    };
    // A collector on loopback is the container itself once inside one.
    std::fs::write(dir.path().join("stack.yaml"), stack(&fixtures.join("products.yaml"), "http://127.0.0.1:4318"))
        .unwrap();
    for format in ["k8s", "compose"] {
        let out = shop(dir.path(), &["export", format]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("warning: `telemetry.otlp` is `http://127.0.0.1:4318`, a loopback address"),
            "{stderr}"
        );
    }
    // A catalog too large for `kubectl apply`'s annotation is a warning; past a ConfigMap's
    // 1 MiB, a refusal: the manifests could not be applied at all.
    let line = "  - { id: sku-XXXXXXXX, name: a product with a long enough name to fill the file, price_cents: 100, stock: 1 }\n";
    for (count, refused) in [(3_000, false), (12_000, true)] {
        let products = dir.path().join(format!("products-{count}.yaml"));
        let body: String = (0..count).map(|i| line.replace("XXXXXXXX", &format!("{i:08}"))).collect();
        std::fs::write(&products, format!("products:\n{body}")).unwrap();
        std::fs::write(dir.path().join("stack.yaml"), stack(&products, "http://collector:4318")).unwrap();
        let out = shop(dir.path(), &["export", "k8s"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if refused {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("more than the 1048576 a Kubernetes ConfigMap holds"), "{stderr}");
            assert!(out.stdout.is_empty());
        } else {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(stderr.contains("`kubectl apply` keeps a copy in an annotation"), "{stderr}");
            assert!(!stderr.contains("loopback"), "{stderr}");
        }
    }
}
