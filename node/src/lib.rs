//! The node side of dmraid-csi: disk claiming and labels, the allocator, the
//! array engine over device-mapper, the CSI Node service, the standalone
//! driver and the operator CLI. Every touch of the kernel goes through a
//! small trait so the engine's decisions are unit-testable.

pub mod cli;
pub mod cluster;
pub mod csi;
pub mod engine;
pub mod error;
pub mod health;
pub mod kernel;
pub mod lock;
pub mod state_dir;
