//! Which Ingresses are ours (DESIGN.md "Contracts").
//!
//! In order: `spec.ingressClassName` names an IngressClass whose `spec.controller` is ours, or
//! equals `--ingress-class`; else the legacy `kubernetes.io/ingress.class` annotation equals
//! `--ingress-class`; else (no class at all) one of our IngressClasses is marked default.

use k8s_openapi::api::networking::v1::Ingress;

use super::BuildOptions;
use crate::snapshot::Snapshot;

const LEGACY_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

pub fn is_ours(ing: &Ingress, snapshot: &Snapshot, opts: &BuildOptions) -> bool {
    let class_is_ours = |name: &str| {
        name == opts.ingress_class
            || snapshot
                .ingress_classes
                .get(name)
                .and_then(|c| c.spec.as_ref())
                .is_some_and(|s| s.controller.as_deref() == Some(opts.controller_name.as_str()))
    };
    if let Some(name) = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
        return class_is_ours(name);
    }
    if let Some(legacy) = ing.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_ANNOTATION)) {
        return *legacy == opts.ingress_class;
    }
    snapshot.ingress_classes.iter().any(|(name, class)| {
        class_is_ours(name)
            && class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
    })
}
