//! The order saga end to end: outcomes, compensation, crashes, outages and slow dependencies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use shop::services::Kind;

use crate::support::*;

fn steps(order: &Value) -> Vec<(String, String)> {
    order["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["outcome"].as_str().unwrap().to_string()))
        .collect()
}

async fn wait_notifications(stack: &TestStack, order_id: &str, n: i64) {
    let ok = eventually(Duration::from_secs(15), async || {
        stack.count(Kind::Notification, "SELECT count(*) FROM notifications WHERE order_id = ?1", &[&order_id]) >= n
    })
    .await;
    assert!(ok, "no notification for {order_id}\n{}", stack.log(Kind::Order));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_order_sells_stock_charges_once_and_notifies_once() {
    let stack = TestStack::start().await;
    let before = stack.stock("sku-1");
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 3)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "CONFIRMED");
    assert_eq!(order["failure"], Value::Null);
    assert_eq!(order["total_cents"], 3 * 2499);
    assert_eq!(order["items"][0]["unit_price_cents"], 2499);
    let id = order["id"].as_str().unwrap();
    assert!(id.starts_with("ord_") && order["payment_id"].as_str().unwrap().starts_with("pay_"));
    assert_eq!(order["trace_id"].as_str().unwrap().len(), 32);
    let after = stack.stock("sku-1");
    assert_eq!(after, (before.0 - 3, 0, before.2 + 3));
    assert_eq!(
        stack.count(
            Kind::Payment,
            "SELECT sum(captured_cents) FROM payments WHERE order_id = ?1 AND status = 'captured'",
            &[&id]
        ),
        3 * 2499
    );
    wait_notifications(&stack, id, 1).await;
    let n = stack.count(
        Kind::Notification,
        "SELECT count(*) FROM notifications WHERE order_id = ?1 AND kind = 'order_confirmed'",
        &[&id],
    );
    assert_eq!(n, 1);
    let names: Vec<String> = steps(&order).into_iter().map(|s| s.0).collect();
    assert_eq!(&names[..5], ["validate_user", "reserve_stock", "charge_payment", "commit_stock", "confirm"]);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn declined_cards_and_insufficient_funds_fail_with_their_code_and_give_stock_back() {
    let stack = TestStack::start().await;
    let before = stack.stock("sku-2");
    for (token, code) in [(BOB, "card_declined"), (DAVE, "insufficient_funds")] {
        let (status, order, _) = stack.place(token, items(&[("sku-2", 2)]), &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!(order["status"], "FAILED");
        assert_eq!(order["failure"]["code"], code);
        assert_eq!(order["failure"]["step"], "charge_payment");
        let id = order["id"].as_str().unwrap();
        let st = steps(&order);
        assert!(st.contains(&("release_stock".into(), "ok".into())), "{st:?}");
        assert_eq!(
            stack.count(
                Kind::Payment,
                "SELECT coalesce(sum(captured_cents - refunded_cents), 0) FROM payments WHERE order_id = ?1",
                &[&id]
            ),
            0
        );
        wait_notifications(&stack, id, 1).await;
        assert_eq!(
            stack.count(
                Kind::Notification,
                "SELECT count(*) FROM notifications WHERE order_id = ?1 AND kind = 'order_failed'",
                &[&id]
            ),
            1
        );
    }
    assert_eq!(stack.stock("sku-2"), before);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_products_and_sold_out_products_fail_the_order() {
    let stack = TestStack::start().await;
    for (product, code) in [("sku-nope", "unknown_product"), ("sku-sold-out", "out_of_stock")] {
        let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1), (product, 1)]), &[]).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            (order["status"].as_str(), order["failure"]["code"].as_str()),
            (Some("FAILED"), Some(code)),
            "{order}"
        );
        assert_eq!(order["failure"]["step"], "reserve_stock");
        assert_eq!(order["payment_id"], Value::Null);
    }
    // All or nothing: the good line was not reserved either.
    assert_eq!(stack.stock("sku-1").1, 0);
    assert_eq!(stack.count(Kind::Payment, "SELECT count(*) FROM payments WHERE status = 'captured'", &[]), 0);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_order_service_killed_after_any_step_finishes_the_saga_on_restart() {
    // The gateway's breaker toward order opens while order is down; let it retry soon.
    let mut stack = TestStack::with(Options::default().env(Kind::Gateway, "SHOP_BREAKER_OPEN_FOR", "200ms")).await;
    // Every event the saga persists on the way to CONFIRMED (alice) and on the compensation of a
    // declined card (bob), and the relay's delivery; `StepRetried` follows the loop, the refund
    // events are covered by the expired-reservation test below.
    let points = [
        ("OrderPlaced", ALICE),
        ("UserValidated", ALICE),
        ("StockReservationRequested", ALICE),
        ("StockReserved", ALICE),
        ("PaymentRequested", ALICE),
        ("PaymentCaptured", ALICE),
        ("StockCommitRequested", ALICE),
        ("StockCommitted", ALICE),
        ("OrderConfirmed", ALICE),
        ("NotificationQueued", ALICE),
        ("NotificationDelivered", ALICE),
        ("CompensationStarted", BOB),
        ("StockReleaseRequested", BOB),
        ("StockReleased", BOB),
        ("OrderFailed", BOB),
    ];
    for (point, token) in points {
        // The last round's notification may still wait in the outbox (delivered, but its
        // delivery not yet recorded): the next process would deliver it first and stop at
        // `NotificationDelivered` for that order instead of this round's.
        let drained = eventually(Duration::from_secs(20), async || {
            stack.count(Kind::Order, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL", &[]) == 0
        })
        .await;
        assert!(drained, "{point}: the outbox did not drain\n{}", stack.log(Kind::Order));
        stack.kill(Kind::Order);
        stack.spawn_with(Kind::Order, &[("SHOP_TEST_HOOKS", "1"), ("SHOP_CRASH_AFTER", point)]).await;
        stack.wait_ready(Kind::Order).await;
        stack.wait_gateway_reaches_order().await;
        let before = stack.count(Kind::Order, "SELECT count(*) FROM orders", &[]);
        let (status, _, _) = stack.place(token, items(&[("sku-3", 1)]), &[("prefer", "wait=2")]).await;
        // A crash after the order is settled (confirmed or failed) may come after the answer.
        assert!(
            [StatusCode::SERVICE_UNAVAILABLE, StatusCode::ACCEPTED, StatusCode::CREATED].contains(&status),
            "{point}: {status}"
        );
        let exited = eventually(Duration::from_secs(10), async || stack.process(Kind::Order).exited()).await;
        assert!(
            exited,
            "order service did not crash after {point} (placing answered {status})\n{}",
            stack.log(Kind::Order)
        );
        assert!(stack.log(Kind::Order).contains("warning: test hooks active (SHOP_CRASH_AFTER)"));
        assert_eq!(
            stack.count(Kind::Order, "SELECT count(*) FROM orders", &[]),
            before + 1,
            "{point}: the order was recorded"
        );
        let id: String = {
            let conn = shop::plumbing::db::open_read_only(&stack.db(Kind::Order)).unwrap();
            conn.query_row("SELECT order_id FROM orders ORDER BY order_id DESC LIMIT 1", [], |r| r.get(0)).unwrap()
        };
        stack.kill(Kind::Order);
        stack.spawn(Kind::Order).await;
        let order = stack.wait_terminal(&id, Duration::from_secs(20)).await;
        let want = if token == BOB { "FAILED" } else { "CONFIRMED" };
        assert_eq!(order["status"], want, "{point}: {order:#}");
        stack.assert_invariants();
    }

    // `StepRetried`: with payment down, the failed call is logged on the order before the retry.
    stack.kill(Kind::Order);
    stack.spawn_with(Kind::Order, &[("SHOP_TEST_HOOKS", "1"), ("SHOP_CRASH_AFTER", "StepRetried")]).await;
    stack.wait_ready(Kind::Order).await;
    stack.wait_gateway_reaches_order().await;
    stack.kill(Kind::Payment);
    let (status, order, _) = stack.place(ALICE, items(&[("sku-3", 1)]), &[("prefer", "wait=0")]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    let crashed = eventually(Duration::from_secs(20), async || stack.is_down(Kind::Order)).await;
    assert!(crashed, "order service did not crash after StepRetried\n{}", stack.log(Kind::Order));
    let retried = "SELECT count(*) FROM order_events WHERE order_id = ?1 AND type = 'StepRetried'";
    assert!(stack.count(Kind::Order, retried, &[&id]) >= 1);
    stack.spawn(Kind::Payment).await;
    stack.kill(Kind::Order);
    stack.spawn(Kind::Order).await;
    let order = stack.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_queued_while_the_notification_service_is_down_arrive_exactly_once() {
    let mut stack = TestStack::start().await;
    stack.kill(Kind::Notification);
    let mut ids = Vec::new();
    for token in [ALICE, ALICE, BOB, ALICE] {
        let (status, order, _) = stack.place(token, items(&[("sku-load", 1)]), &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.spawn(Kind::Notification).await;
    for id in &ids {
        wait_notifications(&stack, id, 1).await;
    }
    // Deliveries may repeat; notifications do not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(stack.count(Kind::Notification, "SELECT count(*) FROM notifications WHERE order_id = ?1", &[id]), 1);
        let order = stack.order(id).await;
        assert!(steps(&order).contains(&("notify".into(), "ok".into())), "{order:#}");
    }
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_answered_after_the_client_timeout_is_found_not_repeated() {
    let options = Options::default()
        .env(Kind::Order, "SHOP_CLIENT_TIMEOUT", "300ms")
        .env(Kind::Payment, "SHOP_TEST_HOOKS", "1")
        .env(Kind::Payment, "SHOP_FAULT_DELAY", "800ms")
        .env(Kind::Payment, "SHOP_FAULT_DELAY_REQUESTS", "1");
    let stack = TestStack::with(options).await;
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("prefer", "wait=10")]).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "CONFIRMED");
    let id = order["id"].as_str().unwrap();
    assert_eq!(stack.count(Kind::Payment, "SELECT count(*) FROM payments WHERE order_id = ?1", &[&id]), 1);
    let charge = order["steps"].as_array().unwrap().iter().find(|s| s["step"] == "charge_payment").unwrap().clone();
    assert!(charge["attempts"].as_i64().unwrap() >= 2, "the slow charge was retried: {charge}");
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saga_past_its_timeout_is_compensated_once_payment_returns() {
    let mut stack = TestStack::with(Options::default().env(Kind::Order, "SHOP_SAGA_TIMEOUT", "1s")).await;
    stack.kill(Kind::Payment);
    let (status, order, _) = stack.place(ALICE, items(&[("sku-4", 1)]), &[("prefer", "wait=0")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = order["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The refund owed (or the void) waits for payment; the order is not FAILED before it is done.
    assert_eq!(stack.order(&id).await["status"], "PENDING");
    stack.spawn(Kind::Payment).await;
    let order = stack.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(
        (order["status"].as_str(), order["failure"]["code"].as_str()),
        (Some("FAILED"), Some("timeout")),
        "{order:#}"
    );
    assert_eq!(stack.stock("sku-4").1, 0);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_reservation_cannot_be_committed_and_the_charge_is_refunded() {
    let mut stack = TestStack::with(Options::default().env(Kind::Inventory, "SHOP_RESERVATION_TTL", "300ms")).await;
    stack.kill(Kind::Order);
    stack.spawn_with(Kind::Order, &[("SHOP_TEST_HOOKS", "1"), ("SHOP_CRASH_AFTER", "PaymentCaptured")]).await;
    stack.wait_ready(Kind::Order).await;
    stack.wait_gateway_reaches_order().await;
    let (_, _, _) = stack.place(ALICE, items(&[("sku-2", 1)]), &[("prefer", "wait=1")]).await;
    assert!(eventually(Duration::from_secs(10), async || stack.process(Kind::Order).exited()).await);
    // Let the reservation expire while the order service is down.
    assert!(eventually(Duration::from_secs(10), async || stack.stock("sku-2").1 == 0).await);
    let id: String = {
        let conn = shop::plumbing::db::open_read_only(&stack.db(Kind::Order)).unwrap();
        conn.query_row("SELECT order_id FROM orders", [], |r| r.get(0)).unwrap()
    };
    // The compensation owes a refund: crash after asking for it, and again after getting it; each
    // restart carries on from the log.
    for point in ["PaymentRefundRequested", "PaymentRefunded"] {
        stack.kill(Kind::Order);
        stack.spawn_doomed(Kind::Order, &[("SHOP_TEST_HOOKS", "1"), ("SHOP_CRASH_AFTER", point)]);
        let crashed = eventually(Duration::from_secs(20), async || stack.is_down(Kind::Order)).await;
        assert!(crashed, "order service did not crash after {point}\n{}", stack.log(Kind::Order));
        let persisted = "SELECT count(*) FROM order_events WHERE order_id = ?1 AND type = ?2";
        assert_eq!(stack.count(Kind::Order, persisted, &[&id, &point]), 1, "{point} persisted once");
    }
    stack.kill(Kind::Order);
    stack.spawn(Kind::Order).await;
    let order = stack.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(order["failure"]["code"], "reservation_expired", "{order:#}");
    let types: Vec<&str> = order["events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
    for wanted in ["PaymentRefundRequested", "PaymentRefunded", "OrderFailed"] {
        assert_eq!(types.iter().filter(|t| **t == wanted).count(), 1, "{wanted} once in {types:?}");
    }
    assert_eq!(stack.count(Kind::Payment, "SELECT refunded_cents FROM payments WHERE order_id = ?1", &[&id]), 3250);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_waiting_on_its_order_gets_202_with_its_id_when_the_order_service_or_gateway_stops() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut stack = TestStack::start().await;
    // Payment down: every order stays PENDING, so each client would wait its whole budget.
    stack.kill(Kind::Payment);
    let mut ids = Vec::new();
    for stopping in [Kind::Order, Kind::Gateway] {
        let pid = Pid::from_raw(stack.process(stopping).pid() as i32);
        let started = std::time::Instant::now();
        let ((status, order, headers), ()) =
            tokio::join!(stack.place(ALICE, items(&[("sku-1", 1)]), &[("prefer", "wait=30")]), async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                kill(pid, Signal::SIGTERM).unwrap();
            });
        // Cut off, the client could not know its order exists and would place it again.
        assert_eq!(status, StatusCode::ACCEPTED, "{stopping:?} stopping: {order}");
        let id = order["id"].as_str().unwrap().to_string();
        assert_eq!(headers["location"], format!("/orders/{id}").as_str());
        assert!(started.elapsed() < Duration::from_secs(20), "{stopping:?}: waited out the budget");
        assert!(eventually(Duration::from_secs(10), async || stack.is_down(stopping)).await);
        stack.spawn(stopping).await;
        stack.wait_gateway_reaches_order().await;
        ids.push(id);
    }
    stack.spawn(Kind::Payment).await;
    for id in &ids {
        let order = stack.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    }
    stack.assert_invariants();
}
