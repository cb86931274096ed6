//! ExportUsers: seed 001's CSV, Shift-JIS, formula protection, ROWS, the
//! trailer, snapshots, and the round trip through ImportUsers.

use std::collections::HashMap;

use tonic::Code;
use userdir::pb::export_users_response::Payload as ExportOut;
use userdir::pb::import_users_request::Payload;
use userdir::pb::{
    DeleteUserRequest, ExportEncoding, ExportFormat, ExportTrailer, ExportUsersRequest, ImportEnd, ImportMode,
    ImportOptions, ImportOutcome, ImportUsersRequest, LookupUserRequest, UnmappablePolicy, User,
};
use xxhash_rust::xxh3::xxh3_64;

use crate::common::{TestServer, reason};

pub(crate) fn request(tenant: &str) -> ExportUsersRequest {
    ExportUsersRequest {
        parent: format!("tenants/{tenant}"),
        ..Default::default()
    }
}

/// The CSV bytes and the trailer (None when the stream was cut).
pub(crate) async fn export_csv(
    s: &TestServer,
    req: ExportUsersRequest,
) -> Result<(Vec<u8>, Option<ExportTrailer>), tonic::Status> {
    let mut stream = s.users.clone().export_users(req).await?.into_inner();
    let (mut bytes, mut trailer) = (Vec::new(), None);
    while let Some(m) = stream.message().await? {
        match m.payload {
            Some(ExportOut::Chunk(c)) => bytes.extend(c),
            Some(ExportOut::Trailer(t)) => trailer = Some(t),
            _ => {}
        }
    }
    Ok((bytes, trailer))
}

async fn import_bytes(s: &TestServer, tenant: &str, bytes: &[u8]) -> Vec<i32> {
    let messages = vec![
        ImportUsersRequest {
            payload: Some(Payload::Options(ImportOptions {
                parent: format!("tenants/{tenant}"),
                mode: ImportMode::Upsert as i32,
                ..Default::default()
            })),
        },
        ImportUsersRequest {
            payload: Some(Payload::Chunk(bytes.to_vec())),
        },
        ImportUsersRequest {
            payload: Some(Payload::End(ImportEnd {})),
        },
    ];
    let mut stream = s
        .users
        .clone()
        .import_users(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut outcomes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        if let Some(userdir::pb::import_users_response::Payload::Results(r)) = m.payload {
            outcomes.extend(r.results.into_iter().map(|r| r.outcome));
        }
    }
    outcomes
}

async fn seed(s: &TestServer) {
    s.tenant("acme").await;
    let people = [
        ("taro@example.jp", "髙橋 ソ 表 能", "①㈱～"),
        ("plain@example.com", "Plain, Person", "=SUM(A1)"),
        ("quote@example.com", "Say \"hi\"", " padded "),
    ];
    for (email, name, c1) in people {
        let user = User {
            email: email.into(),
            display_name: name.into(),
            custom_attributes: HashMap::from([("custom_01".into(), c1.into())]),
            ..Default::default()
        };
        s.create("acme", user).await.unwrap();
    }
}

async fn seed_001_csv_format(s: TestServer) {
    seed(&s).await;
    let (bytes, trailer) = export_csv(&s, request("acme")).await.unwrap();
    let trailer = trailer.expect("a complete export ends with a trailer");
    assert_eq!(trailer.user_count, 3);
    assert_eq!(trailer.checksum, format!("{:016x}", xxh3_64(&bytes)));
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "UTF-8 with BOM");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let mut lines = text.split('\n');
    assert_eq!(
        lines.next().unwrap(),
        "userid,email,name,enabled,status,created,updated,custom_01,custom_02,custom_03,custom_04,custom_05,custom_06,custom_07,custom_08,custom_09,custom_10"
    );
    assert!(!text.contains('\r'), "LF line endings");
    let taro = lines.next().unwrap();
    assert!(
        taro.contains(",taro@example.jp,髙橋 ソ 表 能,true,UNCONFIRMED,"),
        "{taro}"
    );
    assert!(
        taro.contains("Z,①㈱～,,,,,,,,,"),
        "RFC 3339 UTC times, unquoted: {taro}"
    );
    assert!(text.contains("\"Plain, Person\""), "quoted only when needed");
    assert!(text.contains(",'=SUM(A1),"), "formula protection");
    assert!(text.contains("\"Say \"\"hi\"\"\""));
    assert!(text.contains(",\" padded \","));
}

