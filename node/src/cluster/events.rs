//! Kubernetes Events: what happened to a volume, published on its
//! `RaidVolume` and, when it backs a claim, on its PV and PVC, and the last
//! few kept for the status's `lastEvents`.

use super::{lock, now, Context, Error};
use crate::health::condition as health;
use dmraid_api::crd::{RaidVolumeStatus, VolumeEvent};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};

/// Events kept in `status.lastEvents`.
const KEEP_EVENTS: usize = 10;

impl Context {
    pub(super) fn events_of(&self, id: &str, prev: Option<&RaidVolumeStatus>) -> Vec<VolumeEvent> {
        let mut all = lock(&self.events);
        let q = all.entry(id.to_string()).or_insert_with(|| {
            prev.map(|p| p.last_events.iter().cloned().collect())
                .unwrap_or_default()
        });
        q.iter().cloned().collect()
    }

    /// Record an event on the RaidVolume and, when it backs a claim, on its PV and PVC.
    pub async fn record(&self, id: &str, e: &health::HealthEvent) -> Result<(), Error> {
        {
            let mut all = lock(&self.events);
            let q = all.entry(id.to_string()).or_default();
            q.push_back(VolumeEvent {
                time: now(),
                type_: if e.warning { "Warning" } else { "Normal" }.into(),
                reason: e.reason.as_str().into(),
                message: e.message.clone(),
            });
            while q.len() > KEEP_EVENTS {
                q.pop_front();
            }
        }
        let Some(obj) = self.volumes().get_opt(id).await? else {
            return Ok(());
        };
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.as_str().into(),
            note: Some(format!("volume {id} on node {}: {}", self.node, e.message)),
            action: "Health".into(),
            secondary: None,
        };
        let mut targets: Vec<ObjectReference> = vec![obj.object_ref(&())];
        if let Some(claim) = &obj.spec.claim {
            let pvcs: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &claim.namespace);
            match pvcs.get_opt(&claim.name).await {
                Ok(Some(pvc)) => targets.push(pvc.object_ref(&())),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(volume = %id, error = %err, "cannot read the claim for its events")
                }
            }
            let pv_name = if claim.pv.is_empty() {
                obj.spec.csi_name.clone()
            } else {
                claim.pv.clone()
            };
            let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> =
                Api::all(self.client.clone());
            if let Ok(Some(pv)) = pvs.get_opt(&pv_name).await {
                targets.push(pv.object_ref(&()));
            }
        }
        for t in targets {
            if let Err(err) = self.recorder.publish(&event, &t).await {
                tracing::warn!(volume = %id, error = %err, kind = ?t.kind, "event not recorded");
            }
        }
        Ok(())
    }
}
