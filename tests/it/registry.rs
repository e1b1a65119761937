//! Discovery: registration, the cached view while the registry is gone, re-registration.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shop::services::Kind;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_live_process_under_a_live_instances_name_is_refused_and_stops() {
    let stack = TestStack::start().await;
    let lookup = format!("{}/v1/services/payment", stack.registry_url);
    let address = |list: &Value| list[0]["address"].as_str().unwrap_or_default().to_string();
    let real = address(&stack.get(&lookup, None).await.1);
    assert_eq!(format!("http://{real}"), stack.url(Kind::Payment, ""));
    // A registration under the name from elsewhere, by a live process (pid 1 always is): refused.
    let other = serde_json::json!({"service": "payment", "instance": "payment", "address": "127.0.0.1:9", "pid": 1});
    let resp = stack.http.post(format!("{}/v1/register", stack.registry_url)).json(&other).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "instance_name_taken", "{answer}");
    assert_eq!(address(&stack.get(&lookup, None).await.1), real);
    // A second `shop serve` under that name stops at start, saying who holds it, instead of
    // taking turns with the first at every heartbeat.
    let dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(BIN)
        .args(["serve", "payment", "--port", "0", "--instance", "payment", "--registry", &stack.registry_url, "--db"])
        .arg(dir.path().join("p2.db"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = eventually(Duration::from_secs(10), async || second.try_wait().unwrap().is_some()).await;
    let _ = second.kill();
    let out = second.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(stopped && out.status.code() == Some(1), "{err}");
    assert!(err.contains("instance name `payment` is held by pid"), "{err}");
    assert!(err.contains("another name (--instance)"), "{err}");
    assert_eq!(address(&stack.get(&lookup, None).await.1), real);
}

#[tokio::test(flavor = "multi_thread")]
async fn services_register_their_real_address_and_come_back_after_a_registry_restart() {
    let mut stack = TestStack::start().await;
    let (status, list) = stack.get(&format!("{}/v1/instances", stack.registry_url), None).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 6, "{list:?}");
    for inst in &list {
        let kind = Kind::parse(inst["service"].as_str().unwrap()).unwrap();
        assert_eq!(format!("http://{}", inst["address"].as_str().unwrap()), stack.url(kind, ""));
        assert!(inst["pid"].as_u64().unwrap() > 0);
    }

    // With the registry gone, calls go on from each service's cached view.
    stack.kill(Kind::Registry);
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("CONFIRMED")), "{order}");

    // A new registry (empty) is filled again by heartbeats that get 404 and re-register.
    stack.spawn(Kind::Registry).await;
    let url = format!("{}/v1/instances", stack.registry_url);
    let back = eventually(Duration::from_secs(10), async || {
        stack.get(&url, None).await.1.as_array().map(|a| a.len()) == Some(6)
    })
    .await;
    assert!(back, "services did not re-register");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_instance_is_evicted_after_the_ttl() {
    let mut stack = TestStack::start().await;
    // SIGSTOP: the process keeps its port but stops heartbeating.
    stack.process(Kind::Notification).signal(nix::sys::signal::Signal::SIGSTOP);
    let url = format!("{}/v1/services/notification", stack.registry_url);
    let gone = eventually(Duration::from_secs(5), async || stack.get(&url, None).await.1 == Value::Array(vec![])).await;
    stack.process(Kind::Notification).signal(nix::sys::signal::Signal::SIGCONT);
    assert!(gone, "paused instance was not evicted");
    let back = eventually(Duration::from_secs(5), async || {
        stack.get(&url, None).await.1.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(back, "resumed instance did not re-register");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_health_readiness_and_prometheus_metrics() {
    let stack = TestStack::start().await;
    stack.place(ALICE, items(&[("sku-1", 1)]), &[]).await;
    for kind in Kind::ALL {
        let (status, _) = stack.get(&stack.url(kind, "/healthz"), None).await;
        assert_eq!(status, StatusCode::OK, "{}", kind.name());
        let (status, _) = stack.get(&stack.url(kind, "/readyz"), None).await;
        assert_eq!(status, StatusCode::OK, "{}", kind.name());
        let text = stack.http.get(stack.url(kind, "/metrics")).send().await.unwrap().text().await.unwrap();
        parse_prometheus(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", kind.name()));
    }
    let text = stack.http.get(stack.url(Kind::Gateway, "/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse_prometheus(&text).unwrap();
    let posted = samples.iter().find(|(name, labels, _)| {
        name == "shop_http_requests_total" && labels.contains("route=\"/orders\"") && labels.contains("status=\"201\"")
    });
    assert_eq!(posted.map(|s| s.2), Some(1.0), "{text}");
    let text = stack.http.get(stack.url(Kind::Order, "/metrics")).send().await.unwrap().text().await.unwrap();
    let order = parse_prometheus(&text).unwrap();
    for name in ["shop_order_outbox_backlog", "shop_order_sagas_in_flight", "shop_order_orders"] {
        let sample = order.iter().find(|s| s.0 == name);
        assert!(sample.is_some(), "{name} missing:\n{text}");
        // Every family carries the instance label (SPEC section 16), not only the HTTP ones.
        assert!(sample.unwrap().1.contains("shop_instance=\"order\""), "{name} has no shop_instance:\n{text}");
    }
    // Answers no route counted (an unknown path, a method a route does not take) are counted
    // under the route `unmatched`.
    let gateway = |path: &str| stack.url(Kind::Gateway, path);
    assert_eq!(stack.http.get(gateway("/nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(stack.http.delete(gateway("/orders")).send().await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    let text = stack.http.get(gateway("/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse_prometheus(&text).unwrap();
    for (method, status) in [("GET", "404"), ("DELETE", "405")] {
        let counted = samples.iter().any(|(name, labels, value)| {
            name == "shop_http_requests_total"
                && labels.contains(&format!("method=\"{method}\",status=\"{status}\""))
                && *value == 1.0
        });
        assert!(counted, "{method} {status} not counted:\n{text}");
    }
    let text = stack.http.get(stack.url(Kind::Inventory, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(parse_prometheus(&text).unwrap().iter().any(|s| s.0 == "shop_inventory_stock_reserved"));
}

/// A strict reader of the Prometheus text format: `# HELP`/`# TYPE` lines, then
/// `name{labels} value` samples, with every sample's family declared by a TYPE line.
fn parse_prometheus(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {}: bad type `{kind}`", i + 1));
            }
            typed.insert(name.to_string());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("line {}: no value", i + 1))?;
        let value: f64 = value.parse().map_err(|_| format!("line {}: bad value", i + 1))?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').ok_or(format!("line {}: unclosed labels", i + 1))?),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.contains(*f))
            .unwrap_or(name);
        if !typed.contains(family) {
            return Err(format!("line {}: `{name}` has no TYPE", i + 1));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            return Err(format!("line {}: bad name `{name}`", i + 1));
        }
        out.push((name.to_string(), labels.to_string(), value));
    }
    Ok(out)
}

/// A process that has not yet seen a service (it started beside it) and then gets a burst of
/// calls for it: every call of the burst must find it. One refresh runs and the others wait for
/// its view; failing them at once with "no instance" counted toward the caller's circuit breaker
/// and opened it for `open_for` right after `shop up`.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_calls_for_a_service_not_yet_in_the_view_waits_for_one_refresh() {
    let stack = TestStack::start().await;
    let discovery = Arc::new(shop::plumbing::discovery::Discovery::new(&stack.registry_url, stack.http.clone(), None));
    assert!(!discovery.knows("user"), "a new view starts empty");
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let discovery = discovery.clone();
        burst.spawn(async move { discovery.pick("user").await });
    }
    let picks = burst.join_all().await;
    let user = stack.url(Kind::User, "").trim_start_matches("http://").to_string();
    assert!(picks.iter().all(|p| p.first().map(|(a, _)| a.as_str()) == Some(user.as_str())), "{picks:?}");
}

/// Payment needs the user service to resolve card tokens, so its readiness (SPEC section 5:
/// the database and the required dependencies) follows whether an instance of it is known.
#[tokio::test(flavor = "multi_thread")]
async fn payment_is_ready_only_while_an_instance_of_the_user_service_is_known() {
    let mut stack = TestStack::start().await;
    let url = stack.url(Kind::Payment, "/readyz");
    assert_eq!(stack.get(&url, None).await.0, StatusCode::OK);
    stack.kill(Kind::User);
    let refused = eventually(Duration::from_secs(15), async || {
        let (status, body) = stack.get(&url, None).await;
        status == StatusCode::SERVICE_UNAVAILABLE
            && body["error"]["message"].as_str().is_some_and(|m| m.contains("no instance registered for: user"))
    })
    .await;
    assert!(refused, "payment stayed ready with no user service: {:?}", stack.get(&url, None).await);
    stack.spawn(Kind::User).await;
    let back = eventually(Duration::from_secs(15), async || stack.get(&url, None).await.0 == StatusCode::OK).await;
    assert!(back, "payment did not become ready again: {:?}", stack.get(&url, None).await);
}
