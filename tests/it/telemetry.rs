//! Traces, metrics and logs as an operator receives them: a `userdir serve`
//! process configured only by the standard OpenTelemetry variables and
//! `--metrics-listen`, exporting over OTLP/gRPC to a collector that runs in
//! the test, and scraped over plain HTTP like Prometheus does.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::transport::Channel;
use userdir::pb::import_users_request::Payload;
use userdir::pb::import_users_response::Payload as Out;
use userdir::pb::tenant_admin_client::TenantAdminClient;
use userdir::pb::user_directory_client::UserDirectoryClient;
use userdir::pb::{
    CreateTenantRequest, CreateUserRequest, ExportUsersRequest, ImportEnd, ImportMode, ImportOptions,
    ImportUsersRequest, Tenant, User,
};

use crate::common::{TestServer, free_port, json_log_line};

/// What the collector received.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    service_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            if let Some(r) = &resource.resource
                && let Some(name) = string_attr(&r.attributes, "service.name")
            {
                self.service_names.lock().unwrap().push(name);
            }
            for scope in resource.scope_spans {
                self.spans.lock().unwrap().extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Starts the collector's gRPC services on an ephemeral port.
    async fn start() -> (Self, std::net::SocketAddr) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()));
        tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        (collector, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Data points of the last export of metric `name`, as (attributes, value):
    /// the sum of a counter, the count of a histogram, the value of a gauge.
    fn points(&self, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        let exports = self.metrics.lock().unwrap();
        for export in exports.iter().rev() {
            for resource in &export.resource_metrics {
                for scope in &resource.scope_metrics {
                    if let Some(metric) = scope.metrics.iter().find(|m| m.name == name) {
                        return match &metric.data {
                            Some(Data::Sum(s)) => s
                                .data_points
                                .iter()
                                .map(|p| (attrs(&p.attributes), number(p.value.as_ref())))
                                .collect(),
                            Some(Data::Gauge(g)) => g
                                .data_points
                                .iter()
                                .map(|p| (attrs(&p.attributes), number(p.value.as_ref())))
                                .collect(),
                            Some(Data::Histogram(h)) => h
                                .data_points
                                .iter()
                                .map(|p| (attrs(&p.attributes), p.count as f64))
                                .collect(),
                            _ => Vec::new(),
                        };
                    }
                }
            }
        }
        Vec::new()
    }
}

