//! One way to run a statement on either kind of connection a write may hold:
//! sqlx's `AnyConnection` (PostgreSQL, and every SQLite reader) or the
//! SQLite writer's own connection (`writer.rs`), which runs a whole write on
//! its thread instead of handing each statement to sqlx's SQLite worker
//! thread and back. The functions of `db/` that a write calls take
//! `&mut dyn Exec`, so their SQL is written once for both.
//!
//! Values cross in the two types the schema uses: TEXT and BIGINT.

use futures_util::future::BoxFuture;
use sqlx::any::{AnyArguments, AnyRow, AnyTypeInfoKind};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, Row as _, TypeInfo as _, ValueRef as _};
use uuid::Uuid;

/// A statement argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::Text(Some(s))
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::Text(Some(s.to_owned()))
    }
}

impl From<&String> for Cell {
    fn from(s: &String) -> Cell {
        Cell::Text(Some(s.clone()))
    }
}

impl From<Option<String>> for Cell {
    fn from(s: Option<String>) -> Cell {
        Cell::Text(s)
    }
}

impl From<Uuid> for Cell {
    fn from(u: Uuid) -> Cell {
        Cell::Text(Some(u.to_string()))
    }
}

impl From<Option<Uuid>> for Cell {
    fn from(u: Option<Uuid>) -> Cell {
        Cell::Text(u.map(|u| u.to_string()))
    }
}

impl From<i64> for Cell {
    fn from(i: i64) -> Cell {
        Cell::Int(Some(i))
    }
}

impl From<Option<i64>> for Cell {
    fn from(i: Option<i64>) -> Cell {
        Cell::Int(i)
    }
}

impl From<bool> for Cell {
    fn from(b: bool) -> Cell {
        Cell::Int(Some(i64::from(b)))
    }
}

/// The arguments of a statement, `$1` first.
#[macro_export]
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::db::exec::Cell::from($value)),*]
    };
}

