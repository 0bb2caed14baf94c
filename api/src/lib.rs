//! The dm-raid model shared by the controller and the node: StorageClass
//! parameters, the raid table spec and its rendering, the status parser and
//! health model, capacity arithmetic and the sync translation. Pure code: no
//! I/O of any kind, so every rule here is tested exhaustively.

pub mod units;
