//! Excel workbooks into ImportUsers: cells read as a person reads them,
//! line numbers that are the sheet's rows, and hostile files refused with a
//! clear reason. The workbooks are built here part by part (the XML Excel
//! writes), so each test shows exactly what its file holds.

use std::io::Write;

use tonic::Code;
use userdir::pb::{ImportFormat, ImportMode, ImportOutcome, ImportRowResult};

use crate::common::{Backend, TestServer, reason, spawn_with};
use crate::import::{by_email, chunks, options, outcomes, run, users};

/// A cell of a test sheet.
enum C<'a> {
    /// A shared string (index into the list given to [`xlsx`]).
    S(usize),
    /// An inline string.
    T(&'a str),
    /// A number.
    N(&'a str),
    /// A date: a serial number with the date style.
    D(&'a str),
    /// An error value, as a formula's cached result.
    E(&'a str),
    /// A formula with its cached number.
    F(&'a str, &'a str),
}

/// The XML of one row, its cells from column A on (`None` leaves a gap).
fn row(line: u32, cells: &[Option<C<'_>>]) -> String {
    let mut xml = format!(r#"<row r="{line}">"#);
    for (i, cell) in cells.iter().enumerate() {
        let Some(cell) = cell else { continue };
        let at = format!("{}{line}", userdir_domain::import::workbook::column_name(i));
        xml.push_str(&match cell {
            C::S(i) => format!(r#"<c r="{at}" t="s"><v>{i}</v></c>"#),
            C::T(t) => format!(r#"<c r="{at}" t="inlineStr"><is><t>{}</t></is></c>"#, escape(t)),
            C::N(n) => format!(r#"<c r="{at}"><v>{n}</v></c>"#),
            C::D(n) => format!(r#"<c r="{at}" s="1"><v>{n}</v></c>"#),
            C::E(e) => format!(r#"<c r="{at}" t="e"><f>1/0</f><v>{e}</v></c>"#),
            C::F(f, v) => format!(r#"<c r="{at}"><f>{f}</f><v>{v}</v></c>"#),
        });
    }
    xml.push_str("</row>");
    xml
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An xlsx of `sheets` (name, rows XML) with `shared` strings, each shared
/// string optionally with a phonetic run (as Excel adds to Japanese text).
fn xlsx(sheets: &[(&str, String)], shared: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut part = |name: &str, body: &str| {
        zip.start_file(name, options).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    };
    part(
        "[Content_Types].xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/></Types>"#,
    );
    part(
        "_rels/.rels",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    );
    let mut book = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>"#,
    );
    let mut rels = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">"#,
    );
    for (i, (name, _)) in sheets.iter().enumerate() {
        let n = i + 1;
        book.push_str(&format!(r#"<sheet name="{name}" sheetId="{n}" r:id="rId{n}"/>"#));
        rels.push_str(&format!(
            r#"<Relationship Id="rId{n}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{n}.xml"/>"#
        ));
    }
    let styles = sheets.len() + 1;
    rels.push_str(&format!(
        r#"<Relationship Id="rId{styles}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/><Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#,
        styles + 1
    ));
    book.push_str("</sheets></workbook>");
    part("xl/workbook.xml", &book);
    part("xl/_rels/workbook.xml.rels", &rels);
    // Style 1 is a date (built-in number format 14, yyyy/m/d in Japanese Excel).
    part(
        "xl/styles.xml",
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs></styleSheet>"#,
    );
    let mut strings = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{0}" uniqueCount="{0}">"#,
        shared.len()
    );
    for (text, phonetic) in shared {
        strings.push_str(&format!("<si><t>{}</t>", escape(text)));
        if let Some(reading) = phonetic {
            strings.push_str(&format!(r#"<rPh sb="0" eb="1"><t>{}</t></rPh>"#, escape(reading)));
        }
        strings.push_str("</si>");
    }
    strings.push_str("</sst>");
    part("xl/sharedStrings.xml", &strings);
    for (i, (_, rows)) in sheets.iter().enumerate() {
        part(
            &format!("xl/worksheets/sheet{}.xml", i + 1),
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
            ),
        );
    }
    zip.finish().unwrap().into_inner()
}

fn xlsx_options(mode: ImportMode) -> userdir::pb::ImportOptions {
    userdir::pb::ImportOptions {
        format: ImportFormat::Xlsx as i32,
        ..options(mode)
    }
}

fn failed(results: &[ImportRowResult], line: i64) -> &ImportRowResult {
    results
        .iter()
        .find(|r| r.line == line)
        .filter(|r| r.outcome == ImportOutcome::Failed as i32)
        .unwrap_or_else(|| panic!("line {line} did not fail: {results:?}"))
}

async fn cells_read_as_a_person_reads_them(s: TestServer) {
    s.tenant("acme").await;
    let shared = [
        ("email", None),
        ("name", None),
        ("custom_01", None),
        ("custom_02", None),
        ("phone", None),
        ("enabled", None),
        ("山田 太郎", Some("ヤマダ タロウ")),
        ("髙橋 ①", Some("タカハシ")),
    ];
    let rows = [
        row(
            1,
            &[
                Some(C::S(0)),
                Some(C::S(1)),
                Some(C::S(2)),
                Some(C::S(3)),
                Some(C::S(4)),
                Some(C::S(5)),
            ],
        ),
        // A whole number, a date, text digits, a formula's cached value.
        row(
            2,
            &[
                Some(C::T("taro@example.jp")),
                Some(C::S(6)),
                Some(C::N("90")),
                Some(C::D("45383")),
                Some(C::T("03-1234-5678")),
                Some(C::F("1=1", "1")),
            ],
        ),
        // Row 3 is empty: skipped, not reported.
        row(
            4,
            &[
                Some(C::T("hana@example.jp")),
                Some(C::S(7)),
                Some(C::N("0.5")),
                Some(C::D("45383.5")),
                None,
                None,
            ],
        ),
        // An error value fails its row, naming the cell.
        row(
            5,
            &[Some(C::T("err@example.jp")), Some(C::T("Err")), Some(C::E("#N/A"))],
        ),
        // A phone number typed as a number lost its leading zero: refused.
        row(
            6,
            &[
                Some(C::T("num@example.jp")),
                Some(C::T("Num")),
                None,
                None,
                Some(C::N("312345678")),
            ],
        ),
    ]
    .concat();
    let book = xlsx(&[("ユーザー", rows)], &shared);
    // AUTO (the default) knows the workbook by its first bytes.
    let (results, job) = run(&s, options(ImportMode::Upsert), chunks(&book, 1000)).await.unwrap();
    assert_eq!(
        outcomes(&results),
        [
            (2, ImportOutcome::Created),
            (4, ImportOutcome::Created),
            (5, ImportOutcome::Failed),
            (6, ImportOutcome::Failed)
        ]
    );
    let counts = job.counts.unwrap();
    assert_eq!((counts.rows, counts.created, counts.failed), (4, 2, 2));
    let error = failed(&results, 5);
    assert_eq!(
        (error.reason.as_str(), error.field.as_str()),
        ("CELL_ERROR", "custom_attributes.custom_01")
    );
    assert!(
        error.message.contains("C5") && error.message.contains("#N/A"),
        "{}",
        error.message
    );
    let phone = failed(&results, 6);
    assert_eq!(
        (phone.reason.as_str(), phone.field.as_str()),
        ("NUMBER_IN_TEXT_COLUMN", "phone")
    );
    assert!(
        phone.message.contains("E6") && phone.message.contains("Text"),
        "{}",
        phone.message
    );

    let users = by_email(&users(&s).await);
    let taro = &users["taro@example.jp"];
    assert_eq!(
        taro.display_name, "山田 太郎",
        "the phonetic reading is not part of the text"
    );
    let custom = |u: &userdir::pb::User, i: usize| {
        u.custom_attributes
            .get(&format!("custom_{:02}", i + 1))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(custom(taro, 0), "90");
    assert_eq!(custom(taro, 1), "2024-04-01");
    assert_eq!(taro.enabled, Some(true));
    let hana = &users["hana@example.jp"];
    assert_eq!(hana.display_name, "髙橋 ①");
    assert_eq!(
        (custom(hana, 0).as_str(), custom(hana, 1).as_str()),
        ("0.5", "2024-04-01T12:00:00")
    );
    assert_eq!(users.len(), 2);
}

async fn a_sheet_is_chosen_by_name(s: TestServer) {
    s.tenant("acme").await;
    let first = row(1, &[Some(C::T("email"))]);
    let second = [
        row(1, &[Some(C::T("email")), Some(C::T("name"))]),
        row(2, &[Some(C::T("b@example.jp")), Some(C::T("B"))]),
    ]
    .concat();
    let book = xlsx(&[("Notes", first), ("Users", second)], &[]);
    let opts = userdir::pb::ImportOptions {
        sheet: "Users".into(),
        ..xlsx_options(ImportMode::Upsert)
    };
    let (results, _) = run(&s, opts, chunks(&book, 4096)).await.unwrap();
    assert_eq!(outcomes(&results), [(2, ImportOutcome::Created)]);
    let opts = userdir::pb::ImportOptions {
        sheet: "Staff".into(),
        ..xlsx_options(ImportMode::Upsert)
    };
    let err = run(&s, opts, chunks(&book, 4096)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("no sheet named \"Staff\"") && err.message().contains("Users"),
        "{}",
        err.message()
    );
}

async fn hostile_workbooks_get_clear_errors(s: TestServer) {
    s.tenant("acme").await;
    let header = row(1, &[Some(C::T("email")), Some(C::T("name"))]);
    let good = xlsx(
        &[(
            "S",
            [header.clone(), row(2, &[Some(C::T("a@example.jp")), Some(C::T("A"))])].concat(),
        )],
        &[],
    );
    // Cut short: the zip's index (at its end) is gone.
    let err = run(
        &s,
        xlsx_options(ImportMode::Upsert),
        chunks(&good[..good.len() / 2], 4096),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("damaged, cut short"), "{}", err.message());

    // Saved with a password: an OLE file holding an EncryptedPackage.
    let mut ole = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    ole.create_stream("EncryptedPackage")
        .unwrap()
        .write_all(&[0; 64])
        .unwrap();
    ole.create_stream("EncryptionInfo")
        .unwrap()
        .write_all(&[0; 64])
        .unwrap();
    ole.flush().unwrap();
    let locked = ole.into_inner().into_inner();
    let err = run(&s, options(ImportMode::Upsert), chunks(&locked, 4096))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("protected by a password"), "{}", err.message());

    // A header of 16,384 columns: a file error, at once.
    let wide: Vec<Option<C<'_>>> = (0..16_384).map(|_| Some(C::T("x"))).collect();
    let book = xlsx(&[("S", row(1, &wide))], &[]);
    let err = run(&s, xlsx_options(ImportMode::Upsert), chunks(&book, 64 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("unknown column"), "{}", err.message());

    // A value in the last of 16,384 columns fails its row; a cell of 32,767
    // characters (Excel's most) fails its row; the rows around them import.
    let mut far: Vec<Option<C<'_>>> = vec![Some(C::T("far@example.jp")), Some(C::T("Far"))];
    far.resize_with(16_384, || None);
    far[16_383] = Some(C::T("x"));
    let long = "長".repeat(32_767);
    let rows = [
        header.clone(),
        row(2, &far),
        row(3, &[Some(C::T("long@example.jp")), Some(C::T(&long))]),
        row(4, &[Some(C::T("ok@example.jp")), Some(C::T("OK"))]),
    ]
    .concat();
    let book = xlsx(&[("S", rows)], &[]);
    let (results, _) = run(&s, xlsx_options(ImportMode::Upsert), chunks(&book, 64 * 1024))
        .await
        .unwrap();
    assert_eq!(failed(&results, 2).reason, "RAGGED_ROW");
    assert!(
        failed(&results, 2).message.contains("XFD2"),
        "{:?}",
        failed(&results, 2)
    );
    assert_eq!(failed(&results, 3).reason, "RECORD_TOO_LARGE");
    assert_eq!(outcomes(&results)[2], (4, ImportOutcome::Created));

    // An empty sheet, and bytes that are no workbook at all.
    let err = run(
        &s,
        xlsx_options(ImportMode::Upsert),
        chunks(&xlsx(&[("S", String::new())], &[]), 4096),
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("no header row"), "{}", err.message());
    let err = run(
        &s,
        xlsx_options(ImportMode::Upsert),
        chunks(b"email,name\na@b.jp,A\n", 4096),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// The committed workbook in the shape Japanese Excel saves
/// (`tests/fixtures/excel/users.xlsx`, made by `make_xlsx.py` there): Japanese
/// headers mapped to fields, furigana that is not part of the text, a date,
/// a formula's cached text and number, custom attributes.
async fn an_excel_workbook_imports_exactly(s: TestServer) {
    s.tenant("acme").await;
    let book = include_bytes!("../fixtures/excel/users.xlsx");
    let mapping = [
        ("メールアドレス", "email"),
        ("氏名", "display_name"),
        ("部署", "department"),
        ("入社日", "custom_01"),
        ("社員番号", "external_id"),
        ("等級", "custom_02"),
    ];
    let opts = userdir::pb::ImportOptions {
        column_mapping: mapping.iter().map(|(h, f)| (h.to_string(), f.to_string())).collect(),
        ..options(ImportMode::Upsert)
    };
    let (results, _) = run(&s, opts, chunks(book, 1000)).await.unwrap();
    assert_eq!(
        outcomes(&results),
        [
            (2, ImportOutcome::Created),
            (3, ImportOutcome::Created),
            (4, ImportOutcome::Created)
        ]
    );
    let users = by_email(&users(&s).await);
    let got = |email: &str| {
        let u = &users[email];
        (
            u.display_name.as_str(),
            u.department.as_str(),
            u.external_id.as_str(),
            u.custom_attributes["custom_01"].as_str(),
            u.custom_attributes["custom_02"].as_str(),
        )
    };
    assert_eq!(
        got("yamada@example.jp"),
        ("山田 太郎", "営業部", "E-0042", "2019-04-01", "3")
    );
    assert_eq!(
        got("takahashi@example.jp"),
        ("髙橋 花子", "開発部", "E-0043", "2022-04-01", "5")
    );
    assert_eq!(
        got("watanabe@example.jp"),
        ("渡邉 一郎", "総務部", "E-0044", "2024-04-01", "2.5")
    );
}

/// An .xls workbook (Excel 97-2003), by its first bytes: the committed
/// fixture `tests/fixtures/excel/users.xls` (made by `make_xls.py` there).
async fn an_xls_workbook_imports(s: TestServer) {
    s.tenant("acme").await;
    let book = include_bytes!("../fixtures/excel/users.xls");
    let (results, _) = run(&s, options(ImportMode::Upsert), chunks(book, 1000)).await.unwrap();
    assert_eq!(
        outcomes(&results),
        [
            (2, ImportOutcome::Created),
            (3, ImportOutcome::Created),
            (4, ImportOutcome::Failed)
        ]
    );
    assert_eq!(failed(&results, 4).reason, "NUMBER_IN_TEXT_COLUMN");
    // A 6 KB .xls with a stray cell in the far corner spans 65,536 by 256
    // cells: refused from its record headers, before it is read whole (it
    // took the server to 1 GB).
    let corner = include_bytes!("../fixtures/excel/corner.xls");
    let err = run(&s, options(ImportMode::Upsert), chunks(corner, 1000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "WORKBOOK_SHEET_TOO_LARGE");
    assert!(err.message().contains("16777216 cells"), "{}", err.message());
    let users = by_email(&users(&s).await);
    let sato = &users["sato@example.jp"];
    assert_eq!(sato.display_name, "佐藤 花子");
    assert_eq!(sato.custom_attributes["custom_01"], "90");
    assert_eq!(sato.custom_attributes["custom_02"], "2024-04-01");
    let suzuki = &users["suzuki@example.jp"];
    assert_eq!(suzuki.custom_attributes["custom_01"], "0.5");
    assert_eq!(suzuki.custom_attributes["custom_02"], "2023-12-31");
}

/// A zip bomb and a workbook over the size limit, against a server with
/// small limits (1 MiB each).
async fn oversized_workbooks_are_refused(backend: Backend) {
    let Some(s) = spawn_with(backend, |c| {
        c.import_max_workbook_mib = 1;
        c.import_max_inflated_mib = 1;
    })
    .await
    else {
        return;
    };
    s.tenant("acme").await;
    // 4 MiB of one repeated row inflate from a few KiB.
    let filler = row(2, &[Some(C::T("bomb@example.jp")), Some(C::T("B"))]).repeat(50_000);
    let bomb = xlsx(
        &[(
            "S",
            [row(1, &[Some(C::T("email")), Some(C::T("name"))]), filler].concat(),
        )],
        &[],
    );
    assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
    let err = run(&s, options(ImportMode::Upsert), chunks(&bomb, 64 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "WORKBOOK_INFLATES_TOO_FAR");
    assert!(err.message().contains("1 MiB"), "{}", err.message());
    assert!(users(&s).await.is_empty());

    // Over the spool's limit while it arrives.
    let mut big = xlsx(&[("S", row(1, &[Some(C::T("email"))]))], &[]);
    big.resize(1024 * 1024 + 1, 0);
    let err = run(&s, xlsx_options(ImportMode::Upsert), chunks(&big, 64 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "WORKBOOK_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_oversized_workbooks_are_refused() {
    oversized_workbooks_are_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_oversized_workbooks_are_refused() {
    oversized_workbooks_are_refused(Backend::Postgres).await;
}

crate::on_both_backends!(
    cells_read_as_a_person_reads_them,
    a_sheet_is_chosen_by_name,
    hostile_workbooks_get_clear_errors,
    an_xls_workbook_imports,
    an_excel_workbook_imports_exactly,
);
