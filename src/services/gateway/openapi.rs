//! The gateway's OpenAPI 3 document, served at `GET /openapi.json`.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn order_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}})
}

/// The document, with `server` (`http://127.0.0.1:8080`) as the one entry of `servers`.
pub fn document(server: &str) -> Value {
    let auth_errors = json!({
        "401": error_response("Missing or unknown bearer token"),
        "429": {
            "description": "Rate limit of this token exceeded",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        },
        "503": {
            "description": "A service behind the gateway is unreachable",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }
    });
    let with = |extra: Value| {
        let mut m = auth_errors.as_object().cloned().unwrap_or_default();
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "shop gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The public API of the shop. Money is integer cents. Every error has the shape {\"error\":{\"code\",\"message\"}}."
        },
        "servers": [{"url": server, "description": "This gateway"}],
        "security": [{"bearer": []}],
        "paths": {
            "/orders": {
                "post": {
                    "summary": "Place an order; runs the saga (reserve, charge, commit, confirm, notify)",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "required": false,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
                         "description": "The same key with the same body returns the same order (200); with another body, 422"},
                        {"name": "Prefer", "in": "header", "required": false, "schema": {"type": "string", "example": "wait=5"},
                         "description": "RFC 7240 wait=SECONDS: how long to wait for a terminal state before answering 202 (default 5, max 60)"}
                    ],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OrderRequest"}}}},
                    "responses": with(json!({
                        "201": order_response("The order reached a terminal state: CONFIRMED, or FAILED with `failure`"),
                        "200": order_response("The same Idempotency-Key and body were sent before: the original order"),
                        "202": {
                            "description": "Still PENDING after the wait budget; the saga carries on",
                            "headers": {"Location": {"schema": {"type": "string"}, "description": "/orders/{id}"}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}
                        },
                        "400": error_response("Malformed JSON, unknown fields, no items, more than 100 items, a quantity outside 1..=1000, an id longer than 64 characters, a total above 10^12 cents (code amount_too_large), or an Idempotency-Key that is empty, longer than 255 characters or not printable ASCII (a Prefer wait that is no number of seconds is ignored, as RFC 7240 asks)"),
                        "403": error_response("The user is inactive (code user_inactive)"),
                        "413": error_response("The body is larger than 64 KiB"),
                        "415": error_response("The body is compressed (a Content-Encoding other than identity); send it uncompressed"),
                        "422": error_response("The Idempotency-Key was used with a different body (code idempotency_key_reused), or the lines of one product add up to more than 1000 (code quantity_too_large)"),
                        "503": {
                            "description": "A service behind the gateway is unreachable. When it is the order service, the order may or may not have been placed: send the same body again with the Idempotency-Key this answer names (the client's own, or one the gateway made), which gives the order if it was placed instead of placing another",
                            "headers": {
                                "Retry-After": {"schema": {"type": "integer"}},
                                "Idempotency-Key": {"schema": {"type": "string"}, "description": "The key that asks for this same order again"}
                            },
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                        }
                    }))
                },
                "get": {
                    "summary": "The caller's orders, newest first",
                    "parameters": [
                        {"name": "status", "in": "query", "required": false, "schema": {"type": "string", "enum": ["PENDING", "CONFIRMED", "FAILED"]}},
                        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
                    ],
                    "responses": with(json!({
                        "200": {"description": "Orders", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}}}},
                        "400": error_response("An unknown or empty status, or a limit that is empty or outside 1..=100")
                    }))
                }
            },
            "/orders/{id}": {
                "get": {
                    "summary": "One of the caller's orders",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}],
                    "responses": with(json!({
                        "200": order_response("The order"),
                        "400": error_response("The id is longer than 64 characters"),
                        "404": error_response("No such order, or it belongs to another user")
                    }))
                }
            },
            "/products": {
                "get": {
                    "summary": "The catalog",
                    "security": [],
                    "responses": {
                        "200": {"description": "Products", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}}}}},
                        "503": error_response("The inventory service is unreachable")
                    }
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3 document", "content": {"application/json": {"schema": {"type": "object"}}}}}}
            },
            "/healthz": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"type": "object"}}}}}}
            },
            "/readyz": {
                "get": {"summary": "Readiness: database and dependencies reachable", "security": [], "responses": {
                    "200": {"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "503": error_response("Not ready (code not_ready)")
                }}
            },
            "/metrics": {
                "get": {"summary": "Prometheus text metrics", "security": [], "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"], "additionalProperties": false,
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}
                },
                "OrderRequest": {
                    "type": "object", "required": ["items"], "additionalProperties": false,
                    "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 100,
                        "description": "Order lines; lines for the same product_id are merged into one, their quantities added (at most 1000 per product in all)", "items": {
                        "type": "object", "required": ["product_id", "quantity"], "additionalProperties": false,
                        "properties": {
                            "product_id": {"type": "string", "minLength": 1, "maxLength": 64,
                                "description": "1 to 64 characters (Unicode code points, not bytes)"},
                            "quantity": {"type": "integer", "minimum": 1, "maximum": 1000}
                        }
                    }}}
                },
                "Order": {
                    "type": "object",
                    "required": ["id", "user_id", "items", "total_cents", "currency", "status", "failure", "payment_id", "trace_id", "created_at", "updated_at"],
                    "properties": {
                        "id": {"type": "string", "example": "ord_01JD3Q5M7R0000000000000000"},
                        "user_id": {"type": "string"},
                        "items": {"type": "array", "items": {"type": "object", "required": ["product_id", "quantity", "unit_price_cents"], "properties": {
                            "product_id": {"type": "string"}, "quantity": {"type": "integer"}, "unit_price_cents": {"type": "integer"}
                        }}},
                        "total_cents": {"type": "integer"},
                        "currency": {"type": "string", "example": "USD"},
                        "status": {"type": "string", "enum": ["PENDING", "CONFIRMED", "FAILED"]},
                        "failure": {"nullable": true, "type": "object", "required": ["step", "code", "message"], "properties": {
                            "step": {"type": "string"},
                            "code": {"type": "string", "description": "out_of_stock, unknown_product, card_declined, insufficient_funds, user_inactive, timeout, reservation_expired, …"},
                            "message": {"type": "string"}
                        }},
                        "payment_id": {"type": "string", "nullable": true},
                        "trace_id": {"type": "string"},
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                        "steps": {"type": "array", "items": {"type": "object", "properties": {
                            "step": {"type": "string"}, "service": {"type": "string"}, "outcome": {"type": "string"},
                            "duration_ms": {"type": "integer"}, "attempts": {"type": "integer"}, "compensation": {"type": "boolean"}
                        }}}
                    }
                },
                "Product": {
                    "type": "object", "required": ["product_id", "name", "price_cents", "available"],
                    "properties": {"product_id": {"type": "string"}, "name": {"type": "string"}, "price_cents": {"type": "integer"}, "available": {"type": "integer"}}
                }
            }
        }
    })
}