/// An XLSX export: one sheet of text cells with seed 001's header, Japanese
/// text exact, a formula-looking value as text (never a formula), the
/// trailer's count and the checksum of the file's bytes.
async fn xlsx_holds_text_cells(s: TestServer) {
    use calamine::{Data, Reader, Xlsx};
    seed(&s).await;
    let req = ExportUsersRequest {
        format: ExportFormat::Xlsx as i32,
        ..request("acme")
    };
    let (bytes, trailer) = export_csv(&s, req).await.unwrap();
    let trailer = trailer.expect("a complete export ends with a trailer");
    assert_eq!(trailer.user_count, 3);
    assert_eq!(trailer.checksum, format!("{:016x}", xxh3_64(&bytes)));
    assert!(bytes.starts_with(b"PK\x03\x04"), "a zip: an xlsx");
    let mut book = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(book.sheet_names(), ["users"]);
    let formulas = book.worksheet_formula("users").unwrap();
    assert!(formulas.used_cells().next().is_none(), "no cell is a formula");
    let sheet = book.worksheet_range("users").unwrap();
    let rows: Vec<Vec<String>> = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(
        rows[0].join(","),
        "userid,email,name,enabled,status,created,updated,custom_01,custom_02,custom_03,custom_04,custom_05,custom_06,custom_07,custom_08,custom_09,custom_10"
    );
    let row = |email: &str| rows.iter().find(|r| r[1] == email).unwrap().clone();
    let taro = row("taro@example.jp");
    assert_eq!(
        (taro[2].as_str(), taro[3].as_str(), taro[7].as_str()),
        ("髙橋 ソ 表 能", "true", "①㈱～")
    );
    assert!(taro[5].ends_with('Z'), "RFC 3339 UTC times: {}", taro[5]);
    assert_eq!(
        row("plain@example.com")[7],
        "=SUM(A1)",
        "as written: a text cell cannot run"
    );
    assert_eq!(row("quote@example.com")[7], " padded ");
    assert!(
        sheet.used_cells().all(|(_, _, c)| matches!(c, Data::String(_))),
        "every cell is text"
    );
}

async fn shift_jis_exact_and_unmappable(s: TestServer) {
    seed(&s).await;
    let req = ExportUsersRequest {
        encoding: ExportEncoding::ShiftJis as i32,
        columns: vec!["email".into(), "name".into(), "custom_01".into()],
        ..request("acme")
    };
    let (bytes, trailer) = export_csv(&s, req.clone()).await.unwrap();
    assert!(trailer.is_some());
    let (expected, _, unmappable) =
        encoding_rs::SHIFT_JIS.encode("email,name,custom_01\ntaro@example.jp,髙橋 ソ 表 能,①㈱～\n");
    assert!(!unmappable);
    assert!(bytes.starts_with(&expected), "byte-exact Windows-31J");

    let odd = User {
        email: "yoshi@example.jp".into(),
        display_name: "𠮷野 😀".into(),
        ..Default::default()
    };
    s.create("acme", odd).await.unwrap();
    let err = export_csv(&s, req.clone()).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "SHIFT_JIS_UNMAPPABLE")
    );
    assert!(err.message().contains("(name)"), "{}", err.message());
    let replace = ExportUsersRequest {
        unmappable: UnmappablePolicy::Replace as i32,
        ..req
    };
    let (bytes, trailer) = export_csv(&s, replace).await.unwrap();
    let trailer = trailer.unwrap();
    assert_eq!(trailer.replaced.len(), 1);
    assert_eq!(trailer.replaced[0].column, "name");
    let (decoded, _, _) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(decoded.contains("yoshi@example.jp,?野 ?,"), "{decoded}");
    assert!(!bytes.windows(2).any(|w| w == b"&#"), "never HTML numeric references");
}

