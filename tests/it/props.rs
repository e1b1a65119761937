//! Property tests: whatever bytes reach the stack-file loader or the gateway's request parser,
//! the answer is a located error or a 400, never a panic.

use std::path::Path;

use proptest::prelude::*;
use shop::orchestrator::stackfile::Stack;
use shop::services::gateway::parse_order;

const SHIPPED: &str = include_str!("../../stack.yaml");

fn check_stack(text: &str) {
    match Stack::parse(text, Path::new("stack.yaml")) {
        Ok(_) => {}
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(p.line >= 1 && p.column >= 1, "unlocated problem {p:?} for {text:?}");
            }
            let shown = e.to_string();
            assert!(shown.lines().all(|l| l.starts_with("stack.yaml:")), "{shown}");
        }
    }
}

/// A valid file mangled: a span replaced by junk, or lines dropped, duplicated or shuffled.
fn mangled() -> impl Strategy<Value = String> {
    let lines: Vec<String> = SHIPPED.lines().map(str::to_string).collect();
    let n = lines.len();
    (0..n, 0..n, any::<u8>(), "[ -~\t:{}\\[\\],#&*!|>'\"%@`-]{0,12}").prop_map(move |(a, b, how, junk)| {
        let mut l = lines.clone();
        let (lo, hi) = (a.min(b), a.max(b));
        match how % 4 {
            0 => {
                let line = &mut l[lo];
                let at = (hi % (line.len() + 1)).min(line.len());
                let at = (0..=at).rev().find(|i| line.is_char_boundary(*i)).unwrap_or(0);
                line.insert_str(at, &junk);
            }
            1 => {
                l.drain(lo..=hi.min(lo + 3));
            }
            2 => {
                let dup = l[lo].clone();
                l.insert(hi, dup);
            }
            _ => l.swap(lo, hi),
        }
        l.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_the_stack_loader(text in "\\PC{0,400}") {
        check_stack(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_stack_loader(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_stack(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn a_mangled_valid_file_loads_or_reports_located_problems(text in mangled()) {
        check_stack(&text);
    }

    #[test]
    fn arbitrary_bytes_are_a_bad_request_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_order(&bytes) {
            prop_assert_eq!(e.status.as_u16(), 400);
        }
    }

    #[test]
    fn order_bodies_near_the_limits_are_accepted_only_within_them(
        items in proptest::collection::vec((product_id(), -5i64..1100), 0..110),
        extra in proptest::option::of("[a-z_]{1,10}"),
    ) {
        let mut body = serde_json::json!({
            "items": items.iter().map(|(p, q)| serde_json::json!({"product_id": p, "quantity": q})).collect::<Vec<_>>()
        });
        if let Some(field) = &extra {
            if field != "items" {
                body[field.as_str()] = serde_json::json!(1);
            }
        }
        // What the OpenAPI document promises, read from the document itself: JSON Schema's
        // `maxLength` counts characters, and lines for the same product are merged, not refused.
        let limits = document_limits();
        let valid = extra.as_deref().is_none_or(|f| f == "items")
            && items.len() >= limits.min_items
            && items.len() <= limits.max_items
            && items.iter().all(|(p, q)| {
                let chars = p.chars().count();
                chars >= limits.min_id && chars <= limits.max_id && (limits.min_qty..=limits.max_qty).contains(q)
            });
        // A body the schema admits can still ask for more of one product than the limit
        // once its lines are merged: that is a 422, the limit the description states.
        let mut merged = std::collections::BTreeMap::<&str, i64>::new();
        for (p, q) in &items {
            *merged.entry(p.as_str()).or_default() += q;
        }
        let over = merged.values().any(|q| *q > limits.max_qty);
        match parse_order(body.to_string().as_bytes()) {
            Ok(_) => prop_assert!(valid && !over, "accepted {body}"),
            Err(e) if valid && over => {
                prop_assert_eq!(e.status.as_u16(), 422, "{}", e);
                prop_assert!(e.to_string().contains("quantity_too_large"), "{}", e);
            }
            Err(e) => {
                prop_assert!(!valid, "refused a valid body {body}: {e}");
                prop_assert_eq!(e.status.as_u16(), 400);
            }
        }
    }
}

/// Product ids near the 64-character limit, in ASCII and in characters of two to four bytes,
/// so a limit counted in bytes is caught.
fn product_id() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9-]{0,70}", "[a-zé日🦀-]{0,70}", "[é]{60,66}", "[日]{60,66}", "[🦀]{60,66}", "\\PC{0,70}",]
}

struct Limits {
    min_items: usize,
    max_items: usize,
    min_id: usize,
    max_id: usize,
    min_qty: i64,
    max_qty: i64,
}

fn document_limits() -> Limits {
    let doc = shop::services::gateway::openapi_document("http://127.0.0.1:8080");
    let request = &doc["components"]["schemas"]["OrderRequest"]["properties"]["items"];
    assert!(request["uniqueItems"].is_null(), "lines for one product are merged, so they need not be unique");
    assert!(request["description"].as_str().is_some_and(|d| d.contains("merged")), "{request}");
    let item = &request["items"]["properties"];
    let n = |v: &serde_json::Value| v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"));
    Limits {
        min_items: n(&request["minItems"]) as usize,
        max_items: n(&request["maxItems"]) as usize,
        min_id: n(&item["product_id"]["minLength"]) as usize,
        max_id: n(&item["product_id"]["maxLength"]) as usize,
        min_qty: n(&item["quantity"]["minimum"]),
        max_qty: n(&item["quantity"]["maximum"]),
    }
}
