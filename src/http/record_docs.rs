//! The OpenAPI operations of the ledger's records (earnings, expenses,
//! invoices), made from one table per
//! record (its fields, its list filter), as their routes are made from one
//! generic handler set (`records`). Creation and patch bodies come from the
//! same field table: a required field must be present on creation and may
//! not be null in a patch; an optional one may be absent or null on
//! creation and is cleared by null in a patch.

use serde_json::{json, Map, Value};

struct Field {
    name: &'static str,
    schema: fn() -> Value,
    required: bool,
    /// The patch's schema when it differs (an invoice's status).
    patch: Option<fn() -> Value>,
}

pub struct RecordDoc {
    kind: &'static str,
    /// `Expense`: schema names and operation ids.
    title: &'static str,
    date: &'static str,
    filter: (&'static str, fn() -> Value, &'static str),
    fields: &'static [Field],
    /// A field unique per user (409 `conflict` when taken).
    unique: Option<&'static str>,
}

const fn field(name: &'static str, schema: fn() -> Value, required: bool) -> Field {
    Field {
        name,
        schema,
        required,
        patch: None,
    }
}

fn date() -> Value {
    json!({"type": "string", "format": "date", "description": "`YYYY-MM-DD`"})
}

fn money() -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 1_000_000_000, "multipleOf": 0.01,
           "description": "at most 2 decimals, ≥ 0"})
}

/// Free text as `domain::input::text` takes it (see `dto::TEXT_PATTERN`).
fn text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": super::dto::TEXT_PATTERN,
           "description": "trimmed; no control characters but tab and newline"})
}

fn platform() -> Value {
    json!({"type": "string", "format": "uuid", "description": "one of the caller's platforms"})
}

pub const EARNINGS: RecordDoc = RecordDoc {
    kind: "earnings",
    title: "Earning",
    date: "date",
    filter: (
        "platformId",
        || json!({"type": "string", "format": "uuid"}),
        "only this platform's earnings",
    ),
    fields: &[
        field("platformId", platform, true),
        field("date", date, true),
        field("hours", money, false),
        field("amount", money, true),
        field("notes", || text(2000), false),
    ],
    unique: None,
};

pub const EXPENSES: RecordDoc = RecordDoc {
    kind: "expenses",
    title: "Expense",
    date: "date",
    filter: ("category", || text(50), "only this category"),
    fields: &[
        field("date", date, true),
        field("amount", money, true),
        field("category", || text(50), true),
        field("platformId", platform, false),
        field("notes", || text(2000), false),
    ],
    unique: None,
};

pub const INVOICES: RecordDoc = RecordDoc {
    kind: "invoices",
    title: "Invoice",
    date: "issueDate",
    filter: (
        "status",
        || json!({"type": "string", "enum": ["draft", "sent", "paid", "void"]}),
        "only invoices in this status",
    ),
    fields: &[
        field("number", || text(32), true),
        field("client", || text(200), true),
        field("platformId", platform, false),
        field("issueDate", date, true),
        field(
            "dueDate",
            || {
                json!({"type": "string", "format": "date",
            "description": "`YYYY-MM-DD`, not before issueDate (422)"})
            },
            true,
        ),
        field("amount", money, true),
        Field {
            name: "status",
            schema: || json!({"type": "string", "enum": ["draft", "sent"], "description": "default draft"}),
            required: false,
            patch: Some(|| {
                json!({"type": "string", "enum": ["draft", "sent", "paid", "void"],
                "description": "draft → sent → paid, draft or sent → void; any other move is 422. \
                                A paid or void invoice changes only its notes."})
            }),
        },
        field("notes", || text(2000), false),
    ],
    unique: Some("number"),
};