/// A change (insert, update, delete) and its arguments, `$1` first, built
/// where its SQL lives: run alone (`Statement::run`), or handed to the log
/// append it commits with (`event_log::append_many_with`), which on
/// PostgreSQL carries it as a step of its own statement: one round trip for
/// a record's change, its notification row and their events.
#[derive(Clone, Debug)]
pub struct Statement {
    pub sql: String,
    pub args: Vec<Cell>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, args: Vec<Cell>) -> Statement {
        Statement {
            sql: sql.into(),
            args,
        }
    }

    /// Run it; the number of rows it changed.
    pub async fn run(self, conn: &mut dyn Exec) -> Result<u64, sqlx::Error> {
        conn.execute(&self.sql, self.args).await
    }

    /// The SQL with every placeholder `$n` numbered `$(n + offset)`, for a
    /// statement whose arguments follow `offset` others. Every `$` followed
    /// by digits is taken for a placeholder: the statements of `db/` hold
    /// no other (no dollar-quoted strings).
    pub fn sql_after(&self, offset: usize) -> String {
        let mut out = String::with_capacity(self.sql.len() + 8);
        let mut rest = self.sql.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            match rest[..digits].parse::<usize>() {
                Ok(n) => out.push_str(&(n + offset).to_string()),
                Err(_) => out.push_str(&rest[..digits]),
            }
            rest = &rest[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// A value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// A row read back, its columns in the order of the statement.
#[derive(Clone, Debug)]
pub struct Row(Vec<Value>);

/// A Rust type a column decodes to.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<String> {
        match value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl FromValue for Uuid {
    fn from_value(value: &Value) -> Option<Uuid> {
        match value {
            Value::Text(t) => Uuid::parse_str(t).ok(),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Option<T>> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl Row {
    /// Column `index` as a `T`; a missing column or another type is a
    /// decode error, as sqlx's would be.
    pub fn try_get<T: FromValue>(&self, index: usize) -> Result<T, sqlx::Error> {
        let value = self
            .0
            .get(index)
            .ok_or(sqlx::Error::ColumnIndexOutOfBounds {
                index,
                len: self.0.len(),
            })?;
        T::from_value(value).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("unexpected {value:?} for {}", std::any::type_name::<T>()).into(),
        })
    }

    fn from_any(row: &AnyRow) -> Result<Row, sqlx::Error> {
        (0..row.len())
            .map(|i| {
                let raw = row.try_get_raw(i)?;
                if raw.is_null() {
                    return Ok(Value::Null);
                }
                let kind = raw.type_info().kind();
                match kind {
                    AnyTypeInfoKind::Text => Ok(Value::Text(row.try_get(i)?)),
                    AnyTypeInfoKind::Bool => Ok(Value::Int(i64::from(row.try_get::<bool, _>(i)?))),
                    AnyTypeInfoKind::SmallInt
                    | AnyTypeInfoKind::Integer
                    | AnyTypeInfoKind::BigInt => Ok(Value::Int(row.try_get(i)?)),
                    _ => Err(sqlx::Error::ColumnDecode {
                        index: i.to_string(),
                        source: format!(
                            "a column of type {} is not read here",
                            raw.type_info().name()
                        )
                        .into(),
                    }),
                }
            })
            .collect::<Result<_, _>>()
            .map(Row)
    }
}

pub trait Exec: Send {
    /// Every row `sql` returns.
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>>;

    /// Run `sql`; the number of rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// PostgreSQL, where a statement can save a round trip that SQLite,
    /// in process, does not need (a data-changing CTE).
    fn postgres(&self) -> bool {
        false
    }
}

impl dyn Exec + '_ {
    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Cell>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn fetch_one(&mut self, sql: &str, args: Vec<Cell>) -> Result<Row, sqlx::Error> {
        self.fetch_optional(sql, args)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

fn bind<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    args: Vec<Cell>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for cell in args {
        query = match cell {
            Cell::Text(t) => query.bind(t),
            Cell::Int(i) => query.bind(i),
        };
    }
    query
}

impl Exec for AnyConnection {
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>> {
        Box::pin(async move {
            let rows = bind(sqlx::query(sql), args).fetch_all(self).await?;
            rows.iter().map(Row::from_any).collect()
        })
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            Ok(bind(sqlx::query(sql), args)
                .execute(self)
                .await?
                .rows_affected())
        })
    }

    fn postgres(&self) -> bool {
        self.backend_name() == "PostgreSQL"
    }
}

/// The SQLite writer's connection: every call completes before it returns
/// (the future is ready at once), on the writer's thread.
impl Exec for rusqlite::Connection {
    fn fetch_all<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<Vec<Row>, sqlx::Error>> {
        let result = (|| {
            let mut statement = prepare(self, sql, args)?;
            let columns = statement.column_count();
            let mut rows = statement.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let values = (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                            other => {
                                return Err(rusqlite::Error::InvalidColumnType(
                                    i,
                                    String::new(),
                                    other.data_type(),
                                ))
                            }
                        })
                    })
                    .collect::<rusqlite::Result<_>>()?;
                out.push(Row(values));
            }
            Ok(out)
        })();
        Box::pin(std::future::ready(result.map_err(sqlite_error)))
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        args: Vec<Cell>,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        let result = prepare(self, sql, args).and_then(|mut s| s.raw_execute());
        Box::pin(std::future::ready(
            result.map(|n| n as u64).map_err(sqlite_error),
        ))
    }
}

/// `sql` from the connection's statement cache, with `args` bound to its
/// `$1`, `$2`, … (by name: SQLite numbers `$n` parameters in order of
/// first appearance, not by their digits).
fn prepare<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: Vec<Cell>,
) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql)?;
    if statement.parameter_count() > args.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            args.len(),
            statement.parameter_count(),
        ));
    }
    for (i, cell) in args.into_iter().enumerate() {
        let Some(index) = statement.parameter_index(&format!("${}", i + 1))? else {
            continue;
        };
        match cell {
            Cell::Text(Some(t)) => statement.raw_bind_parameter(index, t)?,
            Cell::Int(Some(i)) => statement.raw_bind_parameter(index, i)?,
            Cell::Text(None) | Cell::Int(None) => {
                statement.raw_bind_parameter(index, rusqlite::types::Null)?
            }
        }
    }
    Ok(statement)
}

/// A SQLite error as sqlx reports one, so callers test it the same way
/// (`is_unique_violation`).
pub fn sqlite_error(err: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Database(Box::new(SqliteError(err)))
}

#[derive(Debug)]
pub struct SqliteError(rusqlite::Error);

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqliteError {}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        match &self.0 {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            _ => "SQLite error",
        }
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.0.sqlite_error().map(|e| e.extended_code) {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                ErrorKind::UniqueViolation
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Statement;

    #[test]
    fn placeholders_are_renumbered_after_others() {
        let s = Statement::new(
            "UPDATE t SET a = $3, b = $10 WHERE id = $1 AND u = $2",
            vec![],
        );
        assert_eq!(
            s.sql_after(4),
            "UPDATE t SET a = $7, b = $14 WHERE id = $5 AND u = $6"
        );
        assert_eq!(s.sql_after(0), s.sql);
    }
}
