//! Serving hosts recorded in the store, so that no change cuts off a live deployment.

use time::OffsetDateTime;

use super::{Deployment, Store, StoreError, backend};

/// A deployment whose heartbeat is older than this is considered gone.
pub const DEPLOYMENT_TTL: time::Duration = time::Duration::seconds(15);

pub(super) fn deployment_cutoff() -> i64 {
    (OffsetDateTime::now_utc() - DEPLOYMENT_TTL).unix_timestamp()
}

impl Store {
    /// Records (or replaces) a serving host.
    pub fn register_deployment(&mut self, deployment: &Deployment) -> Result<(), StoreError> {
        self.write("register a deployment", |q| q.put_deployment(deployment, OffsetDateTime::now_utc().unix_timestamp()))
    }

    /// Refreshes a deployment's heartbeat and the certificate names it uses.
    pub fn heartbeat(&mut self, id: &str, certificates: &[String]) -> Result<(), StoreError> {
        let names = backend::names_json(certificates);
        self.write("record a heartbeat", |q| q.heartbeat(id, OffsetDateTime::now_utc().unix_timestamp(), &names))
    }

    /// Removes a deployment (its host stopped).
    pub fn remove_deployment(&mut self, id: &str) -> Result<(), StoreError> {
        self.write("remove a deployment", |q| q.remove_deployment(id))
    }

    /// Deployments whose heartbeat is recent.
    pub fn live_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.read(|q| q.live_deployments(deployment_cutoff()))
    }
}
