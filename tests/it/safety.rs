//! SPEC section 17: money that cannot wrap, card numbers only in the card vault, admin secrets
//! checked before the body, children that die with their supervisor, and an exact head limit.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shop::services::Kind;

use crate::support::*;

/// A catalog with two products at the highest price a fixture may have.
const DEAR_PRODUCTS: &str = "products:
  - id: gold-1
    name: Gold bar
    price_cents: 1000000000
    stock: 5000
  - id: gold-2
    name: Gold ingot
    price_cents: 1000000000
    stock: 5000
";

#[tokio::test(flavor = "multi_thread")]
async fn an_order_over_the_total_limit_is_refused_and_totals_are_checked_against_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let products = dir.path().join("products.yaml");
    std::fs::write(&products, DEAR_PRODUCTS).unwrap();
    let stack = TestStack::with(Options::default().fixtures(Kind::Inventory, products)).await;

    // Exactly at the limit: 1000 units at 10^9 cents is 10^12 cents.
    let (status, body, _) = stack.place(ALICE, items(&[("gold-1", 1000)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["status"].as_str(), body["total_cents"].as_i64()), (Some("CONFIRMED"), Some(1_000_000_000_000)));

    // One cent over it.
    let (status, body, _) = stack.place(ALICE, items(&[("gold-1", 1000), ("gold-2", 1)]), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "amount_too_large", "{body}");
    assert_eq!(stack.count(Kind::Order, "SELECT count(*) FROM orders", &[]), 1);

    let report = stack.invariants(Duration::from_secs(15));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"totals_match_items"), "{names:?}");
    assert!(report.ok, "{:#?}", report.checks);

    let doc = stack.get(&stack.gateway("/openapi.json"), None).await.1;
    let bad_request = doc["paths"]["/orders"]["post"]["responses"]["400"]["description"].as_str().unwrap_or("");
    assert!(bad_request.contains("amount_too_large"), "{bad_request}");
}

#[test]
fn a_fixture_price_that_is_not_whole_cents_from_1_to_10_9_stops_the_service_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    for (price, shown) in [("18446744073709552", "18446744073709552"), ("0", "0"), ("24.99", "24.99")] {
        let path = dir.path().join("products.yaml");
        std::fs::write(&path, DEAR_PRODUCTS.replacen("1000000000", price, 1)).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["serve", "inventory", "--port", "0", "--registry", "http://127.0.0.1:9"])
            .arg("--db")
            .arg(dir.path().join("inventory.db"))
            .arg("--fixtures")
            .arg(&path)
            .env("SHOP_PARENT_PID", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{price}: started:\n{stderr}");
        let wanted = format!(
            "{}:4:18: products[0].price_cents: must be whole cents from 1 to 1000000000, got {shown}",
            path.display()
        );
        assert!(stderr.contains(&wanted), "{price}: wanted `{wanted}` in:\n{stderr}");
    }
}
