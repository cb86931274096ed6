//! Telemetry: structured logs, OpenTelemetry traces and metrics.
//!
//! - Logs go to stdout (text or JSON), one line per RPC ([`rpc`]).
//! - Traces go over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and are off otherwise:
//!   `tracing` spans (one per RPC, database transactions, import batches,
//!   export segments) become OpenTelemetry spans through tracing-opentelemetry.
//! - Metrics ([`metrics`]) go over OTLP the same way, and to a Prometheus
//!   text endpoint (`--metrics-listen`) for operators without a collector.

pub mod metrics;
pub mod prometheus;
pub mod rpc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use rpc::{PrincipalSlot, REQUEST_ID, RpcLogLayer};

use crate::config::LogFormat;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{variable}={value} is not supported: userdir exports OTLP over gRPC (the collector's port 4317); \
         unset it or set it to grpc"
    )]
    Protocol { variable: String, value: String },
    #[error("cannot set up the OTLP {signal} exporter: {message}")]
    Exporter { signal: &'static str, message: String },
    #[error("cannot set up the Prometheus endpoint: {0}")]
    Prometheus(String),
}

/// What [`init`] started; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans go to a collector.
    pub fn traces_on(&self) -> bool {
        self.tracer.is_some()
    }

    /// Sends what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(e) = tracer.shutdown()
        {
            tracing::warn!(error = %e, "sending the last spans failed");
        }
    }
}

/// Installs the global subscriber: logs (`RUST_LOG` overrides the default
/// `info`), and traces when the OTLP environment asks for them. Tests call
/// it more than once; only the first call installs anything.
pub fn init(format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let tracer = if otlp_wanted(Signal::Traces)? {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter {
                signal: "traces",
                message: e.to_string(),
            })?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build(),
        )
    } else {
        None
    };
    // Spans go only to the OpenTelemetry layer (and only ours, not the
    // drivers'); the log lines stay as they are. With no collector there is
    // no such layer at all (not even an empty `Option`, which would still
    // ask for every span), so a span costs next to nothing.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if let Some(provider) = &tracer {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("userdir"))
                .with_filter(
                    Targets::new()
                        .with_target("userdir", tracing::Level::INFO)
                        .with_target("userdir_domain", tracing::Level::INFO)
                        .with_target("userdir_store", tracing::Level::INFO),
                )
                .boxed(),
        );
    }
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn"))
            .and(EventsOnly)
    };
    // Colour codes only for a person at a terminal, never into a log file or collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    layers.push(match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_ansi(false)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_filter(log_filter())
            .boxed(),
    });
    // try_init: tests install it more than once.
    let installed = tracing_subscriber::registry().with(layers).try_init();
    if installed.is_err() {
        // Another test installed one first: this provider has no layer.
        return Ok(Telemetry::default());
    }
    Ok(Telemetry { tracer })
}

/// The log layer's filter beside `RUST_LOG`: events, never spans (they
/// are the traces'). It says so per callsite and sets no level of its own:
/// a filter without a level hint (`filter_fn`) made the whole subscriber
/// listen at TRACE, and every trace-level callsite in h2, hyper and sqlx was
/// then asked at run time, call after call (SQLite GetUser: ~40 µs more
/// server CPU per call, measured with loadgen).
struct EventsOnly;

impl<S> Filter<S> for EventsOnly {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        !meta.is_span()
    }

    fn callsite_enabled(&self, meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        // Events, and `enabled!` hints (sqlx asks one before it logs a slow statement).
        if !meta.is_span() {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

/// An OTLP signal.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }
}

/// Whether the standard OpenTelemetry environment asks for `signal` over
/// OTLP: an endpoint is set, the SDK is not disabled and the signal's
/// exporter is not `none`. A protocol other than gRPC is refused by name
/// rather than silently sending nothing.
pub(crate) fn otlp_wanted(signal: Signal) -> Result<bool, TelemetryError> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    let upper = signal.upper();
    if var(&format!("OTEL_{upper}_EXPORTER")).is_some_and(|v| v.eq_ignore_ascii_case("none")) {
        return Ok(false);
    }
    let endpoint = var(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")).or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if endpoint.is_none() {
        return Ok(false);
    }
    for variable in [
        format!("OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"),
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
    ] {
        if let Some(value) = var(&variable) {
            if value != "grpc" {
                return Err(TelemetryError::Protocol { variable, value });
            }
            break;
        }
    }
    Ok(true)
}

/// The service's resource: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
/// as the SDK reads them, else the name `userdir`; and its version.
pub(crate) fn resource() -> Resource {
    let builder = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = if named {
        builder
    } else {
        builder.with_service_name("userdir")
    };
    builder
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    /// With no collector nothing wants a span, and the subscriber's level
    /// stays at the logs' INFO: callsites below it (h2, hyper, sqlx) cost
    /// nothing.
    #[test]
    fn without_a_collector_spans_and_trace_callsites_cost_nothing() {
        if std::env::var_os("RUST_LOG").is_some() || std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            return;
        }
        let telemetry = super::init(crate::config::LogFormat::Text);
        assert!(matches!(telemetry, Ok(ref t) if !t.traces_on()));
        assert!(
            LevelFilter::current() <= LevelFilter::INFO,
            "{}",
            LevelFilter::current()
        );
        assert!(tracing::info_span!("rpc").is_disabled());
        assert!(!tracing::enabled!(tracing::Level::DEBUG));
        assert!(tracing::enabled!(tracing::Level::INFO));
    }
}
