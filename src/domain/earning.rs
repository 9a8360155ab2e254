//! Platforms and earnings: their wire shapes, creation input and partial
//! updates with the list of what changed.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::input::FieldErrors;
use super::input::{self, set, Fields};
use super::record::{record_fields, Change, Notice, Record};
use super::time::rfc3339;
use super::Fixed2;

pub const NOTES_MAX: usize = 2000;
pub const NAME_MAX: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Platform {
    pub id: Uuid,
    pub name: String,
    pub color: String,
}

pub struct NewPlatform {
    pub name: String,
    pub color: String,
}

impl NewPlatform {
    pub fn parse(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut f = Fields::new(object);
        let name = f.required("name", input::text(NAME_MAX));
        let color = f.required("color", color);
        f.finish()?;
        Ok(NewPlatform {
            name: name.unwrap_or_default(),
            color: color.unwrap_or_default(),
        })
    }
}

/// `#rgb` or `#rrggbb`, kept as given (lower-cased).
fn color(v: &Value) -> Result<String, &'static str> {
    let s = v.as_str().ok_or("must be a string like #1f8b4c")?;
    let hex = s.strip_prefix('#').unwrap_or("");
    if (hex.len() == 6 || hex.len() == 3) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("must be a hex color like #1f8b4c")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Earning {
    pub id: Uuid,
    pub user_id: Uuid,
    pub platform: Platform,
    pub date: String,
    pub hours: Option<Fixed2>,
    pub amount: Fixed2,
    pub notes: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Earning {
    /// amount / hours rounded to cents; `None` when hours is absent or zero.
    pub fn hourly_rate(&self) -> Option<Fixed2> {
        self.hours.and_then(|h| self.amount.div_round(h))
    }

    /// The wire shape, as REST answers and `earnings:new` carry it.
    pub fn view(&self) -> EarningView {
        EarningView {
            id: self.id,
            user_id: self.user_id,
            platform_id: self.platform.id,
            platform: self.platform.clone(),
            date: self.date.clone(),
            hours: self.hours,
            amount: self.amount,
            hourly_rate: self.hourly_rate(),
            notes: self.notes.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).expect("an earning always serializes")
    }
}

/// An earning on the wire (REST bodies and `earnings:new`).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EarningView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub platform_id: Uuid,
    pub platform: Platform,
    /// `YYYY-MM-DD`
    #[schema(format = Date)]
    pub date: String,
    #[schema(value_type = Option<f64>)]
    pub hours: Option<Fixed2>,
    #[schema(value_type = f64)]
    pub amount: Fixed2,
    /// amount / hours rounded half away from zero to cents; null when hours
    /// is null or 0.
    #[serde(rename = "hourly_rate")]
    #[schema(value_type = Option<f64>)]
    pub hourly_rate: Option<Fixed2>,
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone)]
pub struct NewEarning {
    pub platform_id: Uuid,
    pub date: String,
    pub hours: Option<Fixed2>,
    pub amount: Fixed2,
    pub notes: Option<String>,
}

impl NewEarning {
    pub fn parse(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut f = Fields::new(object);
        let platform_id = f.required("platformId", input::uuid);
        let date = f.required("date", input::date);
        let hours = f.optional("hours", input::fixed2);
        let amount = f.required("amount", input::fixed2);
        let notes = f.optional("notes", input::text(NOTES_MAX));
        f.finish()?;
        match (platform_id, date, amount) {
            (Some(platform_id), Some(date), Some(amount)) => Ok(NewEarning {
                platform_id,
                date,
                hours,
                amount,
                notes,
            }),
            _ => unreachable!("finish() reports every missing required field"),
        }
    }
}

/// A PATCH body: absent fields stay, `null` clears an optional one.
#[derive(Clone, Debug, Default)]
pub struct EarningPatch {
    pub platform_id: Option<Uuid>,
    pub date: Option<String>,
    pub hours: Option<Option<Fixed2>>,
    pub amount: Option<Fixed2>,
    pub notes: Option<Option<String>>,
}

impl EarningPatch {
    pub fn parse(object: &Map<String, Value>) -> Result<Self, FieldErrors> {
        let mut f = Fields::new(object);
        let patch = EarningPatch {
            platform_id: f.settable("platformId", input::uuid),
            date: f.settable("date", input::date),
            amount: f.settable("amount", input::fixed2),
            hours: f.patch("hours", input::fixed2).into_option(),
            notes: f.patch("notes", input::text(NOTES_MAX)).into_option(),
        };
        f.finish()?;
        Ok(patch)
    }
}