async fn round_trip_through_import(s: TestServer) {
    seed(&s).await;
    // Each CSV encoding, and an Excel workbook (`encoding` -1 names it).
    let formats = [
        (ExportFormat::Csv, ExportEncoding::Utf8Bom),
        (ExportFormat::Csv, ExportEncoding::Utf8),
        (ExportFormat::Csv, ExportEncoding::ShiftJis),
        (ExportFormat::Xlsx, ExportEncoding::Unspecified),
    ];
    for (format, encoding) in formats {
        let (bytes, _) = export_csv(
            &s,
            ExportUsersRequest {
                format: format as i32,
                encoding: encoding as i32,
                ..request("acme")
            },
        )
        .await
        .unwrap();
        let encoding = (format, encoding);
        let outcomes = import_bytes(&s, "acme", &bytes).await;
        assert_eq!(outcomes, vec![ImportOutcome::Unchanged as i32; 3], "{encoding:?}");
        // Into an empty tenant: the same users again.
        let tenant = format!("copy-{}-{}", format as i32, encoding.1 as i32);
        s.tenant(&tenant).await;
        let outcomes = import_bytes(&s, &tenant, &bytes).await;
        assert_eq!(outcomes, vec![ImportOutcome::Created as i32; 3], "{encoding:?}");
        for email in ["taro@example.jp", "plain@example.com", "quote@example.com"] {
            let find = |t: &str| LookupUserRequest {
                parent: format!("tenants/{t}"),
                key: Some(userdir::pb::lookup_user_request::Key::Email(email.into())),
            };
            let a = s.users.clone().lookup_user(find("acme")).await.unwrap().into_inner();
            let b = s.users.clone().lookup_user(find(&tenant)).await.unwrap().into_inner();
            assert_eq!(
                (a.display_name, a.custom_attributes),
                (b.display_name, b.custom_attributes)
            );
        }
    }
}

/// Imports 7,000 users (more pages than the server buffers ahead) and starts
/// a ROWS export of them.
async fn seven_pages_of_rows(s: &TestServer) -> tonic::Streaming<userdir::pb::ExportUsersResponse> {
    s.tenant("acme").await;
    let mut csv = String::from("name,email\n");
    for i in 0..7000 {
        csv.push_str(&format!("User {i},u{i:05}@example.com\n"));
    }
    import_bytes(s, "acme", csv.as_bytes()).await;
    let req = ExportUsersRequest {
        format: ExportFormat::Rows as i32,
        ..request("acme")
    };
    s.users.clone().export_users(req).await.unwrap().into_inner()
}

async fn rows_over_a_snapshot(s: TestServer) {
    let mut stream = seven_pages_of_rows(&s).await;
    let mut emails = Vec::new();
    let Some(ExportOut::Rows(first)) = stream.message().await.unwrap().unwrap().payload else {
        panic!("rows first")
    };
    emails.extend(first.users.into_iter().map(|u| u.email));
    // While the export runs: delete users it has not sent yet, create new ones.
    for i in 6900..6950 {
        let email = format!("u{i:05}@example.com");
        let find = LookupUserRequest {
            parent: "tenants/acme".into(),
            key: Some(userdir::pb::lookup_user_request::Key::Email(email)),
        };
        let user = s.users.clone().lookup_user(find).await.unwrap().into_inner();
        s.users
            .clone()
            .delete_user(DeleteUserRequest {
                name: user.name,
                etag: String::new(),
            })
            .await
            .unwrap();
    }
    for i in 0..20 {
        s.user("acme", &format!("late{i}@example.com"), "Late").await;
    }
    let mut trailer = None;
    while let Some(m) = stream.message().await.unwrap() {
        match m.payload {
            Some(ExportOut::Rows(batch)) => emails.extend(batch.users.into_iter().map(|u| u.email)),
            Some(ExportOut::Trailer(t)) => trailer = Some(t),
            _ => {}
        }
    }
    assert_eq!(trailer.unwrap().user_count, 7000);
    assert_eq!(emails.len(), 7000, "every user that existed at the start, once");
    let mut unique = emails.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7000);
    assert!(
        emails.contains(&"u06920@example.com".to_owned()),
        "deleted meanwhile, still exported"
    );
    assert!(
        !emails.iter().any(|e| e.starts_with("late")),
        "created meanwhile, not exported"
    );
}

