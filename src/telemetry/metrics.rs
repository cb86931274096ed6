//! The service's metrics: instruments the RPC layer, imports and exports
//! record into, gauges read from the store and the health probe, and the
//! meter provider that sends them over OTLP and/or to the Prometheus endpoint.
//!
//! Names follow OpenTelemetry's semantic conventions where one exists
//! (`rpc.server.call.duration`, `db.client.connection.count`); the rest are
//! `userdir.*`. In Prometheus, dots become underscores and units suffixes
//! (`rpc_server_call_duration_seconds`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use userdir_store::Store;

use super::{Signal, TelemetryError, otlp_wanted, resource};

/// Bucket bounds of durations in seconds: from a fast GetUser (a few
/// hundred microseconds) to a long import.
const SECONDS_BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Bucket bounds of an import's rows per second.
const ROWS_PER_SECOND_BUCKETS: [f64; 10] = [
    100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 75_000.0, 100_000.0, 200_000.0,
];

/// The instruments, cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Instruments>);

struct Instruments {
    rpc_duration: Histogram<f64>,
    rpc_active: UpDownCounter<i64>,
    import_rows: Counter<u64>,
    import_throughput: Histogram<f64>,
    export_rows: Counter<u64>,
    transaction_wait: Histogram<f64>,
    feed_lag: Histogram<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        Self(Arc::new(Instruments {
            rpc_duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of RPCs the server answered, by method and gRPC status code")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            rpc_active: meter
                .i64_up_down_counter("userdir.rpc.active_calls")
                .with_unit("{call}")
                .with_description("RPCs in progress (open import and export streams among them), by method")
                .build(),
            import_rows: meter
                .u64_counter("userdir.import.rows")
                .with_unit("{row}")
                .with_description("Import rows reported, by outcome (rate() gives rows per second)")
                .build(),
            import_throughput: meter
                .f64_histogram("userdir.import.throughput")
                .with_unit("{row}/s")
                .with_description("Rows per second of each import that finished")
                .with_boundaries(ROWS_PER_SECOND_BUCKETS.to_vec())
                .build(),
            export_rows: meter
                .u64_counter("userdir.export.rows")
                .with_unit("{row}")
                .with_description("Users sent by exports, by format")
                .build(),
            transaction_wait: meter
                .f64_histogram("userdir.db.transaction.wait_time")
                .with_unit("s")
                .with_description(
                    "Time for a write transaction (or an export's snapshot) to begin: the wait for a pooled \
                     connection, or SQLite's one writer, and BEGIN",
                )
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            feed_lag: meter
                .f64_histogram("userdir.feed.delivery_lag")
                .with_unit("s")
                .with_description("Time from an event's write to its delivery to a change-feed watcher")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
        }))
    }

    /// An event reached a watcher `lag` after it was written.
    pub fn feed_lag(&self, lag: Duration) {
        self.0.feed_lag.record(lag.as_secs_f64(), &[]);
    }

    /// One RPC answered.
    pub fn rpc_done(&self, method: &RpcMethod, code: i32, seconds: f64) {
        let attributes = [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", method.service.clone()),
            KeyValue::new("rpc.method", method.method.clone()),
            KeyValue::new("rpc.grpc.status_code", i64::from(code)),
        ];
        self.0.rpc_duration.record(seconds, &attributes);
    }

    /// One RPC began (`+1`) or ended (`-1`).
    pub fn rpc_active(&self, method: &RpcMethod, delta: i64) {
        let attributes = [
            KeyValue::new("rpc.service", method.service.clone()),
            KeyValue::new("rpc.method", method.method.clone()),
        ];
        self.0.rpc_active.add(delta, &attributes);
    }

    /// Import rows reported with `outcome` (`created`, `failed`...).
    pub fn import_rows(&self, outcome: &'static str, rows: u64) {
        if rows > 0 {
            self.0.import_rows.add(rows, &[KeyValue::new("outcome", outcome)]);
        }
    }

    /// An import finished: its rows per second.
    pub fn import_finished(&self, rows: u64, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if rows > 0 && seconds > 0.0 {
            self.0.import_throughput.record(rows as f64 / seconds, &[]);
        }
    }

    /// An export sent `rows` users as `format` (`csv` or `rows`).
    pub fn export_rows(&self, format: &'static str, rows: u64) {
        if rows > 0 {
            self.0.export_rows.add(rows, &[KeyValue::new("format", format)]);
        }
    }
}

/// An RPC's service and method as metric attributes: a path that names no
/// method we serve (UNIMPLEMENTED) becomes `_OTHER`, so a client cannot grow
/// the number of series.
#[derive(Clone, Debug)]
pub struct RpcMethod {
    pub service: opentelemetry::StringValue,
    pub method: opentelemetry::StringValue,
}

/// The methods this server serves, by gRPC path, with their attribute
/// values (shared, not copied per call), read from the descriptor sets.
static SERVED: std::sync::LazyLock<HashMap<String, RpcMethod>> = std::sync::LazyLock::new(|| {
    use prost::Message as _;
    let sets = [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut served = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let service_name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    served.insert(
                        format!("/{service_name}/{}", method.name()),
                        RpcMethod {
                            service: Arc::<str>::from(service_name.as_str()).into(),
                            method: Arc::<str>::from(method.name()).into(),
                        },
                    );
                }
            }
        }
    }
    served
});

impl RpcMethod {
    /// From a gRPC path, `/package.Service/Method`; `_OTHER` for a path we do not serve.
    pub fn from_path(path: &str) -> Self {
        SERVED.get(path).cloned().unwrap_or_else(Self::other)
    }

