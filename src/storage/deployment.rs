//! This deployment's identity (`provd_deployment`): one UUID made when the database was
//! first migrated, so every node on the database reads the same one.
//!
//! provd tags the JetStream consumers it creates with it, and refuses to start against
//! streams whose consumers carry another deployment's id (see `adapters::jetstream`).

use uuid::Uuid;

use super::codec::Id;
use super::{Sql, Store, run};
use crate::adapters::AdapterError;

const DEPLOYMENT_ID: Sql = Sql::both("SELECT id FROM provd_deployment");

impl Store {
    /// This deployment's id, the same on every node of the database.
    pub async fn deployment_id(&self) -> Result<Uuid, AdapterError> {
        let id: Option<Id> = run!(scalar fetch_optional, self.read(), DEPLOYMENT_ID)?;
        id.map(|id| id.0).ok_or_else(|| {
            // The migration inserts the row; only a hand-made change removes it.
            AdapterError::Corrupt(
                "the table provd_deployment has no row: this database has lost its \
                 deployment id (restore the row; a new id would make this deployment's own \
                 JetStream consumers look foreign)"
                    .into(),
            )
        })
    }
}
