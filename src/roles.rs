//! Who is admin: `earntrack admin grant|revoke <email>` against the
//! database, and `EARNTRACK_ADMIN_EMAILS` applied the same way at start-up
//! to users that already exist. The role lives on the user; every server
//! reads it per request and learns of a change within `jobs::ACCESS_POLL`.

use crate::config::AdminAction;
use crate::db::users::{self, RoleChange};
use crate::db::Db;
use crate::domain::role::Role;
use crate::domain::time::now_ms;

/// Give `email` the role `role`; what changed, for the operator.
pub async fn set_role(db: &Db, email: &str, role: Role) -> anyhow::Result<RoleChange> {
    let mut conn = db.writer().acquire().await?;
    let change = users::set_role(&mut conn, email, role, now_ms()).await?;
    if let RoleChange::Changed(id, access) = change {
        // This process's own cache (a server embedding the change, as tests
        // do) sees it at once; other processes poll for it.
        db.known_users.update(id, access);
    }
    Ok(change)
}

/// `earntrack admin <action>`: a line for the operator, or an error (a
/// non-zero exit) when there is no such user.
pub async fn run(db: &Db, action: &AdminAction) -> anyhow::Result<String> {
    let (email, role) = match action {
        AdminAction::Grant { email } => (email, Role::Admin),
        AdminAction::Revoke { email } => (email, Role::User),
    };
    match set_role(db, email, role).await? {
        RoleChange::Changed(id, _) => Ok(format!("{email} ({id}) is now {role}")),
        RoleChange::Unchanged(id) => Ok(format!("{email} ({id}) was already {role}")),
        RoleChange::NoSuchUser => anyhow::bail!("no user with email {email:?}: register first"),
    }
}

/// `EARNTRACK_ADMIN_EMAILS` at start-up: each listed user that exists is
/// made admin; a listed email nobody registered is only logged, and
/// registering it later gives no admin.
pub async fn grant_listed(db: &Db, emails: &[String]) -> anyhow::Result<()> {
    for email in emails.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        match set_role(db, email, Role::Admin).await? {
            RoleChange::Changed(id, _) => {
                tracing::info!(user_id = %id, "admin granted from EARNTRACK_ADMIN_EMAILS")
            }
            RoleChange::Unchanged(_) => {}
            RoleChange::NoSuchUser => tracing::warn!(
                "an EARNTRACK_ADMIN_EMAILS entry is not a registered user: nothing granted \
                 (register, then restart or run `earntrack admin grant`)"
            ),
        }
    }
    Ok(())
}
