//! Log output. A service under a supervisor writes JSON lines (time, level, service, instance,
//! message, fields such as `trace_id`) that `shop logs` renders; on a terminal, and for every
//! command a user runs, lines are human-readable.
//!
//! A JSON line also carries the fields of the spans it was written in (innermost wins): the
//! request and saga spans set `trace_id`, `span_id` and `order_id` once, so no log call has to
//! repeat them and none can forget them.

use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;

/// Who is logging, for the JSON lines of a stack process.
pub struct Origin {
    pub service: String,
    pub instance: String,
}

/// `-q` → warn, default info, `-v` debug, `-vv` trace; `SHOP_LOG` (a tracing filter) wins.
pub fn init(verbose: u8, quiet: bool, origin: Option<Origin>) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    // A filter that does not parse is said once, not ignored: the user asked for some output.
    let mut bad_filter = None;
    let filter = match std::env::var("SHOP_LOG") {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).unwrap_or_else(|e| {
            bad_filter = Some(format!("SHOP_LOG=`{text}` is not a tracing filter ({e}); logging at `{default}`"));
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    // Colour only on a terminal and never under `NO_COLOR`, as for every other output.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match origin {
        Some(origin) if !std::io::stderr().is_terminal() => {
            // JSON lines take span fields from SpanFieldsLayer; the fmt layer's own copy of them,
            // formatted as text for every span opened, would be work nobody reads.
            let builder = builder.with_ansi(false).fmt_fields(NoFields);
            let _ = builder.event_format(JsonLines { origin }).finish().with(SpanFieldsLayer).try_init();
        }
        Some(_) => {
            let _ = builder.with_target(false).try_init();
        }
        None => {
            let _ = builder.with_target(false).without_time().try_init();
        }
    }
    if let Some(why) = bad_filter {
        tracing::warn!("{why}, e.g. SHOP_LOG=debug or SHOP_LOG=warn,shop::services::order=debug");
    }
}

struct JsonLines {
    origin: Origin,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut map = Map::new();
        map.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string().into(),
        );
        map.insert("level".into(), event.metadata().level().as_str().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    map.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut Fields(&mut map));
        // Who wrote the line, last: a field of the same name cannot make a line look as if
        // another service wrote it.
        map.insert("service".into(), self.origin.service.clone().into());
        map.insert("instance".into(), self.origin.instance.clone().into());
        writeln!(writer, "{}", Value::Object(map))
    }
}

/// A field formatter that writes nothing, for the fmt layer under [`JsonLines`].
struct NoFields;

impl<'w> FormatFields<'w> for NoFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(&self, _: Writer<'w>, _: R) -> std::fmt::Result {
        Ok(())
    }
}

/// The fields of a span as values, kept in the span's extensions for [`JsonLines`].
struct SpanFields(Map<String, Value>);

/// Keeps every span's fields (and those recorded later) as [`SpanFields`].
struct SpanFieldsLayer;

impl<S> Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut map = Map::new();
        attrs.record(&mut Fields(&mut map));
        span.extensions_mut().insert(SpanFields(map));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Fields(&mut fields.0));
        }
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}
