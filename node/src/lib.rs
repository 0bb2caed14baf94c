//! The node side of dmraid-csi: disk claiming and labels, the allocator, the
//! array engine over device-mapper, the CSI Node service, the standalone
//! driver and the operator CLI. Every touch of the kernel goes through a
//! small trait so the engine's decisions are unit-testable.

pub mod allocator;
pub mod cli;
pub mod cluster;
pub mod csi_client;
pub mod csi_controller;
pub mod csi_node;
pub mod describe;
pub mod disks;
pub mod dm;
pub mod engine;
pub mod engine_cli;
pub mod error;
pub mod health;
pub mod labels;
pub mod lock;
pub mod metrics;
pub mod monitor;
pub mod mount;
pub mod paths;
pub mod rate;
pub mod requests;
pub mod signature;
pub mod state_dir;
