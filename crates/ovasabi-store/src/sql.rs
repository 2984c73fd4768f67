//! The two SQL rewrites the store makes for SQLite, so that service code written for
//! PostgreSQL runs there too:
//!
//! - `$1` placeholders become `?1`, which means the same in SQLite (the first parameter,
//!   by number, reusable);
//! - a row-locking clause at the end of a statement (`FOR UPDATE`, `FOR NO KEY UPDATE`,
//!   `FOR SHARE`, `FOR KEY SHARE`, with `NOWAIT` or `SKIP LOCKED`) is removed: SQLite has
//!   no such syntax, and needs none, since its transactions never overlap.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Rewritten statements remembered per thread, at most this many (services run a fixed
/// set of statements; the cache starts over if some code makes them without end).
const CACHED: usize = 1024;

thread_local! {
    static REWRITTEN: RefCell<HashMap<Box<str>, Arc<str>>> = RefCell::new(HashMap::new());
}

/// Both rewrites, remembered: a service runs the same few statements over and over.
pub(crate) fn to_sqlite(sql: &str) -> Arc<str> {
    REWRITTEN.with(|cache| {
        if let Some(done) = cache.borrow().get(sql) {
            return done.clone();
        }
        let done: Arc<str> = rewrite(sql).into();
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(sql.into(), done.clone());
        done
    })
}

/// Both rewrites.
fn rewrite(sql: &str) -> String {
    let sql = to_sqlite_placeholders(sql);
    strip_row_lock(&sql).to_owned()
}

/// The statement without a trailing row-locking clause.
pub(crate) fn strip_row_lock(sql: &str) -> &str {
    const CLAUSES: [&[&str]; 4] = [
        &["FOR", "UPDATE"],
        &["FOR", "NO", "KEY", "UPDATE"],
        &["FOR", "SHARE"],
        &["FOR", "KEY", "SHARE"],
    ];
    const WAITS: [&[&str]; 3] = [&[], &["NOWAIT"], &["SKIP", "LOCKED"]];
    let body = sql.trim_end().trim_end_matches(';').trim_end();
    let words: Vec<&str> = body.split_whitespace().collect();
    for clause in CLAUSES {
        for wait in WAITS {
            let n = clause.len() + wait.len();
            if words.len() <= n {
                continue;
            }
            let tail = &words[words.len() - n..];
            let matches = clause
                .iter()
                .chain(wait.iter())
                .zip(tail)
                .all(|(want, got)| got.eq_ignore_ascii_case(want));
            if matches {
                // `tail[0]` is a slice of `body`: its offset is where the clause starts.
                let start = tail[0].as_ptr() as usize - body.as_ptr() as usize;
                return body[..start].trim_end();
            }
        }
    }
    sql
}

/// Rewrites `$N` placeholders to `?N`, leaving string literals, quoted identifiers and
/// comments alone.
pub(crate) fn to_sqlite_placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0; // bytes[..copied] are in `out`
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"' | b'`') => {
                i = skip_past(bytes, i + 1, &[quote]);
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = skip_past(bytes, i + 2, b"\n");
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_past(bytes, i + 2, b"*/");
            }
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

/// The index just past the first `end` at or after `from` (or the end of the text).
fn skip_past(bytes: &[u8], from: usize, end: &[u8]) -> usize {
    bytes
        .get(from..)
        .and_then(|rest| rest.windows(end.len()).position(|w| w == end))
        .map_or(bytes.len(), |p| from + p + end.len())
}

#[cfg(test)]
mod tests {
    use super::{strip_row_lock, to_sqlite_placeholders as rewrite};

    #[test]
    fn trailing_row_locks_are_removed() {
        let select = "SELECT balance FROM accounts WHERE id = $1";
        for lock in [
            " FOR UPDATE",
            " for update;",
            "\n  FOR NO KEY UPDATE NOWAIT",
            " FOR SHARE SKIP LOCKED ; ",
            " FOR KEY SHARE",
        ] {
            assert_eq!(
                strip_row_lock(&format!("{select}{lock}")),
                select,
                "{lock:?}"
            );
        }
        for kept in [
            "SELECT 'FOR UPDATE'",
            "SELECT x FROM t WHERE note = 'x FOR UPDATE'",
            "FOR UPDATE",
            "UPDATE t SET x = 1",
        ] {
            assert_eq!(strip_row_lock(kept), kept);
        }
    }

    #[test]
    fn placeholders_become_numbered_question_marks() {
        assert_eq!(
            rewrite("INSERT INTO t (a, b) VALUES ($1, $2) ON CONFLICT (a) DO UPDATE SET b = $2"),
            "INSERT INTO t (a, b) VALUES (?1, ?2) ON CONFLICT (a) DO UPDATE SET b = ?2"
        );
        assert_eq!(rewrite("SELECT $10,$2"), "SELECT ?10,?2");
        assert_eq!(rewrite("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn literals_identifiers_and_comments_are_left_alone() {
        assert_eq!(
            rewrite("SELECT '$1', \"$2\", $3 -- $4\n, $5 /* $6 */ , 'it''s $7', $8"),
            "SELECT '$1', \"$2\", ?3 -- $4\n, ?5 /* $6 */ , 'it''s $7', ?8"
        );
        assert_eq!(rewrite("SELECT 'ünï$1çødé', $1"), "SELECT 'ünï$1çødé', ?1");
        assert_eq!(rewrite("SELECT $a, $"), "SELECT $a, $");
        assert_eq!(rewrite("SELECT '$1"), "SELECT '$1");
    }
}
