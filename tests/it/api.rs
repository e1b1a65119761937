//! The gateway's public API: validation, auth, ownership, idempotency, the OpenAPI document.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_order_request_is_a_json_4xx_and_creates_nothing() {
    let stack = TestStack::start().await;
    let long_id = "x".repeat(65);
    let too_many: Vec<Value> = (0..101).map(|i| json!({"product_id": format!("p{i}"), "quantity": 1})).collect();
    let cases: Vec<(&str, String)> = vec![
        ("malformed JSON", "{\"items\": [".into()),
        ("not an object", "[1,2]".into()),
        ("unknown top-level field", r#"{"items":[{"product_id":"sku-1","quantity":1}],"price_cents":1}"#.into()),
        ("unknown item field", r#"{"items":[{"product_id":"sku-1","quantity":1,"unit_price_cents":1}]}"#.into()),
        ("empty items", r#"{"items":[]}"#.into()),
        ("missing items", "{}".into()),
        ("more than 100 items", json!({"items": too_many}).to_string()),
        ("quantity 0", r#"{"items":[{"product_id":"sku-1","quantity":0}]}"#.into()),
        ("quantity 1001", r#"{"items":[{"product_id":"sku-1","quantity":1001}]}"#.into()),
        ("negative quantity", r#"{"items":[{"product_id":"sku-1","quantity":-1}]}"#.into()),
        ("fractional quantity", r#"{"items":[{"product_id":"sku-1","quantity":1.5}]}"#.into()),
        ("quantity as a string", r#"{"items":[{"product_id":"sku-1","quantity":"2"}]}"#.into()),
        ("huge quantity", r#"{"items":[{"product_id":"sku-1","quantity":99999999999999999999999}]}"#.into()),
        ("id longer than 64", json!({"items": [{"product_id": long_id, "quantity": 1}]}).to_string()),
        ("empty id", r#"{"items":[{"product_id":"","quantity":1}]}"#.into()),
    ];
    for (what, body) in cases {
        let resp = stack
            .http
            .post(stack.gateway("/orders"))
            .bearer_auth(ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "bad_request", "{what}: {err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {err}");
    }
    let big = format!(r#"{{"items":[{{"product_id":"sku-1","quantity":1}}],"pad":"{}"}}"#, "a".repeat(70 * 1024));
    let resp = stack.http.post(stack.gateway("/orders")).bearer_auth(ALICE).body(big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
    // A compressed body is not read as if it were plain.
    let resp = stack
        .http
        .post(stack.gateway("/orders"))
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"items":[{"product_id":"sku-1","quantity":1}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unsupported_media_type");
    // A body declared too large is refused at once, not after waiting for bytes that never come.
    let mut conn = tokio::net::TcpStream::connect(stack.gateway_addr()).await.unwrap();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{}}"
    );
    tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut conn, &mut answer))
            .await
            .expect("an answer before the body could arrive")
            .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(stack.count(shop::services::Kind::Order, "SELECT count(*) FROM orders", &[]), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_required_and_inactive_users_are_refused() {
    let stack = TestStack::start().await;
    let body = items(&[("sku-1", 1)]);
    let resp = stack.http.post(stack.gateway("/orders")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // A 401 names the scheme it wants (RFC 9110 section 11.6.1).
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let (status, err, _) = stack.place("not-a-token", body.clone(), &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    // The scheme is matched in any case; two credentials are refused, not served as the first.
    let list = |auth: Vec<&'static str>| {
        let mut req = stack.http.get(stack.gateway("/orders"));
        for a in auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let resp = list(vec!["bearer dev-token-alice"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = list(vec!["Bearer dev-token-alice", "Bearer dev-token-bob"]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("Authorization"));
    let (status, err, _) = stack.place(CAROL, body.clone(), &[]).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("user_inactive")));
    // Refused before the body is read: a body announced and never sent does not hold the answer.
    for auth in ["", "Authorization: Bearer nope\r\n"] {
        let mut conn = tokio::net::TcpStream::connect(stack.gateway_addr()).await.unwrap();
        let head = format!("POST /orders HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000\r\n\r\n{{");
        tokio::io::AsyncWriteExt::write_all(&mut conn, head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut conn, &mut answer),
        )
        .await
        .expect("an answer before the body could arrive")
        .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{auth:?}: {answer}");
    }
    let (status, _) = stack.get(&stack.gateway("/orders"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Tokens are stored hashed, never in clear.
    assert_eq!(
        stack.count(shop::services::Kind::User, "SELECT count(*) FROM users WHERE token_hash LIKE 'dev-token%'", &[]),
        0
    );
    assert_eq!(
        stack.count(shop::services::Kind::User, "SELECT count(*) FROM users WHERE length(token_hash) = 64", &[]),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_read_only_their_own_orders() {
    let stack = TestStack::start().await;
    let (status, order, _) = stack.place(ALICE, items(&[("sku-2", 1)]), &[]).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = order["id"].as_str().unwrap();
    let (status, mine) = stack.get(&stack.gateway(&format!("/orders/{id}")), Some(ALICE)).await;
    assert_eq!((status, mine["id"].as_str()), (StatusCode::OK, Some(id)));
    let (status, err) = stack.get(&stack.gateway(&format!("/orders/{id}")), Some(BOB)).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = stack.get(&stack.gateway("/orders/ord_missing"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Ids are bounded in characters, as the document's `maxLength` counts: 64 of `é` (128
    // bytes) are an unknown id, 65 are too long.
    let e = "%C3%A9";
    let (status, _) = stack.get(&stack.gateway(&format!("/orders/{}", e.repeat(64))), Some(ALICE)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = stack.get(&stack.gateway(&format!("/orders/{}", e.repeat(65))), Some(ALICE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Ids with bytes a URI cannot carry raw, or that would change the order service's path
    // (`/`, `?`, `%`), are one unknown id: 404, never a 5xx.
    for odd in [
        "%3D%C3%B3%EB%89%9Ee%01%1BO%05%F2%95%BC%A40%C2%87%2C%F0%B0%94%B5",
        "a%2Fb",
        "x%3Fuser_id%3Dbob",
        "%25",
        &format!("{id}%20"),
    ] {
        let (status, err) = stack.get(&stack.gateway(&format!("/orders/{odd}")), Some(ALICE)).await;
        assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{odd}");
    }
    stack.place(BOB, items(&[("sku-2", 1)]), &[]).await;
    let (status, list) = stack.get(&stack.gateway("/orders?limit=10"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "alice sees only her order: {list:?}");
    let (_, bobs) = stack.get(&stack.gateway("/orders?status=FAILED"), Some(BOB)).await;
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    let (status, _) = stack.get(&stack.gateway("/orders?status=LOST"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = stack.get(&stack.gateway("/orders?limit=0"), Some(ALICE)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_gives_one_order_and_one_charge_even_when_requests_race() {
    let stack = TestStack::start().await;
    let body = items(&[("sku-1", 1)]);
    let (s1, first, _) = stack.place(ALICE, body.clone(), &[("idempotency-key", "k-1")]).await;
    let (s2, again, _) = stack.place(ALICE, body.clone(), &[("idempotency-key", "k-1")]).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(first["id"], again["id"]);
    let (s3, err, _) = stack.place(ALICE, items(&[("sku-1", 2)]), &[("idempotency-key", "k-1")]).await;
    assert_eq!((s3, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, url) = (stack.http.clone(), stack.gateway("/orders"));
        racers.spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(ALICE)
                .header("idempotency-key", "race")
                .json(&items(&[("sku-3", 1)]))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap(), ())
        });
    }
    let results = racers.join_all().await;
    let ids: std::collections::HashSet<_> =
        results.iter().map(|(_, b, _)| b["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 1, "racing requests made several orders: {ids:?}");
    let created = results.iter().filter(|(s, _, _)| *s == StatusCode::CREATED).count();
    assert_eq!(created, 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(
        stack.count(shop::services::Kind::Payment, "SELECT count(*) FROM payments WHERE order_id = ?1", &[&id]),
        1
    );
    assert_eq!(stack.count(shop::services::Kind::Order, "SELECT count(*) FROM orders", &[]), 2);
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_and_the_openapi_document_describe_the_api() {
    let stack = TestStack::start().await;
    let (status, products) = stack.get(&stack.gateway("/products"), None).await;
    assert_eq!(status, StatusCode::OK);
    let products = products.as_array().unwrap();
    assert!(products.len() >= 6);
    assert!(products.iter().all(|p| p["price_cents"].is_i64() && p["available"].is_i64() && p["name"].is_string()));
    let (status, doc) = stack.get(&stack.gateway("/openapi.json"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method, codes) in [
        ("/orders", "post", &["200", "201", "202", "400", "401", "403", "413", "422", "429", "503"][..]),
        ("/orders", "get", &["200", "400", "401"][..]),
        ("/orders/{id}", "get", &["200", "404", "401"][..]),
        ("/products", "get", &["200"][..]),
    ] {
        for code in codes {
            assert!(doc["paths"][path][method]["responses"][code].is_object(), "{method} {path} {code} undocumented");
        }
    }
    let (status, err) = stack.get(&stack.gateway("/no/such/route"), None).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_order_is_answered_202_with_its_location_when_the_wait_is_zero() {
    let mut stack = TestStack::start().await;
    stack.kill(shop::services::Kind::Payment);
    let (status, order, headers) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("prefer", "wait=0")]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(order["status"], "PENDING");
    let id = order["id"].as_str().unwrap();
    assert_eq!(headers["location"].to_str().unwrap(), format!("/orders/{id}"));
    stack.spawn(shop::services::Kind::Payment).await;
    let done = stack.wait_terminal(id, std::time::Duration::from_secs(20)).await;
    assert_eq!(done["status"], "CONFIRMED");
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_past_what_a_clock_holds_is_bounded_not_a_dropped_connection() {
    let stack = TestStack::start().await;
    for wait in ["wait=1e300", "wait=18446744073709551616"] {
        let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1)]), &[("prefer", wait)]).await;
        assert_eq!((status, order["status"].as_str()), (StatusCode::CREATED, Some("CONFIRMED")), "{wait}: {order}");
    }
    stack.assert_invariants();
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_rate_limit_is_429_and_an_unreachable_order_service_is_503_both_with_retry_after() {
    let options = Options::default().env(shop::services::Kind::Gateway, "SHOP_RATE_PER_SECOND", "1").env(
        shop::services::Kind::Gateway,
        "SHOP_RATE_BURST",
        "2",
    );
    let mut stack = TestStack::with(options).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = stack.http.get(stack.gateway("/orders")).bearer_auth(ALICE).send().await.unwrap();
        statuses.push((resp.status(), resp.headers().get("retry-after").is_some()));
    }
    assert_eq!(statuses[0].0, StatusCode::OK);
    let limited = statuses.iter().find(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited, Some(&(StatusCode::TOO_MANY_REQUESTS, true)), "{statuses:?}");
    // Bob's bucket is his own.
    let (status, _) = stack.get(&stack.gateway("/orders"), Some(BOB)).await;
    assert_eq!(status, StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    stack.kill(shop::services::Kind::Order);
    let resp =
        stack.http.post(stack.gateway("/orders")).bearer_auth(BOB).json(&items(&[("sku-1", 1)])).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_for_the_same_product_are_merged_into_one_as_the_document_says() {
    let stack = TestStack::start().await;
    let (status, order, _) = stack.place(ALICE, items(&[("sku-1", 1), ("sku-2", 1), ("sku-1", 999)]), &[]).await;
    assert!(status.is_success(), "{status}: {order}");
    let lines: Vec<(String, i64)> = order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["product_id"].as_str().unwrap().to_string(), l["quantity"].as_i64().unwrap()))
        .collect();
    assert_eq!(lines, [("sku-1".to_string(), 1000), ("sku-2".to_string(), 1)], "{order}");
    let doc: Value = stack.http.get(stack.gateway("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let schema = &doc["components"]["schemas"]["OrderRequest"]["properties"]["items"];
    assert!(schema["description"].as_str().unwrap().contains("merged"), "{schema}");
    assert!(schema["description"].as_str().unwrap().contains("at most 1000 per product in all"), "{schema}");
    // The limit holds for their sum: each line is valid as written, so it is a 422.
    let (status, err, _) = stack.place(ALICE, items(&[("sku-1", 600), ("sku-2", 1), ("sku-1", 600)]), &[]).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "quantity_too_large", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("add up to a quantity of 1200"), "{err}");
}
