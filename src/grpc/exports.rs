//! `ExportUsers`: pages of a snapshot -> CSV chunks or User batches -> a
//! trailer with the count and checksum. Sent through a bounded channel from a
//! spawned task: a slow reader pauses the database reads, and a reader that
//! goes away ends the snapshot (and frees its connection) at the next send.

use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use userdir_domain::DomainError;
use userdir_domain::export::xlsx::{self, XlsxWriter};
use userdir_domain::export::{CsvEncoding, CsvSettings, CsvWriter, ExportColumn, Exporter, default_columns};
use userdir_domain::repo::UserSnapshot;
use xxhash_rust::xxh3::Xxh3Default;

use super::convert::user_to_pb;
use super::ending::Ending;
use super::to_status;
use crate::pb;
use crate::pb::export_users_response::Payload;
use crate::telemetry::metrics::Metrics;
use tracing::Instrument as _;

/// Users read per page of the snapshot.
const PAGE: u32 = 1000;
/// CSV bytes per message.
const CHUNK: usize = 64 * 1024;
/// Unmappable cells named in a FAILED_PRECONDITION.
const MAX_NAMED: usize = 20;

type Sender = mpsc::Sender<Result<pb::ExportUsersResponse, Status>>;

/// What the request asked for.
pub enum ExportFormat {
    Csv(CsvSettings),
    Xlsx(Vec<ExportColumn>),
    Rows,
}

/// Validates the request's format settings.
pub fn export_format(req: &pb::ExportUsersRequest) -> Result<ExportFormat, DomainError> {
    let format = pb::ExportFormat::try_from(req.format)
        .map_err(|_| DomainError::invalid("format", format!("{} is not an ExportFormat", req.format)))?;
    if format == pb::ExportFormat::Rows {
        return Ok(ExportFormat::Rows);
    }
    let encoding = match pb::ExportEncoding::try_from(req.encoding) {
        Ok(pb::ExportEncoding::Unspecified | pb::ExportEncoding::Utf8Bom) => CsvEncoding::Utf8Bom,
        Ok(pb::ExportEncoding::Utf8) => CsvEncoding::Utf8,
        Ok(pb::ExportEncoding::ShiftJis) => CsvEncoding::ShiftJis,
        Err(_) => {
            return Err(DomainError::invalid(
                "encoding",
                format!("{} is not an ExportEncoding", req.encoding),
            ));
        }
    };
    let columns = if req.columns.is_empty() {
        default_columns()
    } else {
        req.columns
            .iter()
            .map(|c| ExportColumn::parse(c))
            .collect::<Result<_, _>>()?
    };
    if format == pb::ExportFormat::Xlsx {
        return Ok(ExportFormat::Xlsx(columns));
    }
    Ok(ExportFormat::Csv(CsvSettings {
        columns,
        encoding,
        crlf: req.line_ending == pb::LineEnding::Crlf as i32,
        protect_formulas: !req.disable_formula_protection,
        replace_unmappable: req.unmappable == pb::UnmappablePolicy::Replace as i32,
    }))
}

/// Starts the task that streams `exporter`; returns the response channel.
pub fn spawn_export<S: UserSnapshot>(
    exporter: Exporter<S>,
    format: ExportFormat,
    mut ending: Ending,
    stall: Duration,
    metrics: Metrics,
) -> mpsc::Receiver<Result<pb::ExportUsersResponse, Status>> {
    let (tx, rx) = mpsc::channel(4);
    let task = async move {
        let out = Out {
            tx: &tx,
            stall,
            metrics: &metrics,
        };
        let work = async {
            match format {
                ExportFormat::Csv(settings) => export_csv(exporter, settings, &out).await,
                ExportFormat::Xlsx(columns) => export_xlsx(exporter, columns, &out).await,
                ExportFormat::Rows => export_rows(exporter, &out).await,
            }
        };
        // A shutdown's grace period over, or the caller's deadline passed:
        // the snapshot is given up.
        let result = tokio::select! {
            result = work => result,
            why = ending.reached() => Err(why),
        };
        // The snapshot is given up by now; the error waits behind what the
        // reader has not read yet, so the stream never ends in OK.
        if let Err(e) = result {
            let _ = tx.send(Err(to_status(e))).await;
        }
    };
    // Under the call's span: the export's segments are its children.
    tokio::spawn(task.in_current_span());
    rx
}

/// Where an export's messages go, and how long one may wait for the reader.
struct Out<'a> {
    tx: &'a Sender,
    stall: Duration,
    metrics: &'a Metrics,
}

impl Out<'_> {
    /// Sends a message; `false` when the client is gone; an error when the
    /// reader took nothing for the stall timeout (the export ends and gives
    /// its snapshot up instead of holding it for a reader that stopped).
    async fn send(&self, payload: Payload) -> Result<bool, DomainError> {
        let message = Ok(pb::ExportUsersResponse { payload: Some(payload) });
        match tokio::time::timeout(self.stall, self.tx.send(message)).await {
            Ok(sent) => Ok(sent.is_ok()),
            Err(_) => Err(DomainError::Exhausted {
                reason: "EXPORT_READER_STALLED",
                message: format!(
                    "the export's reader took nothing for {}s, so the export ended and gave up its snapshot; \
                     read the stream as it comes (or export again)",
                    self.stall.as_secs()
                ),
            }),
        }
    }
}

/// The span of one page of an export: encoding it, and sending it on.
fn segment_span(rows: usize) -> tracing::Span {
    tracing::info_span!("export.segment", export.rows = rows)
}