/// A reader that goes away ends the snapshot: on PostgreSQL no transaction of
/// ours stays open (idle in transaction) once it has left.
async fn reader_leaving_frees_the_snapshot(s: TestServer) {
    use sea_orm::{ConnectionTrait, Database};
    let mut stream = seven_pages_of_rows(&s).await;
    assert!(stream.message().await.unwrap().is_some());
    drop(stream);
    // The server can still serve everything else.
    s.user("acme", "after@example.com", "After").await;
    if !s.store_options.url.starts_with("postgres") {
        return;
    }
    let db = Database::connect(s.store_options.url.as_str()).await.unwrap();
    // Live exports of other tests sit idle between pages for moments; a
    // leaked snapshot would sit idle for good, so look once it would be old.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let open = "SELECT count(*)::int8 AS n FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' \
                AND query LIKE '%FROM \"users\"%' AND state_change < now() - interval '3 seconds'";
    for _ in 0..3 {
        let statement = sea_orm::Statement::from_string(db.get_database_backend(), open.to_owned());
        let n: i64 = db
            .query_one_raw(statement)
            .await
            .unwrap()
            .unwrap()
            .try_get("", "n")
            .unwrap();
        if n == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the export's snapshot transaction stayed open for seconds after its reader left");
}

/// The store's own page reader (on PostgreSQL one streamed query per segment
/// of 50 pages) gives exactly the users, order and page sizes of the keyset
/// walk: small pages make 1,000 users span several segments.
async fn store_pages_match_the_keyset_walk(s: TestServer) {
    use userdir_domain::list::UserQuery;
    use userdir_domain::repo::walk_pages;
    use userdir_domain::repo::{SnapshotRepository, UserSnapshot};
    use userdir_domain::tenant::TenantId;
    s.tenant("acme").await;
    let mut csv = String::from("name,email,custom_01\n");
    for i in 0..1000 {
        // Names repeat, so ties are broken by id.
        csv.push_str(&format!("Name {},u{i:04}@example.com,{}\n", (i * 7919) % 97, i % 3));
    }
    import_bytes(&s, "acme", csv.as_bytes()).await;
    let store = userdir_store::Store::connect(&s.store_options).await.unwrap();
    let tenant = TenantId::parse("tenant", "acme").unwrap();
    async fn read(
        snapshot: userdir_store::StoreSnapshot,
        tenant: &TenantId,
        query: UserQuery,
        streamed: bool,
    ) -> Vec<Vec<String>> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let reader = if streamed {
            tokio::spawn(snapshot.send_pages(tenant.clone(), query, 7, tx))
        } else {
            tokio::spawn(walk_pages(snapshot, tenant.clone(), query, 7, tx))
        };
        let mut pages = Vec::new();
        loop {
            match rx.recv().await.expect("an end marker") {
                Ok(Some(page)) => pages.push(page.iter().map(|u| u.email.as_str().to_owned()).collect()),
                Ok(None) => break,
                Err(e) => panic!("{e}"),
            }
        }
        reader.await.unwrap();
        pages
    }
    for (filter, order_by, expected) in [
        ("", "", 1000),
        ("", "email desc", 1000),
        ("", "display_name", 1000),
        ("custom_01 = \"1\"", "display_name desc", 333),
    ] {
        let tokens = userdir_domain::page_token::PageTokens::random();
        let query = || UserQuery::parse("acme", filter, order_by, 0, "", &tokens).unwrap();
        let streamed = read(store.snapshot().await.unwrap(), &tenant, query(), true).await;
        let walked = read(store.snapshot().await.unwrap(), &tenant, query(), false).await;
        assert_eq!(streamed, walked, "filter {filter:?} order {order_by:?}");
        assert_eq!(streamed.iter().map(Vec::len).sum::<usize>(), expected);
        assert!(streamed.iter().all(|p| (1..=7).contains(&p.len())));
    }
}

async fn bad_requests(s: TestServer) {
    s.tenant("acme").await;
    let bad_column = ExportUsersRequest {
        columns: vec!["password".into()],
        ..request("acme")
    };
    assert_eq!(
        export_csv(&s, bad_column).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let bad_filter = ExportUsersRequest {
        filter: "nope = 1".into(),
        ..request("acme")
    };
    assert_eq!(
        export_csv(&s, bad_filter).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        export_csv(&s, request("nowhere")).await.unwrap_err().code(),
        Code::NotFound
    );
}

crate::on_both_backends!(
    seed_001_csv_format,
    shift_jis_exact_and_unmappable,
    round_trip_through_import,
    xlsx_holds_text_cells,
    rows_over_a_snapshot,
    reader_leaving_frees_the_snapshot,
    store_pages_match_the_keyset_walk,
    bad_requests,
);