    /// The same, for a call that named nothing we serve.
    pub fn other() -> Self {
        Self {
            service: "_OTHER".into(),
            method: "_OTHER".into(),
        }
    }
}

/// The meter provider and what serves it; [`MetricsRuntime::shutdown`]
/// sends the last OTLP export.
pub struct MetricsRuntime {
    provider: SdkMeterProvider,
    prometheus: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsRuntime {
    /// Stops the Prometheus endpoint and flushes OTLP.
    pub fn shutdown(self) {
        if let Some(server) = self.prometheus {
            server.abort();
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics provider shutdown");
        }
    }
}

/// Starts the metrics: OTLP when the environment asks for it, Prometheus
/// on `prometheus_listen` when given; gauges of `store`'s pools and of
/// `serving`. Neither on: the instruments record nothing.
pub async fn start(
    prometheus_listen: Option<SocketAddr>,
    store: &Store,
    serving: Arc<AtomicBool>,
    feed: Arc<userdir_domain::feed::FeedStats>,
) -> Result<(Metrics, MetricsRuntime), TelemetryError> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource());
    if otlp_wanted(Signal::Metrics)? {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter {
                signal: "metrics",
                message: e.to_string(),
            })?;
        // The interval: OTEL_METRIC_EXPORT_INTERVAL (ms), else 60 s.
        builder = builder.with_periodic_exporter(exporter);
    }
    let prometheus = match prometheus_listen {
        Some(addr) => {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
            builder = builder.with_reader(exporter);
            Some(super::prometheus::serve(addr, registry).await?)
        }
        None => None,
    };
    let provider = builder.build();
    let meter = provider.meter("userdir");
    let metrics = Metrics::new(&meter);
    observe_store(&meter, store, &metrics);
    observe_feed(&meter, feed);
    meter
        .i64_observable_gauge("userdir.health.serving")
        .with_description("1 while the server reports SERVING (its database answers), else 0")
        .with_callback(move |gauge| gauge.observe(i64::from(serving.load(Ordering::Relaxed)), &[]))
        .build();
    Ok((metrics, MetricsRuntime { provider, prometheus }))
}

/// The change feed: watchers open, events delivered, batches read.
fn observe_feed(meter: &Meter, feed: Arc<userdir_domain::feed::FeedStats>) {
    let stats = Arc::clone(&feed);
    meter
        .i64_observable_gauge("userdir.feed.watchers")
        .with_unit("{watcher}")
        .with_description("Change-feed watchers open")
        .with_callback(move |gauge| gauge.observe(stats.watchers.load(Ordering::Relaxed), &[]))
        .build();
    let stats = Arc::clone(&feed);
    meter
        .u64_observable_counter("userdir.feed.events_delivered")
        .with_unit("{event}")
        .with_description("Events handed to change-feed watchers")
        .with_callback(move |counter| counter.observe(stats.delivered.load(Ordering::Relaxed), &[]))
        .build();
    meter
        .u64_observable_counter("userdir.feed.batches_read")
        .with_unit("{batch}")
        .with_description("Batches of new events read from the database, once for all watchers of a tenant")
        .with_callback(move |counter| counter.observe(feed.hub_reads.load(Ordering::Relaxed), &[]))
        .build();
}

/// Pool gauges, and the store's transaction waits into the histogram.
fn observe_store(meter: &Meter, store: &Store, metrics: &Metrics) {
    let system = store.system_name();
    let pools = store.clone();
    meter
        .i64_observable_gauge("db.client.connection.count")
        .with_unit("{connection}")
        .with_description("Open database connections, by pool and state (used or idle)")
        .with_callback(move |gauge| {
            for pool in pools.pool_stats() {
                let name = KeyValue::new("db.client.connection.pool.name", pool.pool);
                let used = i64::from(pool.open.saturating_sub(pool.idle));
                gauge.observe(
                    used,
                    &[name.clone(), KeyValue::new("db.client.connection.state", "used")],
                );
                gauge.observe(
                    i64::from(pool.idle),
                    &[name, KeyValue::new("db.client.connection.state", "idle")],
                );
            }
        })
        .build();
    let pools = store.clone();
    meter
        .i64_observable_gauge("db.client.connection.max")
        .with_unit("{connection}")
        .with_description("The most connections each pool opens")
        .with_callback(move |gauge| {
            for pool in pools.pool_stats() {
                gauge.observe(
                    i64::from(pool.max),
                    &[KeyValue::new("db.client.connection.pool.name", pool.pool)],
                );
            }
        })
        .build();
    let wait = metrics.0.transaction_wait.clone();
    store.observe_transactions(Arc::new(move |operation, took| {
        wait.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("db.system.name", system),
                KeyValue::new("db.operation.name", operation),
            ],
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::RpcMethod;

    #[test]
    fn only_served_methods_get_series_of_their_own() {
        let create = RpcMethod::from_path("/userdir.v1.UserDirectory/CreateUser");
        assert_eq!(
            (create.service.as_str(), create.method.as_str()),
            ("userdir.v1.UserDirectory", "CreateUser")
        );
        let check = RpcMethod::from_path("/grpc.health.v1.Health/Check");
        assert_eq!(check.method.as_str(), "Check");
        let reflection = RpcMethod::from_path("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
        assert_eq!(reflection.method.as_str(), "ServerReflectionInfo");
        for junk in [
            "/userdir.v1.UserDirectory/Nope",
            "/x/y",
            "",
            "/",
            "/userdir.v1.UserDirectory",
        ] {
            let other = RpcMethod::from_path(junk);
            assert_eq!(
                (other.service.as_str(), other.method.as_str()),
                ("_OTHER", "_OTHER"),
                "{junk}"
            );
        }
    }
}