impl Record for Earning {
    const KIND: &'static str = "earnings";
    const ID_KEY: &'static str = "earningId";
    const FILTER: Option<&'static str> = Some("platformId");
    type New = NewEarning;
    type Patch = EarningPatch;
    type View = EarningView;

    record_fields!();

    fn sort_key(&self) -> (&str, i64) {
        (&self.date, self.created_at)
    }

    fn view(&self) -> EarningView {
        Earning::view(self)
    }

    fn parse_new(body: &Map<String, Value>) -> Result<NewEarning, FieldErrors> {
        NewEarning::parse(body)
    }

    fn parse_patch(body: &Map<String, Value>) -> Result<EarningPatch, FieldErrors> {
        EarningPatch::parse(body)
    }

    fn parse_filter(value: &str) -> Result<String, &'static str> {
        Uuid::parse_str(value)
            .map(|id| id.to_string())
            .map_err(|_| "platformId must be a UUID")
    }

    fn new_platform(new: &NewEarning) -> Option<Uuid> {
        Some(new.platform_id)
    }

    fn patch_platform(patch: &EarningPatch) -> Option<Option<Uuid>> {
        patch.platform_id.map(Some)
    }

    fn create(new: NewEarning, user: Uuid, platform: Option<Platform>, now_ms: i64) -> Earning {
        Earning {
            id: super::new_id(),
            user_id: user,
            // `new_platform` always names one, and the route resolved it.
            platform: platform.expect("an earning's platform is resolved before it is created"),
            date: new.date,
            hours: new.hours,
            amount: new.amount,
            notes: new.notes,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }

    /// `platform` is the resolved new platform when the patch names one.
    fn patched(
        &self,
        p: &EarningPatch,
        platform: Option<Platform>,
        _now_ms: i64,
    ) -> Result<Earning, FieldErrors> {
        let mut new = self.clone();
        if let Some(platform) = platform {
            new.platform = platform;
        }
        set(&mut new.date, &p.date);
        set(&mut new.hours, &p.hours);
        set(&mut new.amount, &p.amount);
        set(&mut new.notes, &p.notes);
        Ok(new)
    }

    fn notice(&self, change: Change, _before: Option<&Earning>) -> Notice {
        let (amount, platform) = (self.amount.dollars(), &self.platform.name);
        match change {
            Change::Created => Notice::success(
                "Earning Created",
                format!("New earning of {amount} added to {platform}"),
            ),
            Change::Updated => Notice::success(
                "Earning Updated",
                format!("Earning of {amount} on {platform} updated"),
            ),
            Change::Deleted => Notice::success(
                "Earning Deleted",
                format!("Earning of {amount} on {platform} deleted"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::record::changes;
    use serde_json::json;

    fn earning() -> Earning {
        Earning {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            platform: Platform {
                id: Uuid::nil(),
                name: "Upwork".into(),
                color: "#14a800".into(),
            },
            date: "2024-01-15".into(),
            hours: Some(Fixed2::from_hundredths(200)),
            amount: Fixed2::from_hundredths(10_000),
            notes: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn new_earning_lists_every_bad_field() {
        let body = json!({"platformId": "x", "date": "2024-02-30", "amount": 1.005, "hours": -1});
        let errors = NewEarning::parse(body.as_object().unwrap()).err().unwrap();
        let keys: Vec<_> = errors.keys().cloned().collect();
        assert_eq!(keys, ["amount", "date", "hours", "platformId"]);
    }

    #[test]
    fn patch_reports_only_changed_fields_with_derived_rate() {
        let patch = EarningPatch::parse(json!({"amount": 150, "notes": null}).as_object().unwrap())
            .unwrap();
        let new = earning().patched(&patch, None, 5).unwrap();
        assert_eq!(
            changes(&earning(), &new),
            json!({"amount": 150, "hourly_rate": 75})
                .as_object()
                .unwrap()
                .clone()
        );
        let same = EarningPatch::parse(json!({"amount": 100}).as_object().unwrap()).unwrap();
        assert!(changes(&earning(), &earning().patched(&same, None, 9).unwrap()).is_empty());
    }

    #[test]
    fn clearing_hours_nulls_the_rate() {
        let patch = EarningPatch::parse(json!({"hours": null}).as_object().unwrap()).unwrap();
        let new = earning().patched(&patch, None, 5).unwrap();
        let changes = changes(&earning(), &new);
        assert_eq!(new.hourly_rate(), None);
        assert_eq!(changes["hours"], Value::Null);
        assert_eq!(changes["hourly_rate"], Value::Null);
    }
}