fn number(value: Option<&opentelemetry_proto::tonic::metrics::v1::number_data_point::Value>) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match value {
        Some(Value::AsInt(i)) => *i as f64,
        Some(Value::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

fn attr_text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attrs(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .filter_map(|kv| Some((kv.key.clone(), attr_text(kv)?)))
        .collect()
}

fn string_attr(list: &[KeyValue], key: &str) -> Option<String> {
    list.iter().find(|kv| kv.key == key).and_then(attr_text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `userdir serve` process on the test server's database, exporting to `collector`.
struct Observed {
    child: Child,
    channel: Channel,
    metrics_port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Observed {
    async fn start(s: &TestServer, collector: std::net::SocketAddr) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("userdir.log");
        let o = &s.store_options;
        let child = Command::new(env!("CARGO_BIN_EXE_userdir"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--database-url", &o.url, "--log-format", "json"])
            .args(["--pg-schema", o.pg_schema.as_deref().unwrap_or("")])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
            .env("OTEL_SERVICE_NAME", "userdir-under-test")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("RUST_LOG", "info")
            .env_remove("OTEL_SDK_DISABLED")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut observed = None;
        for _ in 0..200 {
            if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect()
                .await
            {
                observed = Some(channel);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut this = Self {
            child,
            channel: Channel::from_static("http://0.0.0.0:1").connect_lazy(),
            metrics_port,
            log,
            _dir: dir,
        };
        match observed {
            Some(channel) => this.channel = channel,
            None => panic!("the userdir process never listened: {}", this.log_text()),
        }
        this
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics` over plain HTTP/1.1: (status line, body).
    fn scrape(&self, path: &str) -> (String, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus text exposition, parsed strictly: every sample line is
/// `name{label="value",...} number`, every family has a TYPE.
fn parse_prometheus(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = HashMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), HashMap::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(&name)
            .to_owned();
        assert!(
            typed.contains(&family) || typed.contains(&name),
            "{name} has no TYPE line"
        );
        samples.push((name, labels, value));
    }
    samples
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(found) = probe() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never saw {what}");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// One CreateUser with the caller's `traceparent`, one import and one
/// export: the collector gets their spans (with the RPC conventions'
/// attributes, the caller's trace, database and batch children) and
/// metrics, Prometheus scrapes parse, and the log line carries the ids.
async fn spans_metrics_and_logs_reach_the_operator(s: TestServer) {
    let (collector, collector_addr) = Collector::start().await;
    let server = Observed::start(&s, collector_addr).await;
    let operator = crate::common::with_key(&server.channel, Some(crate::common::operator_key()));
    let mut tenants = TenantAdminClient::new(operator.clone());
    let mut users = UserDirectoryClient::new(operator);
    tenants
        .create_tenant(CreateTenantRequest {
            tenant_id: "acme".into(),
            tenant: Some(Tenant {
                display_name: "Acme".into(),
                ..Default::default()
            }),
            initial_owner: None,
        })
        .await
        .unwrap();
    let mut create = tonic::Request::new(CreateUserRequest {
        parent: "tenants/acme".into(),
        user: Some(User {
            email: "traced@example.com".into(),
            display_name: "Traced".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN}-01").parse().unwrap(),
    );
    create
        .metadata_mut()
        .insert("x-request-id", "req-telemetry-1".parse().unwrap());
    users.create_user(create).await.unwrap();
    // The same address again: refused, and the log line says why.
    let mut again = tonic::Request::new(CreateUserRequest {
        parent: "tenants/acme".into(),
        user: Some(User {
            email: "TRACED@example.com".into(),
            display_name: "Again".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    again
        .metadata_mut()
        .insert("x-request-id", "req-telemetry-2".parse().unwrap());
    let err = users.create_user(again).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);

    let csv = "name,email\nAnn,ann@example.com\nBob,bob@example.com\nCy,not-an-email\n";
    let messages = vec![
        ImportUsersRequest {
            payload: Some(Payload::Options(ImportOptions {
                parent: "tenants/acme".into(),
                mode: ImportMode::Upsert as i32,
                ..Default::default()
            })),
        },
        ImportUsersRequest {
            payload: Some(Payload::Chunk(csv.as_bytes().to_vec())),
        },
        ImportUsersRequest {
            payload: Some(Payload::End(ImportEnd {})),
        },
    ];
    let mut stream = users
        .import_users(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut summary = None;
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Out::Summary(job)) = message.payload {
            summary = Some(job);
        }
    }
    let job = summary.expect("import summary");
    let counts = job.counts.unwrap_or_default();
    assert_eq!((counts.created, counts.failed), (2, 1));

    let mut export = users
        .export_users(ExportUsersRequest {
            parent: "tenants/acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while export.message().await.unwrap().is_some() {}

    // Traces.
    let spans = wait_for("the spans of CreateUser, the import and the export", || {
        let spans = collector.spans();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        (names.contains(&"userdir.v1.UserDirectory/CreateUser")
            && names.contains(&"userdir.v1.UserDirectory/ImportUsers")
            && names.contains(&"userdir.v1.UserDirectory/ExportUsers")
            && names.contains(&"import.batch")
            && names.contains(&"export.segment"))
        .then_some(spans)
    })
    .await;
    let by_name = |name: &str| spans.iter().filter(|s| s.name == name).cloned().collect::<Vec<_>>();
    let creates = by_name("userdir.v1.UserDirectory/CreateUser");
    let code = |s: &Span| attrs(&s.attributes).get("rpc.grpc.status_code").cloned();
    let create = creates
        .iter()
        .find(|s| code(s).as_deref() == Some("0"))
        .expect("the CreateUser that succeeded");
    let refused = creates
        .iter()
        .find(|s| code(s).as_deref() == Some("6"))
        .expect("the CreateUser refused ALREADY_EXISTS");
    // A client's mistake is not the server's error (the RPC conventions).
    assert_ne!(
        refused.status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
    assert_eq!(hex(&create.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&create.parent_span_id),
        PARENT_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(create.kind, SpanKind::Server as i32);
    let a = attrs(&create.attributes);
    assert_eq!(a.get("rpc.system").map(String::as_str), Some("grpc"), "{a:?}");
    assert_eq!(
        a.get("rpc.service").map(String::as_str),
        Some("userdir.v1.UserDirectory")
    );
    assert_eq!(a.get("rpc.method").map(String::as_str), Some("CreateUser"));
    assert_eq!(a.get("rpc.grpc.status_code").map(String::as_str), Some("0"));
    let txn = spans
        .iter()
        .find(|s| s.name == "db.transaction" && s.parent_span_id == create.span_id)
        .expect("the insert's transaction is a child of CreateUser");
    let t = attrs(&txn.attributes);
    assert_eq!(t.get("db.operation.name").map(String::as_str), Some("insert_user"));
    let system = if s.store_options.url.starts_with("postgres") {
        "postgresql"
    } else {
        "sqlite"
    };
    assert_eq!(t.get("db.system.name").map(String::as_str), Some(system));

    let import = &by_name("userdir.v1.UserDirectory/ImportUsers")[0];
    let batches: Vec<_> = by_name("import.batch")
        .into_iter()
        .filter(|b| b.trace_id == import.trace_id)
        .collect();
    assert!(!batches.is_empty(), "the import's batches are in its trace");
    let (mut created, mut failed) = (0, 0);
    for batch in &batches {
        let b = attrs(&batch.attributes);
        created += b.get("import.created").map_or(0, |v| v.parse::<i64>().unwrap());
        failed += b.get("import.failed").map_or(0, |v| v.parse::<i64>().unwrap());
    }
    assert_eq!((created, failed), (2, 0), "the bad row never reached a batch's writes");
    let export_span = &by_name("userdir.v1.UserDirectory/ExportUsers")[0];
    let segments: Vec<_> = by_name("export.segment")
        .into_iter()
        .filter(|seg| seg.trace_id == export_span.trace_id)
        .collect();
    let rows: i64 = segments
        .iter()
        .map(|seg| attrs(&seg.attributes)["export.rows"].parse::<i64>().unwrap())
        .sum();
    assert_eq!(rows, 3, "the export's segments carry its rows");
    let names = collector.service_names.lock().unwrap().clone();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "userdir-under-test"),
        "OTEL_SERVICE_NAME names the service: {names:?}"
    );

    // OTLP metrics.
    let created_rows = wait_for("import rows in the OTLP metrics", || {
        let points = collector.points("userdir.import.rows");
        let created = points
            .iter()
            .find(|(a, _)| a.get("outcome").map(String::as_str) == Some("created"))?;
        let failed = points
            .iter()
            .find(|(a, _)| a.get("outcome").map(String::as_str) == Some("failed"))?;
        Some((created.1, failed.1))
    })
    .await;
    assert_eq!(created_rows, (2.0, 1.0));
    let calls = collector.points("rpc.server.call.duration");
    let create_calls = calls
        .iter()
        .find(|(a, _)| {
            a.get("rpc.method").map(String::as_str) == Some("CreateUser")
                && a.get("rpc.grpc.status_code").map(String::as_str) == Some("0")
        })
        .expect("CreateUser's duration");
    assert_eq!(create_calls.1, 1.0);
    let exported = collector.points("userdir.export.rows");
    assert_eq!(exported.iter().map(|(_, v)| v).sum::<f64>(), 3.0);

    // Prometheus.
    let (status, body) = server.scrape("/metrics");
    assert!(status.contains("200"), "{status}");
    let samples = parse_prometheus(&body);
    let sample = |name: &str, label: (&str, &str)| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.get(label.0).map(String::as_str) == Some(label.1)
                    && l.get("rpc_grpc_status_code").is_none_or(|c| c == "0")
            })
            .map(|(_, _, v)| *v)
    };
    assert_eq!(sample("userdir_import_rows_total", ("outcome", "created")), Some(2.0));
    assert_eq!(
        sample("rpc_server_call_duration_seconds_count", ("rpc_method", "CreateUser")),
        Some(1.0)
    );
    assert_eq!(
        sample("userdir_health_serving", ("otel_scope_name", "userdir")),
        Some(1.0)
    );
    assert!(
        sample("db_client_connection_max", ("db_client_connection_pool_name", "main")).is_some(),
        "pool gauges: {body}"
    );
    assert!(server.scrape("/nope").0.contains("404"));

    // The log line of CreateUser: its request id and the caller's trace id.
    let log = server.log_text();
    let line = json_log_line(&log, |l| l["request_id"] == "req-telemetry-1");
    assert_eq!(line["method"], "/userdir.v1.UserDirectory/CreateUser", "{line}");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(
        line["principal"],
        crate::common::operator_principal(),
        "who called: {line}"
    );
    assert!(
        !log.contains(&crate::common::operator_key()[36..]),
        "no part of the key's secret is logged"
    );
    let refused = json_log_line(&log, |l| l["request_id"] == "req-telemetry-2");
    assert_eq!(refused["status"], "AlreadyExists", "{refused}");
    assert_eq!(refused["reason"], "EMAIL_ALREADY_EXISTS", "{refused}");
}

crate::on_both_backends!(spans_metrics_and_logs_reach_the_operator);
