//! The CSI services the node plugin serves: Node (`node`) and, in the
//! standalone driver, Controller (`controller`).

pub mod controller;
pub mod node;
