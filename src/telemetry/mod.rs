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
use tracing_subscriber::filter::{FilterExt as _, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use rpc::{REQUEST_ID, RpcLogLayer};

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
    // drivers'); the log lines stay as they are. With no collector no layer
    // wants a span, so a span costs next to nothing.
    let otel = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("userdir"))
            .with_filter(
                Targets::new()
                    .with_target("userdir", tracing::Level::INFO)
                    .with_target("userdir_domain", tracing::Level::INFO)
                    .with_target("userdir_store", tracing::Level::INFO),
            )
    });
    let log_filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm_migration=warn"))
            .and(filter_fn(|meta| meta.is_event()))
    };
    // Colour codes only for a person at a terminal, never into a log file or collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let registry = tracing_subscriber::registry().with(otel);
    // try_init: tests install it more than once.
    let installed = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_ansi(false)
                    .with_filter(log_filter()),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(ansi)
                    .with_filter(log_filter()),
            )
            .try_init(),
    };
    if installed.is_err() {
        // Another test installed one first: this provider has no layer.
        return Ok(Telemetry::default());
    }
    Ok(Telemetry { tracer })
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
