//! The notification service's batch route: one request and one transaction for many
//! deliveries, deduplicated by event id like the single route, with a span per item in the
//! trace the item names.

use reqwest::StatusCode;
use serde_json::{json, Value};
use shop::services::Kind;

use crate::support::{Options, TestStack};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const RELAY_SPAN: &str = "00f067aa0ba902b7";

fn item(event_id: &str, order_id: &str) -> Value {
    json!({
        "event_id": event_id,
        "order_id": order_id,
        "user_id": "alice",
        "kind": "order_confirmed",
        "message": format!("Your order {order_id} is confirmed."),
    })
}

async fn batch(stack: &TestStack, items: Vec<Value>) -> (StatusCode, Value) {
    let resp = stack
        .http
        .post(stack.url(Kind::Notification, "/v1/notifications/batch"))
        .json(&json!({ "notifications": items }))
        .send()
        .await
        .expect("notification answers");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `(event id, notification id)` of each answer, in answer order.
fn answers(body: &Value) -> Vec<(String, String)> {
    body["delivered"]
        .as_array()
        .unwrap_or_else(|| panic!("no `delivered` list: {body}"))
        .iter()
        .map(|d| (d["event_id"].as_str().unwrap().to_string(), d["notification_id"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_answered_in_order_and_a_repeated_event_id_keeps_its_first_notification() {
    let stack = TestStack::start().await;
    let count = |order: &str| {
        stack.count(Kind::Notification, "SELECT count(*) FROM notifications WHERE order_id = ?1", &[&order.to_string()])
    };

    // evt_b twice in one batch: one notification, the same id in both answers.
    let (status, first) = batch(
        &stack,
        vec![item("evt_b", "ord_b"), item("evt_a", "ord_a"), item("evt_b", "ord_b"), item("evt_c", "ord_c")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first = answers(&first);
    let events: Vec<&str> = first.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events, ["evt_b", "evt_a", "evt_b", "evt_c"]);
    assert_eq!(first[0].1, first[2].1, "a repeated event id within a batch made two notifications");
    assert!(first[0].1.starts_with("ntf_") && first[0].1 != first[1].1 && first[1].1 != first[3].1, "{first:?}");
    assert_eq!((count("ord_a"), count("ord_b"), count("ord_c")), (1, 1, 1));

    // Across batches (a relay retrying after a lost answer): the same notifications again.
    let (status, again) =
        batch(&stack, vec![item("evt_c", "ord_c"), item("evt_d", "ord_d"), item("evt_a", "ord_a")]).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let again = answers(&again);
    assert_eq!((again[0].0.as_str(), again[0].1.as_str()), ("evt_c", first[3].1.as_str()));
    assert_eq!(again[1].0, "evt_d");
    assert_eq!((again[2].0.as_str(), again[2].1.as_str()), ("evt_a", first[1].1.as_str()));
    assert_eq!((count("ord_a"), count("ord_c"), count("ord_d")), (1, 1, 1));

    // The single route agrees with the batches, and counts every delivery.
    let (status, listed) = stack.get(&stack.url(Kind::Notification, "/v1/notifications?order_id=ord_b"), None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed[0]["notification_id"], first[0].1.as_str());
    assert_eq!(listed[0]["deliveries"], 2);
    let single = stack
        .http
        .post(stack.url(Kind::Notification, "/v1/notifications"))
        .json(&item("evt_a", "ord_a"))
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), StatusCode::OK);
    let single: Value = single.json().await.unwrap();
    assert_eq!(
        (single["notification_id"].as_str(), single["deliveries"].as_i64()),
        (Some(first[1].1.as_str()), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_item_refuses_the_whole_batch_with_a_400_naming_its_index() {
    let stack = TestStack::start().await;
    let mut long = item(&"e".repeat(65), "ord_long");
    let cases = [
        (vec![item("evt_ok1", "ord_ok1"), item("", "ord_empty")], "notifications[1]"),
        (vec![item("evt_ok1", "ord_ok1"), item("evt_ok2", "ord_ok2"), long.take()], "notifications[2]"),
        (vec![json!({"event_id": "evt_x", "order_id": "ord_x"})], "notifications[0]"),
        (vec![item("evt_ok1", "ord_ok1"), json!(42)], "notifications[1]"),
        (
            vec![{
                let mut i = item("evt_ok1", "ord_ok1");
                i["color"] = json!("red");
                i
            }],
            "notifications[0]",
        ),
    ];
    for (items, named) in cases {
        let (status, body) = batch(&stack, items).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(named), "{named}: {body}");
    }
    let (status, body) = batch(&stack, (0..257).map(|i| item(&format!("evt_{i}"), "ord_many")).collect()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 256"), "{body}");
    // Nothing of a refused batch was written.
    assert_eq!(
        stack.count(Kind::Notification, "SELECT count(*) FROM notifications WHERE order_id LIKE 'ord_%'", &[]),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_item_gets_a_span_in_its_own_trace_under_the_span_that_sent_it() {
    let stack = TestStack::with(Options::default().env(Kind::Notification, "SHOP_SECRET", "s3cret")).await;
    let mut traced = item("evt_t", "ord_t");
    traced["traceparent"] = json!(format!("00-{TRACE}-{RELAY_SPAN}-00"));
    traced["tracestate"] = json!("rojo=1");
    let (status, body) = batch(&stack, vec![item("evt_u", "ord_u"), traced]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let spans: Value = stack
        .http
        .get(stack.url(Kind::Notification, &format!("/admin/spans?trace_id={TRACE}")))
        .header("x-shop-secret", "s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spans = spans.as_array().unwrap_or_else(|| panic!("no spans: {spans}"));
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["parent_id"], RELAY_SPAN);
    assert_eq!(spans[0]["name"], "POST /v1/notifications/batch");
    assert_eq!(spans[0]["status"], "201");
    assert_eq!(spans[0]["service"], "notification");
}