fn error(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

fn body(schema: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
}

/// Every operation's answers beyond its success: the token's (`AuthErrors`)
/// and, with a body, the body's (`BodyErrors`).
fn errors(with_body: bool, extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut all = vec![
        ("401", "missing, invalid or expired token"),
        ("429", "rate limited"),
        ("503", "database unavailable"),
    ];
    if with_body {
        all.extend([
            ("400", "unparseable JSON or not an object"),
            ("413", "body too large"),
            ("415", "not a JSON content type"),
            ("422", "validation failed"),
        ]);
    }
    all.extend(extra);
    all.into_iter()
        .map(|(s, d)| (s.to_owned(), error(d)))
        .collect()
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

const FOREIGN_ORIGIN: (&str, &str) = ("403", "cookie-authenticated write from a foreign origin");
const NOT_FOUND: (&str, &str) = ("404", "missing or not yours");

impl RecordDoc {
    fn schemas(&self) -> [(String, Value); 3] {
        let mut new = Map::new();
        let mut patch = Map::new();
        let mut required = vec![];
        for f in self.fields {
            let schema = (f.schema)();
            if f.required {
                required.push(f.name);
                new.insert(f.name.into(), schema.clone());
            } else {
                new.insert(f.name.into(), nullable(schema.clone()));
            }
            let patched = f.patch.map_or(schema, |p| p());
            let patched = if f.required {
                patched
            } else {
                nullable(patched)
            };
            patch.insert(f.name.into(), patched);
        }
        let t = self.title;
        [
            (
                format!("New{t}Request"),
                json!({"type": "object", "properties": new, "required": required}),
            ),
            (
                format!("{t}PatchRequest"),
                json!({"type": "object", "properties": patch,
                       "description": "absent fields stay; null clears an optional field"}),
            ),
            (
                format!("{t}List"),
                json!({"type": "object", "required": ["items", "nextCursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{t}View")}},
                    "nextCursor": {"type": ["string", "null"], "description": "the next page's `cursor`; null on the last page"},
                }}),
            ),
        ]
    }

    fn paths(&self) -> [(String, Value); 2] {
        let (kind, t) = (self.kind, self.title);
        let tag = json!([kind]);
        let id = json!([{"name": "id", "in": "path", "required": true, "description": format!("{} id", t.to_lowercase()),
                         "schema": {"type": "string", "format": "uuid"}}]);
        let (filter, filter_schema, filter_doc) = self.filter;
        let mut list_answers = errors(false, &[("400", "bad query")]);
        list_answers.insert(
            "200".into(),
            json!({
                "description": "newest first; header EarnTrack-Event-Cursor",
                "headers": {"EarnTrack-Event-Cursor": {"schema": {"type": "string"},
                            "description": "stream position read with this data"}},
                "content": body(&format!("{t}List")),
            }),
        );
        let taken = self.unique.map(|f| format!("{f} taken"));
        let retry = "concurrent idempotent retry".to_owned();
        let create_conflict = taken
            .as_ref()
            .map_or(retry.clone(), |t| format!("{t}, or {retry}"));
        let mut create_answers = errors(true, &[FOREIGN_ORIGIN, ("409", &create_conflict)]);
        create_answers.insert("201".into(), json!({
            "description": format!("created; publishes {kind}:new then a notification"),
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string"},
                "description": "`true` on the stored answer to an earlier request with the same Idempotency-Key"}},
            "content": body(&format!("{t}View")),
        }));
        let mut show_answers = errors(false, &[NOT_FOUND]);
        show_answers.insert(
            "200".into(),
            json!({"description": t, "content": body(&format!("{t}View"))}),
        );
        let mut update_answers = errors(true, &[NOT_FOUND, FOREIGN_ORIGIN]);
        if let Some(taken) = &taken {
            update_answers.insert("409".into(), error(taken));
        }
        update_answers.insert("200".into(), json!({
            "description": format!("updated; publishes {kind}:updated then a notification when something changed"),
            "content": body(&format!("{t}View")),
        }));
        let mut delete_answers = errors(false, &[NOT_FOUND, FOREIGN_ORIGIN]);
        delete_answers.insert(
            "204".into(),
            json!({
                "description": format!("deleted; publishes {kind}:deleted then a notification"),
            }),
        );
        let request = |schema: String| json!({"required": true, "content": body(&schema)});
        [
            (
                format!("/api/{kind}"),
                json!({
                    "get": {"tags": tag, "operationId": format!("list{t}s"), "parameters": [
                        query("from", date(), &format!("earliest {}, YYYY-MM-DD", self.date)),
                        query("to", date(), &format!("latest {}, YYYY-MM-DD", self.date)),
                        query(filter, filter_schema(), filter_doc),
                        query("limit", json!({"type": "integer", "minimum": 1, "maximum": 100}), "page size; default 50"),
                        query("cursor", json!({"type": "string"}), "`nextCursor` of the previous page"),
                    ], "responses": list_answers},
                    "post": {"tags": tag, "operationId": format!("create{t}"), "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": "a retry with the same key returns the first response",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }], "requestBody": request(format!("New{t}Request")), "responses": create_answers},
                }),
            ),
            (
                format!("/api/{kind}/{{id}}"),
                json!({
                    "get": {"tags": tag, "operationId": format!("get{t}"), "parameters": id, "responses": show_answers},
                    "patch": {"tags": tag, "operationId": format!("update{t}"), "parameters": id,
                              "requestBody": request(format!("{t}PatchRequest")), "responses": update_answers},
                    "delete": {"tags": tag, "operationId": format!("delete{t}"), "parameters": id,
                               "responses": delete_answers},
                }),
            ),
        ]
    }
}

fn nullable(mut schema: Value) -> Value {
    if let Some(t) = schema.get("type").cloned() {
        schema["type"] = json!([t, "null"]);
    }
    schema
}

/// Adds the records' operations, body schemas and tags to `doc`.
pub fn add(doc: &mut Value, records: &[RecordDoc]) {
    for r in records {
        for (path, item) in r.paths() {
            doc["paths"][path] = item;
        }
        for (name, schema) in r.schemas() {
            doc["components"]["schemas"][name] = schema;
        }
        if let Some(tags) = doc["tags"].as_array_mut() {
            if !tags.iter().any(|t| t["name"] == r.kind) {
                tags.push(json!({"name": r.kind}));
            }
        }
    }
}