async fn export_csv<S: UserSnapshot>(
    mut exporter: Exporter<S>,
    settings: CsvSettings,
    out: &Out<'_>,
) -> Result<(), DomainError> {
    let replace = settings.replace_unmappable;
    let mut writer = CsvWriter::new(settings);
    let mut hasher = Xxh3Default::new();
    let mut buf = Vec::with_capacity(CHUNK * 2);
    let mut count = 0i64;
    let mut refused = false;
    writer.header(&mut buf);
    while let Some(users) = exporter.next_page(PAGE).await? {
        let segment = segment_span(users.len());
        segment.in_scope(|| {
            for user in &users {
                // After a refusal, keep reading only to name the other cells.
                if !writer.row(user, &mut buf) {
                    refused = true;
                }
                count += 1;
            }
        });
        if refused {
            buf.clear();
            if writer.unmappable.len() >= MAX_NAMED {
                break;
            }
            continue;
        }
        out.metrics.export_rows("csv", users.len() as u64);
        if buf.len() >= CHUNK {
            hasher.update(&buf);
            if !out
                .send(Payload::Chunk(std::mem::take(&mut buf)))
                .instrument(segment)
                .await?
            {
                return Ok(());
            }
        }
    }
    if refused {
        let named: Vec<String> = writer
            .unmappable
            .iter()
            .take(MAX_NAMED)
            .map(|u| format!("{} ({})", u.user, u.column))
            .collect();
        return Err(DomainError::Precondition {
            reason: "SHIFT_JIS_UNMAPPABLE",
            message: format!(
                "Shift-JIS cannot hold some characters of: {}; export as UTF-8, or set unmappable to REPLACE",
                named.join(", ")
            ),
        });
    }
    if !buf.is_empty() {
        hasher.update(&buf);
        if !out.send(Payload::Chunk(buf)).await? {
            return Ok(());
        }
    }
    let replaced = if replace {
        writer
            .unmappable
            .iter()
            .map(|u| pb::ReplacedCell {
                user: u.user.clone(),
                column: u.column.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let trailer = pb::ExportTrailer {
        user_count: count,
        checksum: format!("{:016x}", hasher.digest()),
        replaced,
        change_cursor: exporter.change_cursor().to_owned(),
    };
    out.send(Payload::Trailer(trailer)).await?;
    Ok(())
}

async fn export_xlsx<S: UserSnapshot>(
    mut exporter: Exporter<S>,
    columns: Vec<ExportColumn>,
    out: &Out<'_>,
) -> Result<(), DomainError> {
    // Refused before anything is written: a sheet has room for so many.
    if exporter.count_up_to(xlsx::MAX_USERS + 1).await? > xlsx::MAX_USERS {
        return Err(DomainError::Precondition {
            reason: "TOO_MANY_ROWS_FOR_XLSX",
            message: format!(
                "the export selects more than the {} users a sheet holds (1,048,576 rows with the header): \
                 export CSV, or narrow the export with a filter",
                xlsx::MAX_USERS
            ),
        });
    }
    let mut writer = XlsxWriter::new(columns)?;
    let mut count = 0i64;
    while let Some(users) = exporter.next_page(PAGE).await? {
        segment_span(users.len()).in_scope(|| users.iter().try_for_each(|user| writer.row(user)))?;
        count += users.len() as i64;
        out.metrics.export_rows("xlsx", users.len() as u64);
    }
    // The workbook is assembled from its rows on a blocking thread, its
    // bytes sent on as they are written.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
    let assemble = tokio::task::spawn_blocking(move || {
        let mut chunks = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        writer.finish(&mut chunks)?;
        chunks
            .send_rest()
            .map_err(|e| DomainError::storage(format!("could not send the workbook: {e}")))
    });
    let mut hasher = Xxh3Default::new();
    while let Some(chunk) = rx.recv().await {
        hasher.update(&chunk);
        if !out.send(Payload::Chunk(chunk)).await? {
            // The reader is gone: the assembly stops at its next send.
            return Ok(());
        }
    }
    assemble
        .await
        .map_err(|e| DomainError::storage(format!("the workbook's assembly stopped: {e}")))??;
    let trailer = pb::ExportTrailer {
        user_count: count,
        checksum: format!("{:016x}", hasher.digest()),
        replaced: Vec::new(),
        change_cursor: exporter.change_cursor().to_owned(),
    };
    out.send(Payload::Trailer(trailer)).await?;
    Ok(())
}

/// A workbook's bytes, in chunks of [`CHUNK`], to the export's task.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the export's reader is gone"))
    }

    /// Sends what is left.
    fn send_rest(mut self) -> std::io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send() }
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn export_rows<S: UserSnapshot>(mut exporter: Exporter<S>, out: &Out<'_>) -> Result<(), DomainError> {
    let mut hasher = Xxh3Default::new();
    let mut count = 0i64;
    while let Some(users) = exporter.next_page(PAGE).await? {
        let segment = segment_span(users.len());
        let users: Vec<pb::User> = segment.in_scope(|| {
            let users: Vec<pb::User> = users.into_iter().map(user_to_pb).collect();
            for user in &users {
                hasher.update(&user.encode_to_vec());
            }
            users
        });
        count += users.len() as i64;
        out.metrics.export_rows("rows", users.len() as u64);
        if !out
            .send(Payload::Rows(pb::ExportRows { users }))
            .instrument(segment)
            .await?
        {
            return Ok(());
        }
    }
    let trailer = pb::ExportTrailer {
        user_count: count,
        checksum: format!("{:016x}", hasher.digest()),
        replaced: Vec::new(),
        change_cursor: exporter.change_cursor().to_owned(),
    };
    out.send(Payload::Trailer(trailer)).await?;
    Ok(())
}
