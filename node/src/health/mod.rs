//! What the node tells about its arrays and how it acts on them between
//! requests: the health monitor's rounds (`monitor`), the words of a
//! volume's condition (`condition`), the Prometheus metrics (`metrics`),
//! the rebuild rate policy (`rate`) and operator requests passed through
//! the state directory (`requests`).

pub mod condition;
pub mod metrics;
pub mod monitor;
pub mod rate;
pub mod requests;
