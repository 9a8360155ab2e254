//! The documented shapes of request and response bodies. Request bodies are
//! parsed field by field (to list every bad field at once), so their schemas
//! are written here rather than derived from the parsing code; response
//! bodies are the types the handlers serialize.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::domain::earning::Platform;
use crate::domain::notification::NotificationView;

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    #[schema(required = true)]
    pub name: Option<String>,
    /// `user` or `admin`
    #[schema(pattern = "^(user|admin)$")]
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    /// JWT HS256; also set as the `earntrack_token` cookie.
    pub token: String,
    pub user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct PlatformList {
    pub items: Vec<Platform>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationItem {
    #[serde(flatten)]
    pub notification: NotificationView,
    pub read: bool,
    /// When it was read; null while unread.
    #[schema(required = true, format = DateTime)]
    pub read_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationList {
    pub items: Vec<NotificationItem>,
    /// The next page's `cursor`; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always true.
    pub accepted: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserConnections {
    pub user_id: Uuid,
    /// Open streams of this user on every server.
    pub connections: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Connections {
    /// Open streams in all.
    pub total: usize,
    pub users: Vec<UserConnections>,
}

#[derive(Serialize, ToSchema)]
pub struct Closed {
    /// Streams that were ended.
    pub closed: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PollEvent {
    /// The cursor after this event.
    pub id: String,
    pub event: String,
    pub timestamp: String,
    pub data: Value,
}

#[derive(Serialize, ToSchema)]
pub struct PollBody {
    pub events: Vec<PollEvent>,
    /// The last event's id, or `after` unchanged when nothing came.
    pub cursor: String,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` / `ready`, or why not ready.
    pub status: String,
}

// ---- request bodies (parsed field by field in the handlers) ----

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RegisterRequest {
    /// Stored trimmed and lower-cased.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Trimmed; 1 to 100 characters, no control characters but tab and
    /// newline; absent or null: none.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*\
         [^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    name: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoginRequest {
    /// Compared trimmed and lower-cased; validated as register validates it.
    #[schema(format = Email, max_length = 254)]
    email: String,
    #[schema(max_length = 1024)]
    password: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct PasswordChangeRequest {
    current_password: String,
    /// 8 to 1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    new_password: String,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewPlatformRequest {
    /// Trimmed; 1 to 100 characters, no control characters but tab and
    /// newline; unique per user.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*\
         [^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$"
    )]
    name: String,
    #[schema(pattern = "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")]
    color: String,
}

/// `userIds` or `broadcast: true`, plus the notification: `type`, `title`,
/// `message`, and optionally `duration` (ms, default 5000), `dismissible`
/// (default true) and `data` (free JSON, at most 16 KiB).
pub struct AdminNotificationRequest;

impl PartialSchema for AdminNotificationRequest {
    fn schema() -> RefOr<Schema> {
        // The notification fields, common to both shapes.
        let notification = || {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "type",
                    string().enum_values(Some(["success", "error", "info", "warning"])),
                )
                .required("type")
                .property("title", text(200))
                .required("title")
                .property("message", text(2000))
                .required("message")
                .property(
                    "duration",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                        .minimum(Some(0))
                        .maximum(Some(86_400_000))
                        .description(Some("milliseconds; absent or null: 5000")),
                )
                .property(
                    "dismissible",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
                        .description(Some("absent or null: true")),
                )
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::AnyValue)
                        .description(Some("free-form JSON, at most 16 KiB")),
                )
        };
        OneOfBuilder::new()
            .description(Some(
                "To named users (`userIds`) or to everyone (`broadcast: true`), not both.",
            ))
            .item(
                notification()
                    .title(Some("to users"))
                    .property("userIds", user_ids())
                    .required("userIds")
                    .property(
                        "broadcast",
                        ObjectBuilder::new()
                            .schema_type(Type::Boolean)
                            .enum_values(Some([false])),
                    ),
            )
            .item(
                notification()
                    .title(Some("to everyone"))
                    .property(
                        "broadcast",
                        ObjectBuilder::new()
                            .schema_type(Type::Boolean)
                            .enum_values(Some([true])),
                    )
                    .required("broadcast"),
            )
            .into()
    }
}

impl ToSchema for AdminNotificationRequest {}

/// One of `{"user":id}`, `{"users":[ids]}`, `{"room":name}`, `{"all":true}`.
pub struct AdminEventTarget;

impl PartialSchema for AdminEventTarget {
    fn schema() -> RefOr<Schema> {
        let only = |name: &str, schema: Schema| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .title(Some(name))
                .property(name, schema)
                .required(name)
                .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        };
        OneOfBuilder::new()
            .description(Some(
                "One of `{\"user\":id}`, `{\"users\":[ids]}`, `{\"room\":name}`, `{\"all\":true}`.",
            ))
            .item(only("user", uuid().into()))
            .item(only("users", user_ids().into()))
            .item(only(
                "room",
                string().pattern(Some("^[A-Za-z0-9:_.-]{1,64}$")).into(),
            ))
            .item(only(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true]))
                    .into(),
            ))
            .into()
    }
}

impl ToSchema for AdminEventTarget {}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// Free text as `domain::input::text` takes it: trimmed, 1 to `max`
/// characters, no control characters but tab and newline.
fn text(max: usize) -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
}

/// Not blank, no control characters but tab and newline (the `pattern` of
/// every free-text field above).
pub(super) const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*\
         [^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";

fn uuid() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

/// 1 to 1000 ids of existing users.
fn user_ids() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(uuid())
        .min_items(Some(1))
        .max_items(Some(1000))
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AdminEventRequest {
    target: AdminEventTarget,
    #[schema(pattern = "^[a-z0-9:_-]{1,64}$")]
    event: String,
    /// Free-form JSON, at most 64 KiB.
    #[schema(required = false)]
    data: Option<Value>,
}
