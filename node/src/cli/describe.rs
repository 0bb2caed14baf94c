//! Words for people: how CSI enums and states are printed by the CLI.

use dmraid_proto::csi::plugin_capability::{service, volume_expansion, Type};

/// A plugin capability as a short phrase.
pub fn plugin_capability(t: &Type) -> String {
    match t {
        Type::Service(s) => match service::Type::try_from(s.r#type) {
            Ok(v) => format!("service {}", v.as_str_name()),
            Err(_) => format!("service #{}", s.r#type),
        },
        Type::VolumeExpansion(e) => match volume_expansion::Type::try_from(e.r#type) {
            Ok(v) => format!("volume expansion {}", v.as_str_name()),
            Err(_) => format!("volume expansion #{}", e.r#type),
        },
    }
}
