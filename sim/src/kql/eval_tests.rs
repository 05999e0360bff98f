//! Evaluator tests over a small table: each operator and expression form, and the errors.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const DAY: i64 = 86_400 * TICKS_PER_SEC;

fn now() -> i64 {
    parse_datetime("2026-11-20T12:00:00Z").unwrap()
}

fn tables() -> Tables {
    let mut t = Table::new(&[
        ("Timestamp", ColType::DateTime),
        ("Name", ColType::String),
        ("Cmd", ColType::String),
        ("N", ColType::Int64),
        ("Ok", ColType::Boolean),
    ]);
    let rows = [
        (1, "cmd.exe", "cmd.exe /c whoami /priv", 5, true),
        (2, "powershell.exe", "powershell -enc AAAA", 7, false),
        (3, "cmd.exe", "cmd.exe /c dir", 1, true),
        (40, "old.exe", "old.exe", 9, true),
    ];
    for (days, name, cmd, n, ok) in rows {
        t.push(vec![
            ("Timestamp", Value::DateTime(now() - days * DAY)),
            ("Name", Value::str(name)),
            ("Cmd", Value::str(cmd)),
            ("N", Value::Int(n)),
            ("Ok", Value::Bool(ok)),
        ]);
    }
    let mut u = Table::new(&[("Name", ColType::String), ("Extra", ColType::Int64)]);
    u.push(vec![
        ("Name", Value::str("u.exe")),
        ("Extra", Value::Int(1)),
    ]);
    let mut out = Tables::new();
    out.insert("T".into(), Arc::new(t));
    out.insert("U".into(), Arc::new(u));
    out
}

