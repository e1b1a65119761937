//! A service's environment from its stack file entry: the `SHOP_*` tuning every built-in
//! service reads (see `plumbing::config`), then the entry's own `env:`. The supervisor passes
//! it to the processes it starts and `shop export` writes it into manifests, so both run a
//! service with the same settings.

use std::time::Duration;

use super::stackfile::{Program, RegistrySpec, ServiceSpec};

/// A variable and its value, in the order they are set (a later one wins).
pub type Var = (String, String);

/// mimalloc commits whole arenas up front by default; committing on use keeps each service's
/// resident memory at what it uses (about 26 MB instead of 38 under load).
pub fn allocator() -> Var {
    ("MIMALLOC_ARENA_EAGER_COMMIT".into(), "0".into())
}

/// What a service's own entry sets: for a built-in service its client, breaker, saga and rate
/// limit settings; for any program the stack's OTLP collector (the standard OpenTelemetry
/// variable, which other programs read too); then the entry's `env:` (so the user can override).
pub fn service(spec: &ServiceSpec) -> Vec<Var> {
    let mut env = Vec::new();
    if let Some(url) = &spec.otlp {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), url.clone()));
    }
    if let Program::Builtin(_) = spec.program {
        let cb = &spec.client.circuit_breaker;
        env.extend([
            ("SHOP_CLIENT_TIMEOUT".to_string(), duration(spec.client.timeout)),
            ("SHOP_CLIENT_RETRIES".into(), spec.client.retries.to_string()),
            ("SHOP_BREAKER_THRESHOLD".into(), cb.failure_threshold.to_string()),
            ("SHOP_BREAKER_OPEN_FOR".into(), duration(cb.open_for)),
            ("SHOP_BREAKER_HALF_OPEN".into(), cb.half_open_requests.to_string()),
        ]);
        if let Some(t) = spec.saga_timeout {
            env.push(("SHOP_SAGA_TIMEOUT".into(), duration(t)));
        }
        if let Some(r) = &spec.rate_limit {
            env.push(("SHOP_RATE_PER_SECOND".into(), r.per_second.to_string()));
            env.push(("SHOP_RATE_BURST".into(), r.burst.to_string()));
        }
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Everything a built-in service started by the supervisor is told besides its command line:
/// the registry's timing, the stack secret, the allocator setting, its bind address, then
/// [`service`].
pub fn supervised(registry: &RegistrySpec, secret: &str, spec: &ServiceSpec) -> Vec<Var> {
    let mut env = vec![
        ("SHOP_HEARTBEAT".to_string(), duration(registry.heartbeat)),
        ("SHOP_TTL".to_string(), duration(registry.ttl)),
        ("SHOP_SECRET".to_string(), secret.to_string()),
        allocator(),
        ("SHOP_BIND".to_string(), spec.bind.to_string()),
    ];
    env.extend(service(spec));
    env
}

/// `200ms`, `90s`: a form both `shop` (humantime) and Go-style parsers read, in whole
/// milliseconds (at least one, since zero would mean "no timeout" to some readers).
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_a_form_go_and_shop_both_parse() {
        assert_eq!(duration(Duration::from_millis(200)), "200ms");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_micros(10)), "1ms");
        for d in ["200ms", "90s", "1500ms"] {
            let parsed = crate::plumbing::time::parse_duration(d).unwrap();
            assert_eq!(duration(parsed), d);
        }
    }

    #[test]
    fn the_stacks_otlp_collector_reaches_every_service_as_the_standard_variable() {
        let text = "telemetry: {otlp: 'http://127.0.0.1:4318'}\nservices:\n  order: {}\n  web: {command: [x]}\n";
        let stack = crate::orchestrator::stackfile::Stack::parse(text, std::path::Path::new("stack.yaml")).unwrap();
        for name in ["order", "web"] {
            let env = service(stack.service(name).unwrap());
            assert!(env.contains(&("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "http://127.0.0.1:4318".into())), "{name}");
        }
    }

    #[test]
    fn the_entrys_own_env_comes_last_so_it_overrides_the_tuning() {
        let text = "services:\n  order:\n    saga_timeout: 5s\n    env: {SHOP_CLIENT_RETRIES: \"9\"}\n";
        let stack = crate::orchestrator::stackfile::Stack::parse(text, std::path::Path::new("stack.yaml")).unwrap();
        let order = stack.service("order").unwrap();
        let env = supervised(&stack.registry, "s3cret", order);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names.first(), Some(&"SHOP_HEARTBEAT"));
        assert!(env.contains(&("SHOP_SAGA_TIMEOUT".into(), "5s".into())));
        assert!(env.contains(&("SHOP_SECRET".into(), "s3cret".into())));
        assert_eq!(env.last(), Some(&("SHOP_CLIENT_RETRIES".into(), "9".into())));
    }
}
