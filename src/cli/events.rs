//! `userdir audit` and `userdir watch`: a tenant's audit log, and its change
//! feed as JSON lines for pipelines (the last cursor on exit, to resume).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::common::{ServerArgs, authed_channel, describe_status, tenant_parent};
use crate::pb;
use crate::pb::events_client::EventsClient;

/// Print a tenant's audit log, newest first.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The tenant (`acme`).
    #[arg(long)]
    pub tenant: String,
    /// Comparisons joined by AND: `type = "user.*"`, `resource = "..."`,
    /// `principal = "apikey:..."`, `acting_user = "..."`, `import_job = "..."`,
    /// `time >= "2026-12-01T00:00:00Z"`.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// At most this many events (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Follow a tenant's change feed: every event as a JSON line.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The tenant (`acme`).
    #[arg(long)]
    pub tenant: String,
    /// Where to start: a cursor printed before, an export's `change_cursor`,
    /// or `oldest` (the whole history kept); without it, from now.
    #[arg(long, default_value = "")]
    pub cursor: String,
    /// As for `userdir audit`; events it drops still move the cursor.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// Stop after this many events (0: follow until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// An event as one JSON object: the fields people and pipelines read.
fn event_json(e: &pb::Event, cursor: Option<&str>) -> Value {
    let time = e
        .time
        .as_ref()
        .map(|t| userdir_domain::text::Timestamp::from_seconds_nanos(t.seconds, t.nanos).to_rfc3339())
        .unwrap_or_default();
    let actor = e.actor.clone().unwrap_or_default();
    let after = match &e.resource_after {
        Some(pb::event::ResourceAfter::User(u)) => json!({
            "email": u.email, "display_name": u.display_name, "enabled": u.enabled, "etag": u.etag,
        }),
        Some(pb::event::ResourceAfter::Tenant(t)) => json!({ "display_name": t.display_name, "etag": t.etag }),
        Some(pb::event::ResourceAfter::ApiKey(k)) => json!({ "display_name": k.display_name, "tenant": k.tenant }),
        Some(pb::event::ResourceAfter::ImportJobAfter(j)) => json!({ "state": j.state, "error": j.error }),
        None => Value::Null,
    };
    let mut object = json!({
        "seq": e.seq,
        "time": time,
        "type": e.r#type,
        "resource": e.resource,
        "revision": e.resource_revision,
        "principal": actor.principal,
        "acting_user": actor.acting_user,
        "acting_user_email": actor.acting_user_email,
        "request_id": e.request_id,
        "import_job": e.import_job,
        "import_line": e.import_line,
        "changed_paths": e.changed_paths.as_ref().map(|m| m.paths.clone()).unwrap_or_default(),
        "after": after,
    });
    if let (Some(cursor), Some(map)) = (cursor, object.as_object_mut()) {
        map.insert("cursor".into(), Value::String(cursor.to_owned()));
    }
    object
}

pub async fn audit(args: AuditArgs) -> ExitCode {
    match print_audit(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userdir audit: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn print_audit(args: AuditArgs) -> Result<(), String> {
    let mut client = EventsClient::new(authed_channel(&args.server).await?);
    let parent = tenant_parent(&args.tenant)?;
    let mut out = std::io::stdout().lock();
    let mut printed = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit_events(pb::ListAuditEventsRequest {
                parent: parent.clone(),
                filter: args.filter.clone(),
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| describe_status(&s))?
            .into_inner();
        for e in &page.events {
            if args.limit != 0 && printed == args.limit {
                return Ok(());
            }
            let line = if args.json {
                event_json(e, None).to_string()
            } else {
                let j = event_json(e, None);
                let who = match j["acting_user_email"].as_str() {
                    Some(email) if !email.is_empty() => {
                        format!("{email} via {}", j["principal"].as_str().unwrap_or(""))
                    }
                    _ => j["principal"].as_str().unwrap_or("").to_owned(),
                };
                format!(
                    "{}\t{}\t{}\t{}\t{}",
                    e.seq,
                    j["time"].as_str().unwrap_or(""),
                    e.r#type,
                    e.resource,
                    who
                )
            };
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            printed += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

pub async fn watch(args: WatchArgs) -> ExitCode {
    let mut last = args.cursor.clone();
    let result = follow(&args, &mut last).await;
    // The cursor to resume from, whatever ended the watch.
    eprintln!("cursor: {last}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userdir watch: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn follow(args: &WatchArgs, last: &mut String) -> Result<(), String> {
    let mut client = EventsClient::new(authed_channel(&args.server).await?);
    let mut stream = client
        .watch_changes(pb::WatchChangesRequest {
            parent: tenant_parent(&args.tenant)?,
            cursor: args.cursor.clone(),
            filter: args.filter.clone(),
            bookmark_interval: None,
        })
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    let mut seen = 0;
    loop {
        let message = tokio::select! {
            message = stream.message() => message.map_err(|s| describe_status(&s))?,
            () = super::shutdown_signal() => return Ok(()),
        };
        let Some(message) = message else { return Ok(()) };
        match message.kind {
            Some(pb::watch_changes_response::Kind::Event(change)) => {
                if let Some(event) = &change.event {
                    writeln!(out, "{}", event_json(event, Some(&change.cursor))).map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
                *last = change.cursor;
                seen += 1;
                if args.count != 0 && seen == args.count {
                    return Ok(());
                }
            }
            Some(pb::watch_changes_response::Kind::Bookmark(bookmark)) => *last = bookmark.cursor,
            None => {}
        }
    }
}