fn q(query: &str) -> ResultSet {
    run(&tables(), query, now(), None).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn err(query: &str) -> String {
    run(&tables(), query, now(), None).unwrap_err().to_string()
}

fn names(rs: &ResultSet) -> Vec<String> {
    rs.values("Name").iter().map(Value::to_text).collect()
}

fn count(query: &str) -> usize {
    q(query).rows.len()
}

#[test]
fn where_with_each_comparison() {
    assert_eq!(count("T | where Name == 'cmd.exe'"), 2);
    assert_eq!(count("T | where Name == 'CMD.EXE'"), 0);
    assert_eq!(count("T | where Name =~ 'CMD.EXE'"), 2);
    assert_eq!(count("T | where Name != 'cmd.exe'"), 2);
    assert_eq!(count("T | where Name !~ 'CMD.exe'"), 2);
    assert_eq!(count("T | where Cmd has 'whoami'"), 1);
    assert_eq!(count("T | where Cmd has 'whoam'"), 0);
    assert_eq!(count("T | where Cmd !has 'whoami'"), 3);
    assert_eq!(count("T | where Cmd contains 'WHOAM'"), 1);
    assert_eq!(count("T | where Cmd !contains 'whoam'"), 3);
    assert_eq!(count("T | where Name startswith 'POWER'"), 1);
    assert_eq!(count("T | where Name !startswith 'power'"), 3);
    assert_eq!(count("T | where Name endswith '.EXE'"), 4);
    assert_eq!(count("T | where Name !endswith '.exe'"), 0);
    assert_eq!(count("T | where N < 5"), 1);
    assert_eq!(count("T | where N <= 5"), 2);
    assert_eq!(count("T | where N > 5"), 2);
    assert_eq!(count("T | where N >= 5"), 3);
    assert_eq!(count("T | where Ok == true and N > 1"), 2);
    assert_eq!(count("T | where Ok == false or N == 1"), 2);
    assert_eq!(count("T | where not(Ok)"), 1);
    assert_eq!(count("T | where (N + 1) * 2 == 12"), 1);
    assert_eq!(count("T | where isnotempty(Cmd) and strlen(Name) == 7"), 3);
    assert_eq!(count("T | where isempty(Name)"), 0);
}

#[test]
fn in_between_and_dates() {
    assert_eq!(count("T | where Name in ('cmd.exe', 'x')"), 2);
    assert_eq!(count("T | where Name !in ('cmd.exe')"), 2);
    assert_eq!(count("T | where Name in~ ('CMD.EXE')"), 2);
    assert_eq!(count("T | where Name !in~ ('CMD.EXE')"), 2);
    assert_eq!(
        count("let l = dynamic(['old.exe', 'cmd.exe']); T | where Name in (l)"),
        3
    );
    assert_eq!(count("T | where N between (5 .. 7)"), 2);
    assert_eq!(count("T | where N !between (5 .. 7)"), 2);
    assert_eq!(count("T | where Timestamp > ago(30d)"), 3);
    assert_eq!(count("T | where Timestamp between (ago(60h) .. now())"), 2);
    assert_eq!(
        count(
            "T | where Timestamp >= datetime(2026-11-18) and Timestamp < datetime(2026-11-19T12:00:00Z)"
        ),
        1
    );
    assert_eq!(
        count("T | where Timestamp > now() - timespan(1.12:00:00)"),
        1
    );
    let rs = q("T | where N == 5 | extend D = bin(Timestamp, 1d), Later = Timestamp + 12h");
    assert_eq!(rs.values("D")[0].to_text(), "2026-11-19T00:00:00.0000000Z");
    assert_eq!(
        rs.values("Later")[0].to_text(),
        "2026-11-20T00:00:00.0000000Z"
    );
}

#[test]
fn timespan_hides_old_rows() {
    let rs = run(&tables(), "T", now(), Some(30 * DAY)).unwrap();
    assert_eq!(rs.rows.len(), 3);
    let rs = run(&tables(), "T", now(), Some(DAY + 1)).unwrap();
    assert_eq!(rs.rows.len(), 1);
}

#[test]
fn lets_of_each_scalar_kind() {
    assert_eq!(
        count(
            "let n = 'cmd.exe'; let lim = 5; let since = 2d; let on = true;\nT | where Name == n and N <= lim and Timestamp > ago(since) and Ok == on"
        ),
        1
    );
    assert_eq!(
        count("let d = datetime(2026-11-19T00:00:00Z); T | where Timestamp > d"),
        1
    );
}

#[test]
fn project_extend_and_project_away() {
    let rs = q("T | project Name, Twice = N * 2 | take 1");
    assert_eq!(
        rs.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Name", "Twice"]
    );
    assert_eq!(rs.values("Twice"), vec![Value::Int(10)]);
    let rs = q(
        "T | extend U = toupper(Name), L = tolower('AB'), S = strcat(Name, '|', N), I = iff(N > 5, 'big', 'small') | take 1",
    );
    assert_eq!(rs.columns.len(), 9);
    assert_eq!(rs.values("U")[0], Value::str("CMD.EXE"));
    assert_eq!(rs.values("L")[0], Value::str("ab"));
    assert_eq!(rs.values("S")[0], Value::str("cmd.exe|5"));
    assert_eq!(rs.values("I")[0], Value::str("small"));
    let rs = q("T | project-away Cmd, Ok");
    assert_eq!(
        rs.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Timestamp", "Name", "N"]
    );
    let rs = q("T | extend N = tostring(N) | take 1");
    assert_eq!(rs.values("N")[0], Value::str("5"));
    assert_eq!(rs.columns[3].ty, ColType::String);
}

#[test]
fn summarize_each_aggregate() {
    let rs =
        q("T | summarize count(), dcount(Name), min(N), max(N), make_set(Name), sum(N), avg(N)");
    assert_eq!(
        rs.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec![
            "count_",
            "dcount_Name",
            "min_N",
            "max_N",
            "set_Name",
            "sum_N",
            "avg_N"
        ]
    );
    let types: Vec<&str> = rs.columns.iter().map(|c| c.ty.name()).collect();
    assert_eq!(
        types,
        vec![
            "Int64", "Int64", "Int64", "Int64", "Dynamic", "Int64", "Double"
        ]
    );
    let row = &rs.rows_json()[0];
    assert_eq!(row["count_"], 4);
    assert_eq!(row["dcount_Name"], 3);
    assert_eq!(row["min_N"], 1);
    assert_eq!(row["max_N"], 9);
    assert_eq!(
        row["set_Name"],
        serde_json::json!(["cmd.exe", "powershell.exe", "old.exe"])
    );
    assert_eq!(row["sum_N"], 22);
    assert_eq!(row["avg_N"], 5.5);
    let rs = q(
        "T | summarize Runs = count(), Last = max(Timestamp) by Name | order by Runs desc, Name asc",
    );
    assert_eq!(names(&rs), vec!["cmd.exe", "old.exe", "powershell.exe"]);
    assert_eq!(
        rs.values("Runs"),
        vec![Value::Int(2), Value::Int(1), Value::Int(1)]
    );
    assert_eq!(rs.columns[2].ty, ColType::DateTime);
    let rs = q("T | where N > 100 | summarize count()");
    assert_eq!(rs.values("count_"), vec![Value::Int(0)]);
    let rs = q("T | summarize count() by Day = bin(Timestamp, 1d), Name");
    assert_eq!(rs.rows.len(), 4);
    let rs = q("T | summarize by Name");
    assert_eq!(rs.rows.len(), 3);
}

#[test]
fn order_sort_take_limit_top_distinct_count() {
    assert_eq!(
        names(&q("T | order by N")),
        vec!["old.exe", "powershell.exe", "cmd.exe", "cmd.exe"]
    );
    assert_eq!(q("T | sort by N asc").values("N")[0], Value::Int(1));
    assert_eq!(count("T | take 2"), 2);
    assert_eq!(count("T | limit 3"), 3);
    assert_eq!(count("let k = 1; T | take k"), 1);
    let rs = q("T | top 2 by N");
    assert_eq!(rs.values("N"), vec![Value::Int(9), Value::Int(7)]);
    let rs = q("T | top 1 by N asc");
    assert_eq!(rs.values("N"), vec![Value::Int(1)]);
    assert_eq!(count("T | distinct Name"), 3);
    assert_eq!(count("T | distinct Name, Ok"), 3);
    assert_eq!(q("T | count").values("Count"), vec![Value::Int(4)]);
}

#[test]
fn union_fills_missing_columns_with_null() {
    let rs = q("union T, U");
    assert_eq!(rs.rows.len(), 5);
    assert_eq!(rs.columns.len(), 6);
    let rs = q("union (T | where N == 1), U | project Name, Extra");
    assert_eq!(names(&rs), vec!["cmd.exe", "u.exe"]);
    assert_eq!(rs.values("Extra"), vec![Value::Null, Value::Int(1)]);
}

#[test]
fn literal_forms_and_comments() {
    assert_eq!(count("T | where Cmd == @'cmd.exe /c dir'"), 1);
    assert_eq!(count("T // all\n| where Name == \"cmd.exe\" // two\n"), 2);
    let rs = q(
        r#"T | take 1 | project A = "q\"\\\t", B = @"C:\new""x", C = 'it\'s', R = 1.5, X = 100ms"#,
    );
    let row = &rs.rows_json()[0];
    assert_eq!(row["A"], "q\"\\\t");
    assert_eq!(row["B"], "C:\\new\"x");
    assert_eq!(row["C"], "it's");
    assert_eq!(row["R"], 1.5);
    assert_eq!(row["X"], "00:00:00.1000000");
}

#[test]
fn errors_name_what_is_wrong() {
    assert_eq!(
        err("T | where Nope == 1"),
        "'where' operator: Failed to resolve column or scalar expression named 'Nope'"
    );
    assert_eq!(
        err("T | project Name | where N > 1"),
        "'where' operator: Failed to resolve column or scalar expression named 'N'"
    );
    assert_eq!(
        err("Nope | take 1"),
        "'take' operator: Failed to resolve table expression named 'Nope'"
    );
    assert_eq!(
        err("T | summarize count() by Nope"),
        "'summarize' operator: Failed to resolve column or scalar expression named 'Nope'"
    );
    assert_eq!(
        err("T | mv-expand Name"),
        "Operator 'mv-expand' is not supported"
    );
    assert_eq!(
        err("T | where Name == 'x"),
        "Query could not be parsed at ''' on line [1,19]"
    );
    assert_eq!(
        err("T | where Name == 'a\\x'"),
        "Query could not be parsed at '\\x' on line [1,21]"
    );
    assert_eq!(
        err("T\n| where Name ==\n| take 1"),
        "Query could not be parsed at '|' on line [3,1]"
    );
    let e = run_limited(&tables(), "T", now(), None, 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Query result set has exceeded the internal record count limit 3 records"
    );
    assert!(run_limited(&tables(), "T | take 3", now(), None, 3).is_ok());
}

#[test]
fn datetimes_serialise_with_seven_digits() {
    let rs = q("T | take 1 | project Timestamp");
    assert_eq!(
        rs.rows_json()[0]["Timestamp"],
        "2026-11-19T12:00:00.0000000Z"
    );
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn any_escaped_string_reads_back(s in "\\PC*|[\\\\\"'\\n\\r\\t a-z]*") {
        // Control characters other than \t \n \r cannot be written in a KQL literal.
        prop_assume!(!s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')));
        let query = format!("T | where Col == {}", quote(&s));
        let parsed = parse(&query).unwrap();
        match &parsed.body.ops[0] {
            ast::Op::Where(ast::Expr::Bin(ast::BinOp::Eq, _, rhs)) => {
                prop_assert_eq!(&**rhs, &ast::Expr::Lit(Value::Str(s.clone())));
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
